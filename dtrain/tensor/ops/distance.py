"""What is built on the vector p-norm along one dim (reduce.py's vector_norm): normalize,
pairwise_distance and cosine_similarity (as torch.nn.functional)."""
import math

from .. import dtypes
from ..backend import broadcast_shapes
from ..grad_mode import no_grad
from ..tensor import Tensor, _check_dim
from .autocast import autocast_call, open_regions, thread_state
from .elementwise import clamp
from .reduce import vector_norm
from .shape import broadcast_to


def _norm_along(x, p, dim, keepdim, op):
    """The p-norm of ``x`` along the one dim ``dim``, with errors that name ``op``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if not dtypes.is_floating(x.dtype):
        x = x.to(dtypes.get_default_dtype())  # integer inputs give the default float dtype, as PyTorch
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p):
        raise ValueError(f"{op}: p must be a number (or inf), got {p!r}")
    return vector_norm(x, p, _check_dim(dim, max(x.ndim, 1), op), keepdim)


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """``input`` divided by its p-norm along ``dim``, the norm clamped below at ``eps``.

    Args:
        input: a Tensor.
        p: the norm's exponent (default 2; inf for the max norm).
        dim: the dim along which each vector is normalized (default 1).
        eps: the smallest divisor, so a zero vector stays zero.
        out: not supported (must be None): use the returned tensor.

    Example:
        >>> F.normalize(dtrain.tensor([[3.0, 4.0]]))
        tensor([[0.6000, 0.8000]])
    """
    if out is not None:
        raise TypeError("normalize: out= is not supported; assign the returned tensor instead")
    denom = clamp(_norm_along(input, p, dim, True, "normalize"), min=eps)
    return input / denom


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """The p-norm of ``x1 - x2 + eps`` along the last dim (x1 and x2 broadcast together).

    Args:
        x1, x2: Tensors of shape (N, D) or (D,) (or broadcasting to one shape).
        p: the norm's exponent (default 2).
        eps: added to the difference, so equal vectors keep a gradient.
        keepdim: keep the reduced dim (of size 1).

    Example:
        >>> F.pairwise_distance(dtrain.tensor([[0.0, 0.0]]), dtrain.tensor([[3.0, 4.0]]), eps=0.0)
        tensor([5.])
    """
    op = "pairwise_distance"
    for name, t in (("x1", x1), ("x2", x2)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    _broadcast_shape(x1, x2, op)
    return _norm_along(x1 - x2 + eps, p, -1, keepdim, op)


def _broadcast_shape(x1, x2, op):
    try:
        return broadcast_shapes(tuple(x1.shape), tuple(x2.shape))
    except ValueError:
        raise RuntimeError(f"{op}: x1 of shape {list(x1.shape)} and x2 of shape {list(x2.shape)} cannot be "
                           f"broadcast together") from None


def _clamped_norm(x, dim, eps, op):
    """||x|| along ``dim`` with its value clamped below at eps but its gradient unclamped:
    PyTorch clamps the norm in place under no_grad."""
    n = _norm_along(x, 2, dim, True, op)
    with no_grad():
        lift = clamp(n, min=eps) - n
    return n + lift


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """sum(x1 * x2) / (max(||x1||, eps) * max(||x2||, eps)) along ``dim``; x1 and x2 broadcast.

    Each input is divided by its norm first (as PyTorch), which keeps the result in [-1, 1].

    Args:
        x1, x2: Tensors broadcasting to one shape.
        dim: the dim of the vectors (default 1).
        eps: the smallest norm used as a divisor.

    Example:
        >>> F.cosine_similarity(dtrain.tensor([[1.0, 0.0]]), dtrain.tensor([[1.0, 1.0]]))
        tensor([0.7071])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(cosine_similarity, "cosine_similarity", **locals())
    op = "cosine_similarity"
    for name, t in (("x1", x1), ("x2", x2)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    shape = _broadcast_shape(x1, x2, op)
    x1, x2 = (t if dtypes.is_floating(t.dtype) else t.to(dtypes.get_default_dtype()) for t in (x1, x2))
    if tuple(x1.shape) != shape:
        x1 = broadcast_to(x1, shape)
    if tuple(x2.shape) != shape:
        x2 = broadcast_to(x2, shape)
    dim = _check_dim(dim, max(len(shape), 1), op)
    return ((x1 / _clamped_norm(x1, dim, eps, op)) * (x2 / _clamped_norm(x2, dim, eps, op))).sum(dim)
