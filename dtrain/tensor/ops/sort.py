"""Ordering: sort, argsort, topk, unique. Values carry gradients through their indices."""
import collections
import numbers

from .. import dtypes
from ..backend import get_array_module
from ..tensor import Tensor, _check_dim
from .index import Gather

_values_indices = {name: collections.namedtuple(name, ["values", "indices"]) for name in ("sort", "topk")}


def _order(a, axis, descending):
    """Stable argsort of ``a`` along ``axis``. Descending keeps equal elements in their
    original order too: sort the reversed array ascending, then reverse and re-map."""
    xp = get_array_module(a)
    if not descending:
        return xp.argsort(a, axis=axis, kind="stable")
    n = a.shape[axis]
    idx = xp.argsort(xp.flip(a, axis), axis=axis, kind="stable")
    return (n - 1) - xp.flip(idx, axis)


def _check_sortable(x, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def sort(input, dim=-1, descending=False, stable=False):  # noqa: A002
    """Sort along ``dim``; returns (values, indices) with ``.values`` / ``.indices``. The
    sort is always stable (equal elements keep their order), descending too.

    Example:
        >>> dtrain.sort(dtrain.tensor([3., 1., 2.]), descending=True).indices
        tensor([0, 2, 1])
    """
    _check_sortable(input, "sort")
    if input.ndim == 0:
        zero = get_array_module(input.array).zeros((), dtypes.int64)
        return _values_indices["sort"](input.clone(), Tensor._wrap(zero))
    axis = _check_dim(dim, input.ndim, "sort")
    idx = _order(input.array, axis, descending).astype(dtypes.int64, copy=False)
    return _values_indices["sort"](_take(input, idx, axis), Tensor._wrap(idx))


def _take(x, idx, axis):
    return Gather.apply(x, idx, axis=axis)


def argsort(input, dim=-1, descending=False, stable=False):  # noqa: A002
    """The indices that sort ``input`` along ``dim`` (a stable sort).

    Example:
        >>> dtrain.argsort(dtrain.tensor([3., 1., 2.]))
        tensor([1, 2, 0])
    """
    return sort(input, dim, descending, stable).indices


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    """The ``k`` largest (``largest=False``: smallest) elements along ``dim``, as
    (values, indices) with ``.values`` / ``.indices``; in order (ties: lower index first).

    Example:
        >>> dtrain.topk(dtrain.tensor([1., 5., 3.]), 2)
        topk(values=tensor([5., 3.]), indices=tensor([1, 2]))
    """
    _check_sortable(input, "topk")
    x = input.reshape(1) if input.ndim == 0 else input
    axis = _check_dim(dim, x.ndim, "topk")
    n = x.shape[axis]
    if not isinstance(k, numbers.Integral) or not 0 <= k <= n:
        raise RuntimeError(f"topk(): selected index k out of range: k = {k} for dimension {axis} of size {n}")
    idx = _order(x.array, axis, largest)
    idx = idx[(slice(None),) * axis + (slice(0, k),)].astype(dtypes.int64, copy=False)
    values, idx = _take(x, idx, axis), Tensor._wrap(idx)
    if input.ndim == 0 and k == 1:
        values, idx = values.reshape(()), idx.reshape(())
    return _values_indices["topk"](values, idx)


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):  # noqa: A002
    """The distinct elements of ``input`` (flattened when ``dim`` is None, else the distinct
    slices along ``dim``), in ascending order; optionally the inverse indices (input's
    shape, or ``len(dim)``) and the counts. Not differentiable, as in PyTorch.

    Example:
        >>> dtrain.unique(dtrain.tensor([2, 1, 2]), return_counts=True)
        (tensor([1, 2]), tensor([1, 2]))
    """
    _check_sortable(input, "unique")
    xp = get_array_module(input.array)
    a = input.array
    if dim is None:
        res = xp.unique(a.reshape(-1), return_inverse=True, return_counts=True)
        values, inverse, counts = res
        inverse = inverse.reshape(a.shape)
    else:
        axis = _check_dim(dim, input.ndim, "unique")
        moved = xp.moveaxis(a, axis, 0)
        rows = moved.reshape(moved.shape[0], -1)
        if rows.shape[0] == 0:
            values, inverse, counts = rows, xp.zeros(0, dtypes.int64), xp.zeros(0, dtypes.int64)
        else:
            # sort the rows lexicographically, then mark where a row differs from the one before
            order = xp.lexsort(rows.T[::-1]) if rows.shape[1] else xp.arange(rows.shape[0])
            srt = rows[order]
            new = xp.concatenate([xp.ones(1, dtype=bool), (srt[1:] != srt[:-1]).any(axis=1)])
            group = xp.cumsum(new) - 1
            values = srt[new]
            inverse = xp.empty_like(group)
            inverse[order] = group
            counts = xp.diff(xp.concatenate([xp.nonzero(new)[0], xp.asarray([rows.shape[0]])]))
        values = xp.moveaxis(values.reshape((-1,) + moved.shape[1:]), 0, axis)
    out = [Tensor._wrap(values)]
    if return_inverse:
        out.append(Tensor._wrap(inverse.astype(dtypes.int64, copy=False)))
    if return_counts:
        out.append(Tensor._wrap(counts.astype(dtypes.int64, copy=False)))
    return out[0] if len(out) == 1 else tuple(out)
