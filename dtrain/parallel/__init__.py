"""dtrain.parallel: data parallelism, as ``torch.nn.parallel``.

``DistributedDataParallel`` (one process per device, gradients all-reduced in buckets during
backward), ``DataParallel`` (one process, several devices), ``SyncBatchNorm``, and the
DDP communication hooks in :mod:`dtrain.parallel.comm_hooks`.
"""
from . import comm_hooks  # noqa: F401
from .data_parallel import DataParallel  # noqa: F401
from .distributed import DistributedDataParallel  # noqa: F401
from .sync_batchnorm import SyncBatchNorm  # noqa: F401
