"""``dtrain.nn.parallel``: torch.nn.parallel's names for dtrain.parallel's wrappers."""
from ..parallel import DataParallel, DistributedDataParallel  # noqa: F401
