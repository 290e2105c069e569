"""The differentiable ops, grouped by kind; each public function is also exported from dtrain."""
from .elementwise import (abs, add, allclose, bitwise_and, bitwise_not, bitwise_or, bitwise_xor,  # noqa: F401
                          ceil, clamp, clip, cos, div, eq, equal, exp, floor, floor_divide, ge, gt, isclose,
                          isfinite, isinf, isnan, le, log, log1p, logical_and, logical_not, logical_or,
                          logical_xor, lt, maximum, minimum, mul, ne, neg, pow, remainder, round, rsqrt,
                          sigmoid, sign, sin, sqrt, sub, tanh, trunc, where)
from .index import gather, index_select, masked_fill, nonzero, one_hot, take_along_dim  # noqa: F401
from .linalg import bmm, dot, linear, matmul, mm, outer  # noqa: F401
from .reduce import (all, amax, amin, any, argmax, argmin, count_nonzero, cumsum, logsumexp,  # noqa: F401
                     max, mean, min, prod, std, sum, var)
from .shape import (broadcast_to, cat, chunk, clone, concat, contiguous, expand, expand_as,  # noqa: F401
                    flatten, flip, permute, repeat, reshape, split, squeeze, stack, t, transpose,
                    unbind, unflatten, unsqueeze, view)
from .diag import diag, diagonal, trace, tril, triu  # noqa: F401
from .einsum import einsum  # noqa: F401
from .elementwise import cosh, erf, lerp, sinh, square  # noqa: F401
from .index import scatter, scatter_add  # noqa: F401
from .linalg import addmm, baddbmm, kron  # noqa: F401
from .toplevel import dropout, log_softmax, relu, softmax  # noqa: F401
from .reduce import cumprod, norm  # noqa: F401
from .sampling import multinomial  # noqa: F401
from .shape import narrow, repeat_interleave, roll  # noqa: F401
from .sort import argsort, sort, topk, unique  # noqa: F401

# star-imports export the functions, never the submodules (dtrain.nn must stay the nn package)
__all__ = [_n for _n, _v in list(globals().items()) if not _n.startswith("_") and not isinstance(_v, type(__import__("sys")))]
