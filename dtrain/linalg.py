"""torch.linalg's path: vector_norm, matrix_norm, norm."""
import math
import numbers

from .tensor import dtypes
from .tensor.ops.reduce import amax, amin, normalize_dims, sum as _sum, vector_norm

__all__ = ["matrix_norm", "norm", "vector_norm"]


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """The matrix norm of the matrices in dims ``dim`` of ``A``: "fro" (Frobenius), or
    ord 1 / -1 (max / min column sum of |A|), inf / -inf (max / min row sum of |A|).
    "nuc" and ord 2 / -2 need singular values, which dtrain does not compute.

    Example:
        >>> dtrain.linalg.matrix_norm(dtrain.tensor([[1., -2.], [3., 4.]]), ord=1)
        tensor(6.)
    """
    if dtype is not None:
        A = A.to(dtype)
    if A.ndim < 2:
        raise RuntimeError(f"linalg.matrix_norm: The input tensor A must have at least 2 dimensions, got shape "
                           f"{list(A.shape)}")
    dims = tuple(dim)
    if len(dims) != 2:
        raise RuntimeError(f"linalg.matrix_norm: dim must be a 2-tuple. Got {dim}")
    d0, d1 = normalize_dims(dims[0], A.ndim, "linalg.matrix_norm")[0], \
        normalize_dims(dims[1], A.ndim, "linalg.matrix_norm")[0]
    if d0 == d1:
        raise RuntimeError(f"linalg.matrix_norm: dims must be different. Got ({dims[0]}, {dims[1]})")
    if ord == "fro":
        return vector_norm(A, 2, (d0, d1), keepdim)
    if ord in ("nuc", 2, -2):
        raise RuntimeError(f"linalg.matrix_norm: ord={ord!r} needs singular values, which dtrain does not compute; "
                           f"use 'fro', 1, -1, inf or -inf")
    if isinstance(ord, str) or not isinstance(ord, numbers.Real) or abs(ord) not in (1, math.inf):
        raise RuntimeError(f"linalg.matrix_norm: Order {ord} not supported.")
    if not dtypes.is_floating(A.dtype):
        raise RuntimeError(f"linalg.matrix_norm: Expected a floating point tensor as input. Got {A.dtype}")
    # ord +-1 sums over rows (d0) then reduces over columns (d1); ord +-inf the other way round
    inner, outer = (d0, d1) if abs(ord) == 1 else (d1, d0)
    sums = _sum(A.abs(), dim=inner, keepdim=True)
    out = (amax if ord > 0 else amin)(sums, dim=outer, keepdim=True)
    return out if keepdim else out.squeeze((d0, d1))


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """As torch.linalg.norm: with ``ord`` None, the 2-norm of all elements (or over ``dim``);
    else a vector norm when ``dim`` is an int or A is 1-D, a matrix norm (see matrix_norm)
    when ``dim`` is a 2-tuple or A is 2-D.

    Example:
        >>> dtrain.linalg.norm(dtrain.tensor([3., 4.]))
        tensor(5.)
    """
    if ord is None:
        if dim is not None and not isinstance(dim, numbers.Integral) and len(tuple(dim)) not in (1, 2):
            raise RuntimeError(f"linalg.norm: If dim is specified, it must be of length 1 or 2. Got {dim}")
        return vector_norm(A, 2, dim, keepdim, dtype=dtype)
    if dim is None:
        if A.ndim not in (1, 2):
            raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input must be 1D or 2D. "
                               f"Got {A.ndim}D.")
        dim = (0, 1) if A.ndim == 2 else 0
    if isinstance(dim, numbers.Integral) or len(tuple(dim)) == 1:
        if isinstance(ord, str):
            raise RuntimeError(f"linalg.norm: ord={ord!r} is a matrix norm; a vector norm needs a number")
        return vector_norm(A, ord, dim, keepdim, dtype=dtype)
    return matrix_norm(A, ord, dim, keepdim, dtype=dtype)
