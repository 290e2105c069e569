"""``torch.utils.data.distributed``'s path: :class:`dtrain.data.DistributedSampler`."""
from ...data.sampler import DistributedSampler  # noqa: F401
