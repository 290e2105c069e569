"""Argument checks shared by the nn ops: activations, losses, dropout, normalization."""
from ..dtypes import is_floating
from ..tensor import Tensor


def check_float(x, op):
    """TypeError unless ``x`` is a Tensor, RuntimeError unless it is floating-point (``op`` names the caller)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if not is_floating(x.dtype):
        raise RuntimeError(f"{op}: expected a floating-point input, got dtype {x.dtype}; convert it with .float()")
