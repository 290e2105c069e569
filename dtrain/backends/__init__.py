"""``dtrain.backends``: torch.backends' switches, so scripts that set them run unchanged.

``cudnn`` (benchmark, deterministic, enabled, allow_tf32), ``cuda.matmul`` (allow_tf32, ...),
``mps`` (never available) and ``cpu``. dtrain has no cuDNN autotuner and no TF32 switch of its
own: the flags are recorded, type-checked as PyTorch does, and readable; CuPy decides its
kernels (see each module). Also the float32 matmul precision of ``dtrain.set_float32_matmul_precision``.

Example:
    >>> dtrain.backends.cudnn.benchmark = True
    >>> dtrain.backends.cuda.matmul.allow_tf32
    False
"""
from . import cpu, cuda, cudnn, mps  # noqa: F401
from .flags import PRECISIONS

_precision = ["highest"]


def set_float32_matmul_precision(precision):
    """Record the internal precision of float32 matrix products, as ``torch.set_float32_matmul_precision``.

    Args:
        precision: "highest", "high" or "medium"; as in PyTorch, "high" and "medium" also set
            ``backends.cuda.matmul.allow_tf32``, and any other string warns and changes nothing.

    Example:
        >>> dtrain.set_float32_matmul_precision("high")
    """
    if not isinstance(precision, str):
        raise RuntimeError(f"set_float32_matmul_precision expects a str, but got {type(precision).__name__}")
    if precision not in PRECISIONS:
        import warnings
        warnings.warn(f"{precision} is not one of 'highest', 'high', or 'medium'; the current "
                      f"set_float32_matmul_precision call has no effect.", stacklevel=2)
        return
    _precision[0] = precision
    cuda.matmul.allow_tf32 = precision != "highest"


def get_float32_matmul_precision():
    """The precision set by :func:`set_float32_matmul_precision` (default "highest"); as in
    PyTorch, setting ``backends.cuda.matmul.allow_tf32`` changes it ("high" / "highest")."""
    if not cuda.matmul.allow_tf32:
        return "highest"
    return "high" if _precision[0] == "highest" else _precision[0]
