"""Reductions: sum, mean, var, std, prod, amax/amin, max/min with indices, logsumexp, argmax."""
import builtins
import collections
import math
import numbers

from .. import dtypes
from ..backend import get_array_module, quiet_float_errors
from ..function import Function
from ..tensor import Tensor
from .autocast import autocast_call, bfloat16_input, fp32_math, open_regions, thread_state
from .elementwise import maximum, minimum, sqrt
from .index import take_along_dim
from .shape import clone

values_indices = {name: collections.namedtuple(name, ["values", "indices"]) for name in ("max", "min")}


def normalize_dims(dim, ndim, op):
    """``dim`` (None, int, or tuple of ints) as a sorted tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    n = builtins.max(ndim, 1)
    out = []
    for d in dims:
        if not isinstance(d, numbers.Integral):
            raise TypeError(f"{op}: dim must be an int or a tuple of ints, got {d!r}")
        if not -n <= d < n:
            raise IndexError(f"{op}: dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
        d = d % n
        if d in out:
            raise RuntimeError(f"{op}: dim {d} appears multiple times in the list of dims")
        out.append(d)
    if ndim == 0:
        return ()
    return tuple(sorted(out))


def _expand(g, in_shape, axes, keepdim):
    """Broadcast a reduced gradient back to the input's shape (a view)."""
    xp = get_array_module(g)
    if not keepdim and axes:
        g = g.reshape(tuple(1 if i in axes else n for i, n in enumerate(in_shape)))
    return xp.broadcast_to(g, in_shape)


def _total(a, axis, keepdims):
    """``a.sum``; bfloat16 is accumulated in float32 and rounded once, as torch: ml_dtypes'
    bfloat16 sums in its 8 bits (10000 ones sum to 256)."""
    if a.dtype.name == "bfloat16":
        return a.sum(axis=axis, keepdims=keepdims, dtype=dtypes.float32).astype(a.dtype)
    return a.sum(axis=axis, keepdims=keepdims)


class Sum(Function):
    def forward(self, a, axes=(), keepdim=False):
        self.shape, self.axes, self.keepdim = a.shape, axes, keepdim
        return _total(a, axes, keepdim)

    def backward(self, g):
        return _expand(g, self.shape, self.axes, self.keepdim)


class Prod(Function):
    def forward(self, a, axes=(), keepdim=False):
        self.a, self.axes, self.keepdim = a, axes, keepdim
        return a.prod(axis=axes, keepdims=keepdim)

    def backward(self, g):
        # product of all *other* elements = exclusive cumprod from the left times from the
        # right; dividing out/a instead would give nan where an element is 0
        a, axes = self.a, self.axes
        xp = get_array_module(a)
        rest = [i for i in range(a.ndim) if i not in axes]
        moved = a.transpose(rest + list(axes))
        flat = moved.reshape(moved.shape[:len(rest)] + (-1,))
        ones = xp.ones(flat.shape[:-1] + (1,), dtype=a.dtype)
        left = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
        right = xp.cumprod(xp.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
        others = (left * right).reshape(moved.shape)
        inverse = [0] * a.ndim
        for i, p in enumerate(rest + list(axes)):
            inverse[p] = i
        others = others.transpose(inverse)
        return _expand(g, a.shape, axes, self.keepdim) * others


class Amax(Function):
    """max over dims; the gradient is shared evenly between tied maxima (as torch.amax)."""

    ufunc = "max"

    def forward(self, a, axes=(), keepdim=False):
        if a.size == 0 and builtins.any(a.shape[i] == 0 for i in axes):
            raise RuntimeError(f"{self.ufunc}: cannot reduce over an empty dimension of a tensor of shape {a.shape}")
        self.a, self.axes, self.keepdim = a, axes, keepdim
        self.out = getattr(a, self.ufunc)(axis=axes, keepdims=True)
        return self.out if keepdim else self.out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(self, g):
        mask = self.a == self.out
        count = mask.sum(axis=self.axes, keepdims=True)
        return _expand(g, self.a.shape, self.axes, self.keepdim) * (mask / count).astype(g.dtype, copy=False)


class Amin(Amax):
    ufunc = "min"


class LogSumExp(Function):
    def forward(self, a, axes=(), keepdim=False):
        xp = get_array_module(a)
        m = a.max(axis=axes, keepdims=True) if a.size else xp.zeros([1] * a.ndim, a.dtype)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf (or inf) slices: avoid inf - inf
        self.a, self.axes, self.keepdim = a, axes, keepdim
        self.out = xp.log(_total(xp.exp(a - m), axes, True)) + m
        return self.out if keepdim else self.out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(self, g):
        xp = get_array_module(g)
        return _expand(g, self.a.shape, self.axes, self.keepdim) * xp.exp(self.a - self.out)


def _reduce(cls, x, dim, keepdim, op, **kw):
    axes = normalize_dims(dim, x.ndim, op)
    return cls.apply(x, axes=axes, keepdim=keepdim, **kw)


def sum(x, dim=None, keepdim=False, dtype=None):  # noqa: A001
    """Sum over ``dim`` (int, tuple, or all); bool/int tensors sum to int64 as in PyTorch."""
    if open_regions[0] and not thread_state.running:
        return autocast_call(sum, "sum", **locals())
    if dtype is None and x.dtype.kind in "bi" and x.dtype != dtypes.int64:
        dtype = dtypes.int64
    if dtype is not None:
        x = x.to(dtype)
    return _reduce(Sum, x, dim, keepdim, "sum")


def mean(x, dim=None, keepdim=False, dtype=None):
    if open_regions[0] and not thread_state.running:
        return autocast_call(mean, "mean", **locals())
    if dtype is not None:
        x = x.to(dtype)
    if not dtypes.is_floating(x.dtype):
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be floating point, "
                           f"but got {x.dtype}; use x.float().mean()")
    axes = normalize_dims(dim, x.ndim, "mean")
    n = 1
    for a in axes:
        n *= x.shape[a]
    total = Sum.apply(x, axes=axes, keepdim=keepdim)
    return total / n if n else total * float("nan")


