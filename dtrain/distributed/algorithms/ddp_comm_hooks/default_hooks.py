"""``torch.distributed.algorithms.ddp_comm_hooks.default_hooks``: the built-in hooks of
:mod:`dtrain.parallel.comm_hooks` (the same objects), called as ``hook(process_group, bucket)``.

Example:
    >>> from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks as default
    >>> ddp.register_comm_hook(None, default.fp16_compress_hook)
"""
from ....parallel.comm_hooks import allreduce_hook, bf16_compress_hook, fp16_compress_hook  # noqa: F401

__all__ = ["allreduce_hook", "fp16_compress_hook", "bf16_compress_hook"]
