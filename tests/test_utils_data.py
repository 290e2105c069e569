"""dtrain.utils.data is torch.utils.data's path to dtrain.data: the same objects, no copies."""
import subprocess
import sys

import pytest

import dtrain
import dtrain.data as data
import dtrain.utils.data as utils_data

NAMES = ["DataLoader", "Dataset", "IterableDataset", "TensorDataset", "ConcatDataset", "ChainDataset", "Subset",
         "random_split", "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "BatchSampler",
         "DistributedSampler", "default_collate", "default_convert", "get_worker_info", "WorkerInfo"]


@pytest.mark.parametrize("name", NAMES)
def test_names_are_dtrain_data_objects(name):
    """Every name of torch.utils.data that dtrain has is dtrain.data's object itself."""
    assert getattr(utils_data, name) is getattr(data, name)


def test_torch_import_forms():
    """The import lines of PyTorch scripts, renamed, give dtrain.data's objects:
    from .utils.data.distributed, .utils.data.dataloader, .utils.data.sampler, .utils.data.dataset."""
    from dtrain.utils.data.dataloader import DataLoader, default_collate
    from dtrain.utils.data.dataset import Dataset
    from dtrain.utils.data.distributed import DistributedSampler
    from dtrain.utils.data.sampler import RandomSampler
    assert (DataLoader, default_collate, Dataset, DistributedSampler, RandomSampler) == (
        data.DataLoader, data.default_collate, data.Dataset, data.DistributedSampler, data.RandomSampler)
    assert utils_data.distributed.DistributedSampler is data.DistributedSampler


def test_reachable_after_plain_import():
    """After `import dtrain` alone, dtrain.utils.data.DataLoader and
    dtrain.utils.data.distributed.DistributedSampler are attribute paths."""
    code = ("import dtrain; assert dtrain.utils.data.DataLoader is dtrain.data.DataLoader; "
            "assert dtrain.utils.data.distributed.DistributedSampler is dtrain.data.DistributedSampler")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_loader_through_the_alias_path():
    """A DataLoader with a DistributedSampler built from the torch-path names reads rank 1's share."""
    ds = utils_data.TensorDataset(dtrain.arange(6))
    sampler = dtrain.utils.data.distributed.DistributedSampler(ds, num_replicas=2, rank=1, shuffle=False)
    batches = [b.tolist() for (b,) in dtrain.utils.data.DataLoader(ds, batch_size=2, sampler=sampler)]
    assert batches == [[1, 3], [5]]