def var(x, dim=None, unbiased=None, keepdim=False, correction=None):
    """Variance; ``unbiased=True`` (the default) or ``correction=1`` divides by N - 1."""
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    elif unbiased is not None:
        raise TypeError("var: give either unbiased or correction, not both")
    axes = normalize_dims(dim, x.ndim, "var")
    n = 1
    for a in axes:
        n *= x.shape[a]
    centered = x - mean(x, dim=axes, keepdim=True)
    return sum(centered * centered, dim=axes, keepdim=keepdim) / builtins.max(n - correction, 0)


def std(x, dim=None, unbiased=None, keepdim=False, correction=None):
    return sqrt(var(x, dim=dim, unbiased=unbiased, keepdim=keepdim, correction=correction))


def prod(x, dim=None, keepdim=False, dtype=None):
    if open_regions[0] and not thread_state.running:
        return autocast_call(prod, "prod", **locals())
    if dtype is not None:
        x = x.to(dtype)
    elif x.dtype.kind in "bi" and x.dtype != dtypes.int64:
        x = x.to(dtypes.int64)
    return _reduce(Prod, x, dim, keepdim, "prod")


def amax(x, dim=None, keepdim=False):
    return _reduce(Amax, x, dim, keepdim, "amax")


def amin(x, dim=None, keepdim=False):
    return _reduce(Amin, x, dim, keepdim, "amin")


def logsumexp(x, dim=None, keepdim=False):
    if open_regions[0] and not thread_state.running:
        return autocast_call(logsumexp, "logsumexp", **locals())
    if not dtypes.is_floating(x.dtype):
        x = x.to(dtypes.get_default_dtype())
    return _reduce(LogSumExp, x, dim, keepdim, "logsumexp")


def _arg(x, dim, keepdim, which):
    xp = get_array_module(x.array)
    a = x.array
    if a.size == 0 and (dim is None or a.ndim == 0 or a.shape[normalize_dims(dim, a.ndim, which)[0]] == 0):
        raise RuntimeError(f"{which}(): cannot reduce over an empty dimension of a tensor of shape {tuple(x.shape)}")
    if dim is None:
        idx = getattr(xp, which)(a.reshape(-1))
        if keepdim:
            idx = idx.reshape((1,) * a.ndim)
        return Tensor._wrap(xp.asarray(idx, dtype=dtypes.int64))
    (axis,) = normalize_dims(dim, a.ndim, which) or (0,)
    idx = getattr(xp, which)(a, axis=axis, keepdims=keepdim) if a.ndim else xp.asarray(0)
    return Tensor._wrap(idx.astype(dtypes.int64, copy=False))


def argmax(x, dim=None, keepdim=False):
    return _arg(x, dim, keepdim, "argmax")


def argmin(x, dim=None, keepdim=False):
    return _arg(x, dim, keepdim, "argmin")


