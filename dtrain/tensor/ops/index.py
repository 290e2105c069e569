"""Indexing: tensor[...] with ints, slices, None, Ellipsis, integer arrays and masks;
gather / take_along_dim, index_select, masked_fill."""
import numbers

from .. import dtypes
from ..backend import broadcast_shapes, check_index_bounds, get_array_module, scatter_add
from ..function import Function
from ..tensor import Tensor, _check_dim


def normalize_index(index, x):
    """The index with Tensors and lists turned into arrays on x's device."""
    if not isinstance(index, tuple):
        index = (index,)
    xp = get_array_module(x.array)
    out = []
    for i in index:
        if isinstance(i, Tensor):
            if i.dtype.kind not in "iub":
                raise IndexError(f"tensors used as indices must be long, int or bool tensors, got {i.dtype}")
            if i.device != x.device:
                raise RuntimeError(f"indices are on {i.device} but the indexed tensor is on {x.device}")
            i = i.array
        elif isinstance(i, list):
            i = xp.asarray(i)
            if i.dtype.kind not in "iub":
                raise IndexError(f"lists used as indices must hold ints or bools, got dtype {i.dtype}")
        elif hasattr(i, "dtype") and not isinstance(i, numbers.Integral):  # a NumPy/CuPy array
            i = xp.asarray(i)  # onto x's device (a no-op where it already is)
        elif not (i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral))):
            raise IndexError(f"only integers, slices, None, Ellipsis, and integer or bool tensors are valid "
                             f"indices, got {type(i).__name__}")
        if isinstance(i, slice) and i.step is not None and i.step <= 0:
            raise ValueError(f"step must be greater than zero, got slice {i}")  # as PyTorch
        out.append(i)
    return tuple(out)


def _is_basic(index):
    return all(i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral)) for i in index)


class Index(Function):
    def forward(self, a, index=()):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        try:
            check_index_bounds(a.shape, index)  # CuPy would wrap an out-of-range index around
            return a[index]
        except IndexError as e:
            raise IndexError(f"index {_show(index)} is invalid for a tensor of shape {list(a.shape)}: {e}") from None

    def backward(self, g):
        xp = get_array_module(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        if _is_basic(self.index):
            out[self.index] = g
        else:
            scatter_add(out, self.index, g)  # repeated indices accumulate
        return out


def _show(index):
    return "[" + ", ".join("..." if i is Ellipsis else f"array of shape {list(i.shape)}" if hasattr(i, "shape")
                           else str(i) for i in index) + "]"


def index(x, idx):
    return Index.apply(x, index=normalize_index(idx, x))


def _along_index(idx, axis, xp):
    """Full advanced-index tuple selecting ``src[..., idx, ...]`` element by element (gather)."""
    out = []
    for d, n in enumerate(idx.shape):
        if d == axis:
            out.append(idx)
        else:
            shape = [1] * idx.ndim
            shape[d] = n
            out.append(xp.arange(n).reshape(shape))
    return tuple(out)


class Gather(Function):
    def forward(self, a, idx, axis=0):
        xp = get_array_module(a)
        self.shape, self.where = a.shape, _along_index(idx, axis, xp)
        return a[self.where]

    def backward(self, g):
        out = get_array_module(g).zeros(self.shape, dtype=g.dtype)
        scatter_add(out, self.where, g)
        return out, None


def gather(x, dim, index):
    """``out[i][j] = x[index[i][j]][j]`` for dim 0, as torch.gather."""
    if not isinstance(index, Tensor) or index.dtype.kind not in "iu":
        raise RuntimeError(f"gather(): expected an int64 index tensor, got "
                           f"{index.dtype if isinstance(index, Tensor) else type(index).__name__}")
    axis = _check_dim(dim, x.ndim, "gather")
    if index.ndim != x.ndim:
        raise RuntimeError(f"gather(): index tensor must have the same number of dimensions as input "
                           f"({x.ndim}), got shape {list(index.shape)}")
    for d in range(x.ndim):
        if d != axis and index.shape[d] > x.shape[d]:
            raise RuntimeError(f"gather(): size of index {list(index.shape)} does not fit input "
                               f"{list(x.shape)} at dimension {d}")
    n = x.shape[axis]
    if index.numel() and (int(index.array.max()) >= n or int(index.array.min()) < -n):
        raise IndexError(f"gather(): index out of range for dimension {axis} with size {n}")
    return Gather.apply(x, index.array, axis=axis)


def take_along_dim(x, indices, dim):
    axis = _check_dim(dim, x.ndim, "take_along_dim")
    shape = list(broadcast_shapes(tuple(s if i != axis else 1 for i, s in enumerate(x.shape)),
                                  tuple(s if i != axis else 1 for i, s in enumerate(indices.shape))))
    shape[axis] = indices.shape[axis]
    idx = Tensor._wrap(get_array_module(indices.array).broadcast_to(indices.array, shape))
    x_shape = list(shape)
    x_shape[axis] = x.shape[axis]
    return gather(x.expand(*x_shape) if list(x.shape) != x_shape else x, axis, idx)


def index_select(x, dim, index):
    axis = _check_dim(dim, x.ndim, "index_select")
    return Index.apply(x, index=normalize_index((slice(None),) * axis + (index,), x))


def masked_fill(x, mask, value):
    from .elementwise import where
    if mask.dtype != dtypes.bool_:
        raise RuntimeError(f"masked_fill only supports boolean masks, but got mask with dtype {mask.dtype}")
    value = value.item() if isinstance(value, Tensor) else value
    return where(mask, Tensor._wrap(get_array_module(x.array).asarray(value, dtype=x.dtype)), x)


def nonzero(x, as_tuple=False):
    idx = get_array_module(x.array).nonzero(x.array)
    if as_tuple:
        return tuple(Tensor._wrap(i.astype(dtypes.int64)) for i in idx)
    return Tensor._wrap(get_array_module(x.array).stack(idx, axis=1).astype(dtypes.int64))


def one_hot(x, num_classes=-1):
    if x.dtype.kind not in "iu":
        raise RuntimeError(f"one_hot is only applicable to index tensors (int64), got {x.dtype}")
    xp = get_array_module(x.array)
    if num_classes == -1:
        num_classes = int(x.array.max()) + 1 if x.numel() else 0
    if x.numel() and (int(x.array.min()) < 0 or int(x.array.max()) >= num_classes):
        raise RuntimeError(f"one_hot: class values must be in [0, {num_classes - 1}], got values in "
                           f"[{int(x.array.min())}, {int(x.array.max())}]")
    return Tensor._wrap((x.array[..., None] == xp.arange(num_classes)).astype(dtypes.int64))

