"""Data loading, as ``torch.utils.data``: datasets, samplers, collation and the DataLoader.

``from dtrain.data import DataLoader, Dataset, TensorDataset`` replaces the same names
from ``torch.utils.data``; ``dtrain.data.datasets`` has real and synthetic datasets.
"""
from . import datasets  # noqa: F401
from .collate import default_collate, default_convert  # noqa: F401
from .dataloader import DataLoader, WorkerInfo, get_worker_info  # noqa: F401
from .dataset import (ChainDataset, ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset,  # noqa: F401
                      random_split)
from .sampler import (BatchSampler, DistributedSampler, RandomSampler, Sampler, SequentialSampler,  # noqa: F401
                      SubsetRandomSampler)
