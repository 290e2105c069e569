"""Indexing: tensor[...] with ints, slices, None, Ellipsis, ranges, integer arrays and masks;
gather / take_along_dim, scatter / scatter_add, index_select, masked_fill."""
import numbers

from .. import device_checks, dtypes
from ..backend import broadcast_shapes, check_index_bounds, get_array_module, scatter_add as add_at
from ..function import Function, SliceGrad, on_input_device
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
        elif isinstance(i, range):  # a list of ints to PyTorch: advanced indexing
            i = xp.arange(i.start, i.stop, i.step, dtype=dtypes.int64)
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
            raise IndexError(f"index {_describe_index(index)} is invalid for a tensor of shape {list(a.shape)}: "
                             f"{e}") from None

    def backward(self, g):
        if _is_basic(self.index):
            return SliceGrad(self.shape, self.index, g)  # dense only when the walk needs it
        out = get_array_module(g).zeros(self.shape, dtype=g.dtype)
        add_at(out, self.index, g)  # repeated indices accumulate
        return out


def _describe_index(index):
    """An index tuple for an error message, arrays by their shape."""
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
        add_at(out, self.where, g)
        return out, None


def _check_index_shape(x, axis, index, op, name):
    """gather's and scatter's rule, in PyTorch's words (``name``: what they call x): the index
    has x's number of dims and is no larger than x along each dim but ``axis``."""
    if index.ndim != x.ndim:
        raise RuntimeError(f"{op}(): Index tensor must have the same number of dimensions as {name} tensor "
                           f"({x.ndim}), got index of shape {list(index.shape)}")
    for d in range(x.ndim):
        if d != axis and index.shape[d] > x.shape[d]:
            raise RuntimeError(f"{op}(): Expected index {list(index.shape)} to be smaller than {name} "
                               f"{list(x.shape)} apart from dimension {axis}")


@on_input_device
def gather(x, dim, index):
    """``out[i][j] = x[index[i][j]][j]`` for dim 0, as torch.gather. An index out of range
    raises IndexError: at once on the CPU; on a GPU at the next host synchronisation
    (``dtrain.tensor.device_checks``)."""
    if not isinstance(index, Tensor) or index.dtype.kind not in "iu":
        raise RuntimeError(f"gather(): expected an int64 index tensor, got "
                           f"{index.dtype if isinstance(index, Tensor) else type(index).__name__}")
    axis = _check_dim(dim, x.ndim, "gather")
    _check_index_shape(x, axis, index, "gather", "input")
    n = x.shape[axis]
    if index.numel():  # on a GPU: raised at the next host synchronisation (device_checks)
        device_checks.check_range(index.array, -n, n, ("gather", axis, n), lambda lo, hi: IndexError(
            f"gather(): index out of range for dimension {axis} with size {n}"))
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
    """The entries of ``x`` at positions ``index`` (a 1-D integer tensor) along ``dim``.

    Example:
        >>> dtrain.index_select(dtrain.arange(6).reshape(2, 3), 1, dtrain.tensor([2, 0]))
        tensor([[2, 0],
                [5, 3]])
    """
    axis = _check_dim(dim, x.ndim, "index_select")
    if not isinstance(index, Tensor) or index.dtype.kind not in "iu":
        raise RuntimeError(f"index_select(): Expected dtype int32/int64 for index, got "
                           f"{index.dtype if isinstance(index, Tensor) else type(index).__name__}")
    if index.ndim > 1:
        raise IndexError(f"index_select(): Index is supposed to be a vector, got shape {list(index.shape)}")
    return Index.apply(x, index=normalize_index((slice(None),) * axis + (index.reshape(-1),), x))


class MaskedFill(Function):
    """``where(mask, value, a)`` for a Python number: one pass, no tensor made for the value."""

    def forward(self, a, mask, value=0):
        self.mask = mask
        xp = get_array_module(a, mask)
        return xp.where(mask, a.dtype.type(value), a)

    def backward(self, g):
        return get_array_module(g).where(self.mask, g.dtype.type(0), g), None


