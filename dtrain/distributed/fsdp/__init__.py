"""``dtrain.distributed.fsdp``: torch.distributed.fsdp's FSDP2 API, ``fully_shard`` (parameters,
gradients and optimizer state sharded across the ranks, ZeRO-3) and its MixedPrecisionPolicy."""
from .fully_shard import FSDPModule, fully_shard  # noqa: F401
from .mixed_precision import MixedPrecisionPolicy  # noqa: F401
