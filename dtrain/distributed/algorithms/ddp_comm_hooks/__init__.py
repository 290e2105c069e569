"""DDP communication hooks at ``torch.distributed.algorithms.ddp_comm_hooks``' path.

* :mod:`.default_hooks` (also as ``default``): ``allreduce_hook``, ``fp16_compress_hook``,
  ``bf16_compress_hook`` (the objects of :mod:`dtrain.parallel.comm_hooks`),
  ``fp16_compress_wrapper(hook)`` and ``bf16_compress_wrapper(hook)`` (see its docstring for
  what is emulated);
* :mod:`.powerSGD_hook` (also as ``powerSGD``): ``PowerSGDState``, ``powerSGD_hook``,
  ``batched_powerSGD_hook``.

Example:
    >>> from dtrain.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD
    >>> ddp.register_comm_hook(powerSGD.PowerSGDState(None, start_powerSGD_iter=10), powerSGD.powerSGD_hook)
"""
from . import default_hooks as default  # noqa: F401
from . import powerSGD_hook as powerSGD  # noqa: F401