def _check_mask(x, mask, op):
    if not isinstance(mask, Tensor) or mask.dtype != dtypes.bool_:
        raise RuntimeError(f"{op} only supports boolean masks, but got mask with dtype "
                           f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
    try:
        shape = broadcast_shapes(tuple(mask.shape), tuple(x.shape))
    except ValueError:
        shape = None
    if shape != tuple(x.shape):
        raise RuntimeError(f"{op}: the mask of shape {list(mask.shape)} does not broadcast to the input's "
                           f"shape {list(x.shape)}")


def _fill_value(value, x, op):
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError(f"{op} only supports a 0-dimensional value tensor, but got tensor with "
                               f"{value.ndim} dimension(s)")
        return value
    if not isinstance(value, numbers.Number):
        raise TypeError(f"{op}: value must be a number or a 0-d Tensor, got {type(value).__name__}")
    if x.dtype.kind in "iub" and isinstance(value, float) and not value.is_integer():
        raise RuntimeError(f"{op}: value {value} cannot be converted to type {x.dtype} without overflow")
    return value


def masked_fill(x, mask, value):
    """``x`` with ``value`` written where ``mask`` (a bool tensor broadcasting to x) is true.

    Args:
        x: the input.
        mask: a bool Tensor broadcastable to ``x.shape``.
        value: a number, or a 0-d Tensor (which then receives a gradient).

    Example:
        >>> dtrain.zeros(2, 2).masked_fill(dtrain.tensor([True, False]), float("-inf"))
        tensor([[-inf, 0.],
                [-inf, 0.]])
    """
    _check_mask(x, mask, "masked_fill")
    value = _fill_value(value, x, "masked_fill")
    if isinstance(value, Tensor):  # the value's gradient is the sum of the filled positions
        from .elementwise import where
        return where(mask, value.to(x.dtype), x)
    return MaskedFill.apply(x, mask.array, value=value)


def masked_fill_(x, mask, value):
    """In-place ``masked_fill``; returns ``x``."""
    _check_mask(x, mask, "masked_fill_")
    value = _fill_value(value, x, "masked_fill_")
    x._check_inplace("masked_fill_")
    xp = get_array_module(x.array)
    xp.copyto(x.array, xp.asarray(value.array if isinstance(value, Tensor) else value, dtype=x.dtype),
              where=mask.array)
    return x


# ---- scatter ------------------------------------------------------------------------------

def _scatter_args(x, dim, index, src, op):
    """Validate scatter's arguments (PyTorch's rules); returns (axis, where, src window)."""
    axis = _check_dim(dim, x.ndim, op)
    if not isinstance(index, Tensor) or index.dtype != dtypes.int64:
        raise RuntimeError(f"{op}(): Expected dtype int64 for index, got "
                           f"{index.dtype if isinstance(index, Tensor) else type(index).__name__}")
    _check_index_shape(x, axis, index, op, "self")
    if isinstance(src, Tensor):
        if src.ndim != x.ndim:
            raise RuntimeError(f"{op}(): Index tensor must have the same number of dimensions as src tensor "
                               f"({src.ndim}), got index of shape {list(index.shape)}")
        if any(i > s for i, s in zip(index.shape, src.shape)):
            raise RuntimeError(f"{op}(): Expected index {list(index.shape)} to be smaller than src "
                               f"{list(src.shape)}")
        if src.dtype != x.dtype:
            raise RuntimeError(f"{op}(): Expected self.dtype to be equal to src.dtype, got {x.dtype} "
                               f"and {src.dtype}")
    n = x.shape[axis]
    if index.numel():  # on a GPU: raised at the next host synchronisation (device_checks)
        device_checks.check_range(index.array, 0, n, (op, axis, n), lambda lo, hi: IndexError(
            f"{op}(): index {hi if hi >= n else lo} is out of bounds for dimension {axis} with size {n}"))
    window = tuple(slice(0, k) for k in index.shape)
    return _along_index(index.array, axis, get_array_module(index.array)), window


def _scatter_into(out, src, where, window, add):
    values = src[window] if hasattr(src, "shape") else src
    if add:
        add_at(out, where, values)
    else:
        out[where] = values


class Scatter(Function):
    """``out = a`` with ``out[where] = src[window]`` (``add``: accumulated, repeats summing)."""

    def forward(self, a, src, where=(), window=(), add=False):
        self.where, self.window, self.add, self.src_shape = where, window, add, getattr(src, "shape", ())
        out = a.copy()
        _scatter_into(out, src, where, window, add)
        return out

    def backward(self, g):
        ga = gs = None
        if self.needs_input_grad[0]:
            ga = g
            if not self.add:
                ga = g.copy()
                ga[self.where] = 0  # overwritten positions take no gradient from the input
        if self.needs_input_grad[1]:
            gs = get_array_module(g).zeros(self.src_shape, dtype=g.dtype)
            gs[self.window] = g[self.where]
        return ga, gs


def _scatter_src(x, dim, index, src, value, op):
    """(src as an array or number, where, window) after PyTorch's checks."""
    if isinstance(src, numbers.Number) and value is None:
        src, value = None, src
    if (src is None) == (value is None):
        raise TypeError(f"{op}(): give exactly one of src (a Tensor) or value (a number)")
    if value is not None:
        src = _fill_value(value, x, op)
        src = src.item() if isinstance(src, Tensor) else src
    where, window = _scatter_args(x, dim, index, src, op)
    return src, where, window


def scatter(input, dim, index, src=None, value=None):  # noqa: A002
    """``out = input`` with ``out[index[i][j]][j] = src[i][j]`` for dim 0 (any dim alike), as
    torch.scatter; ``value=`` writes one number instead of ``src``. Where index repeats a
    position, which write wins is unspecified (as in PyTorch).

    Args:
        input: the tensor written into (not modified; see ``Tensor.scatter_``).
        dim: the axis that ``index`` indexes.
        index: an int64 tensor with input's number of dims, no larger than ``src``.
        src: the values (a Tensor of input's dtype); or ``value``: a number.

    Example:
        >>> dtrain.zeros(3).scatter(0, dtrain.tensor([2, 0]), dtrain.tensor([5., 7.]))
        tensor([7., 0., 5.])
    """
    src, where, window = _scatter_src(input, dim, index, src, value, "scatter")
    return Scatter.apply(input, src, where=where, window=window, add=False)


def scatter_add(input, dim, index, src):  # noqa: A002
    """``out = input`` plus ``src[i][j]`` added at ``out[index[i][j]][j]`` (dim 0); repeated
    positions accumulate.

    Example:
        >>> dtrain.zeros(3).scatter_add(0, dtrain.tensor([0, 0, 2]), dtrain.ones(3))
        tensor([2., 0., 1.])
    """
    if not isinstance(src, Tensor):
        raise TypeError(f"scatter_add(): src must be a Tensor, got {type(src).__name__}")
    src, where, window = _scatter_src(input, dim, index, src, None, "scatter_add")
    return Scatter.apply(input, src, where=where, window=window, add=True)


def scatter_(x, dim, index, src=None, value=None):
    """In-place ``scatter``; returns ``x``."""
    src, where, window = _scatter_src(x, dim, index, src, value, "scatter_")
    x._check_inplace("scatter_")
    _scatter_into(x.array, src.array if isinstance(src, Tensor) else src, where, window, add=False)
    return x


def scatter_add_(x, dim, index, src):
    """In-place ``scatter_add``; returns ``x``."""
    if not isinstance(src, Tensor):
        raise TypeError(f"scatter_add_(): src must be a Tensor, got {type(src).__name__}")
    src, where, window = _scatter_src(x, dim, index, src, None, "scatter_add_")
    x._check_inplace("scatter_add_")
    _scatter_into(x.array, src.array, where, window, add=True)
    return x


def nonzero(x, as_tuple=False):
    idx = get_array_module(x.array).nonzero(x.array)
    if as_tuple:
        return tuple(Tensor._wrap(i.astype(dtypes.int64)) for i in idx)
    return Tensor._wrap(get_array_module(x.array).stack(idx, axis=1).astype(dtypes.int64))


@on_input_device
def one_hot(x, num_classes=-1):
    """``x``'s class indices as one-hot rows of ``num_classes`` (-1: ``x.max() + 1``), int64.

    Values outside [0, num_classes) raise RuntimeError: at once on the CPU; on a GPU at the
    next host synchronisation (``.item()``, printing; ``dtrain.tensor.device_checks``), so the
    check costs no synchronisation; ``num_classes=-1`` reads the maximum to the host.

    Example:
        >>> F.one_hot(dtrain.tensor([0, 2]), 3)
        tensor([[1, 0, 0],
                [0, 0, 1]])
    """
    if x.dtype.kind not in "iu":
        raise RuntimeError(f"one_hot is only applicable to index tensors (int64), got {x.dtype}")
    xp = get_array_module(x.array)
    if num_classes == -1:  # the output's shape depends on the values: a host synchronisation on a GPU
        num_classes = int(x.array.max()) + 1 if x.numel() else 0
    if x.numel():  # on a GPU: raised at the next host synchronisation (device_checks)
        device_checks.check_range(x.array, 0, num_classes, ("one_hot", num_classes), lambda lo, hi: RuntimeError(
            f"one_hot: class values must be in [0, {num_classes - 1}], got values in [{lo}, {hi}]"))
    return Tensor._wrap((x.array[..., None] == xp.arange(num_classes)).astype(dtypes.int64))