def _max_min(x, dim, keepdim, other, which):
    if isinstance(dim, Tensor):  # max(x, y): elementwise
        other = dim
    if other is not None:
        return (maximum if which == "max" else minimum)(x, other)
    if dim is None:
        return (amax if which == "max" else amin)(x)
    idx = _arg(x, dim, True, "arg" + which)
    if x.ndim == 0:  # a 0-d tensor is its own extreme along dim 0 / -1 (take_along_dim needs a dim)
        return values_indices[which](clone(x), idx)
    values = take_along_dim(x, idx, dim)
    if not keepdim:
        values, idx = values.squeeze(dim), idx.squeeze(dim)
    return values_indices[which](values, idx)


def max(x, dim=None, keepdim=False, other=None):  # noqa: A001
    """``max(x)``: the largest element; ``max(x, dim)``: (values, indices) along dim;
    ``max(x, y)``: elementwise maximum, as in PyTorch."""
    return _max_min(x, dim, keepdim, other, "max")


def min(x, dim=None, keepdim=False, other=None):  # noqa: A001
    """``min(x)``, ``min(x, dim)`` -> (values, indices), or ``min(x, y)``, as ``max``."""
    return _max_min(x, dim, keepdim, other, "min")


def all(x, dim=None, keepdim=False):  # noqa: A001
    axes = normalize_dims(dim, x.ndim, "all")
    return Tensor._wrap(x.array.astype(bool, copy=False).all(axis=axes, keepdims=keepdim))


def any(x, dim=None, keepdim=False):  # noqa: A001
    axes = normalize_dims(dim, x.ndim, "any")
    return Tensor._wrap(x.array.astype(bool, copy=False).any(axis=axes, keepdims=keepdim))


def count_nonzero(x, dim=None):
    axes = normalize_dims(dim, x.ndim, "count_nonzero")
    return Tensor._wrap((x.array != 0).sum(axis=axes).astype(dtypes.int64))


def _cumulative(fn, cls, x, dim, dtype):
    """cumsum / cumprod (``fn``, the public function, for autocast) through Function ``cls``."""
    op = fn.__name__
    if open_regions[0] and not thread_state.running:
        return autocast_call(fn, op, x, dim, dtype=dtype)
    if bfloat16_input(x):  # float32 running sums / products, each rounded once (as torch's CPU kernel)
        return fp32_math(fn, x, dim, dtype=dtype)
    if dtype is not None:
        x = x.to(dtype)
    elif x.dtype.kind in "bi" and x.dtype != dtypes.int64:  # as PyTorch: integers accumulate in int64
        x = x.to(dtypes.int64)
    (axis,) = normalize_dims(dim, x.ndim, op) or (0,)
    return cls.apply(x, axis=axis)


def cumsum(x, dim, *, dtype=None):
    """Running sums along ``dim``.

    Example:
        >>> dtrain.cumsum(dtrain.tensor([1, 2, 3]), 0)
        tensor([1, 3, 6])
    """
    return _cumulative(cumsum, CumSum, x, dim, dtype)


def cumprod(x, dim, *, dtype=None):
    """Running products along ``dim``; the gradient is exact where the input has zeros.

    Example:
        >>> dtrain.cumprod(dtrain.tensor([1., 2., 3.]), 0)
        tensor([1., 2., 6.])
    """
    return _cumulative(cumprod, CumProd, x, dim, dtype)


def _reverse_cumsum(g, axis):
    xp = get_array_module(g)
    return xp.flip(xp.cumsum(xp.flip(g, axis), axis=axis), axis)


class CumSum(Function):
    def forward(self, a, axis=0):
        self.axis = axis
        return get_array_module(a).cumsum(a, axis=axis) if a.ndim else a.copy()

    def backward(self, g):
        return _reverse_cumsum(g, self.axis) if g.ndim else g


class CumProd(Function):
    def forward(self, a, axis=0):
        self.a, self.axis = a, axis
        self.out = get_array_module(a).cumprod(a, axis=axis) if a.ndim else a.copy()
        return self.out

    def backward(self, g):
        a, out, axis = self.a, self.out, self.axis
        if a.ndim == 0:
            return g
        xp = get_array_module(g)
        # d out_j / d a_i = prod_{k <= j, k != i} a_k. Before a slice's first zero z this is
        # out_j / a_i (out_j is 0 from z on, so the reverse cumsum stops there by itself);
        # at z it is the cumprod with a_z replaced by 1; after z every term holds a_z = 0.
        zero = a == 0
        z = xp.argmax(zero.astype(dtypes.uint8), axis=axis)  # the first zero (CuPy's argmax takes no bool)
        has_zero = xp.take_along_axis(zero, xp.expand_dims(z, axis), axis)
        pos = xp.arange(a.shape[axis]).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
        z = xp.where(has_zero, xp.expand_dims(z, axis), a.shape[axis])
        before, at = pos < z, pos == z
        g_before = _reverse_cumsum(g * out, axis) / xp.where(before, a, 1)
        g_at = _reverse_cumsum(g * xp.cumprod(xp.where(at, 1, a), axis=axis), axis)
        return xp.where(before, g_before, xp.where(at, g_at, 0)).astype(g.dtype, copy=False)


