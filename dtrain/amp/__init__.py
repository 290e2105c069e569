"""``dtrain.amp``: automatic mixed precision, as ``torch.amp``.

:class:`autocast` runs the matrix products (linear, matmul, conv, attention) in float16 or
bfloat16 and keeps losses (and on CUDA softmax, norms and reductions) in float32, by PyTorch's
op lists (``dtrain/tensor/ops/autocast.py``); :class:`GradScaler` scales the loss so float16
gradients do not underflow, and skips the steps whose gradients hold an inf or a NaN.

Example:
    >>> scaler = dtrain.amp.GradScaler("cuda")
    >>> with dtrain.autocast("cuda", dtype=dtrain.float16):
    ...     loss = loss_fn(model(x), y)
    >>> scaler.scale(loss).backward()
    >>> scaler.step(optimizer)
    >>> scaler.update()
"""
from .autocast_mode import (autocast, get_autocast_dtype, is_autocast_available, is_autocast_cache_enabled,  # noqa: F401
                            is_autocast_enabled)
from . import cuda_amp  # noqa: F401  (dtrain.cuda.amp, wired by dtrain/__init__.py)
from .bfloat16 import bfloat16_dtype  # noqa: F401
from .grad_scaler import GradScaler, OptState  # noqa: F401