# ---- norms ------------------------------------------------------------------------------

class VectorNorm(Function):
    """``sum(|a|^ord)^(1/ord)`` over ``axes``; ord 0 counts non-zeros, +-inf take max/min |a|.
    The gradients follow PyTorch's at the kinks: 0 where the norm is 0 (ord > 0), shared
    evenly between tied extremes (ord +-inf)."""

    def forward(self, a, ord=2.0, axes=(), keepdim=False):
        xp = get_array_module(a)
        self.a, self.ord, self.axes, self.keepdim = a, ord, axes, keepdim
        if ord == 2:
            out = xp.sqrt(_total(a * a, axes, True))
        elif ord == 1:
            out = _total(xp.abs(a), axes, True)
        elif ord == 0:
            out = (a != 0).sum(axis=axes, keepdims=True).astype(a.dtype)
        elif ord == math.inf or ord == -math.inf:
            if a.size == 0:
                raise RuntimeError(f"linalg.vector_norm cannot compute the {ord} norm on an empty tensor because "
                                   f"the operation does not have an identity")
            out = getattr(xp.abs(a), "max" if ord > 0 else "min")(axis=axes, keepdims=True)
        else:
            with quiet_float_errors():  # a negative ord meets |a| == 0: inf, then a norm of 0
                out = _total(xp.abs(a) ** ord, axes, True) ** (1.0 / ord)
        self.out = out
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(self, g):
        a, out, p = self.a, self.out, self.ord
        xp = get_array_module(a)
        if not self.keepdim:
            g = g.reshape(out.shape)
        if p == 0:
            return xp.zeros_like(a)
        if p == 1:
            return xp.sign(a) * g
        if p == math.inf or p == -math.inf:
            is_max = (xp.abs(a) == out).astype(a.dtype)
            return xp.sign(a) * is_max * (g / is_max.sum(axis=self.axes, keepdims=True))
        with quiet_float_errors():  # PyTorch's formulas, infinities included, for ord < 0
            scale = xp.where(out == 0, 0, g / xp.where(out == 0, 1, out ** (p - 1)))
            if p == 2:
                return a * scale
            if p < 1:  # |a|^(p-1) is infinite at a == 0, where PyTorch takes the gradient to be 0
                scaled = xp.sign(a) * xp.where(a == 0, 0, xp.abs(xp.where(a == 0, 1, a)) ** (p - 1))
                return scaled * g * out ** (1 - p)
            return xp.sign(a) * xp.abs(a) ** (p - 1) * scale


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):  # noqa: A002
    """The vector ``ord``-norm over ``dim`` (all elements when None), as
    torch.linalg.vector_norm: ``sum(|x|^ord)^(1/ord)``; ord inf / -inf: max / min of |x|;
    ord 0: the number of non-zero elements.

    Args:
        x: a floating-point tensor.
        ord: any real number, ``inf`` or ``-inf``.
        dim: an int, a tuple of ints, or None.
        keepdim: keep the reduced dims with size 1.
        dtype: compute in (and return) this dtype.

    Example:
        >>> dtrain.linalg.vector_norm(dtrain.tensor([3., 4.]))
        tensor(5.)
    """
    if dtype is not None:
        x = x.to(dtype)
    if not dtypes.is_floating(x.dtype):
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex tensor as input. Got {x.dtype}")
    if isinstance(ord, str) or not isinstance(ord, numbers.Real):
        raise RuntimeError(f"linalg.vector_norm: ord must be a real number, got {ord!r}")
    axes = normalize_dims(dim, x.ndim, "linalg.vector_norm")
    if ord < 0 and x.numel() == 0:
        raise RuntimeError(f"linalg.vector_norm of negative order {ord} cannot be computed on an empty tensor "
                           f"because the operation does not have an identity")
    return VectorNorm.apply(x, ord=float(ord), axes=axes, keepdim=keepdim)


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):  # noqa: A002
    """As torch.norm: the vector ``p``-norm over ``dim`` (all elements when None); "fro"
    is the 2-norm of the elements.

    Example:
        >>> dtrain.tensor([[3., 4.]]).norm()
        tensor(5.)
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(norm, "norm", **locals())
    if p is None or p == "fro":
        p = 2
    elif isinstance(p, str):
        raise RuntimeError(f"norm: p={p!r} is not supported; use a number or 'fro'")
    return vector_norm(input, p, dim, keepdim, dtype=dtype)
