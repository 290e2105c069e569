"""Shape ops: reshape/view, flatten, squeeze/unsqueeze, transpose/permute, expand, repeat,
cat/stack/split/chunk, and the copies that change dtype or device."""
import numbers

from .. import backend
from ..backend import get_array_module
from ..function import Function
from ..tensor import Tensor, _check_dim


def _sizes(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


class Reshape(Function):
    def forward(self, a, shape=()):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)


def reshape(x, *shape):
    shape = _sizes(shape)
    numel = x.numel()
    known, infer = 1, [i for i, s in enumerate(shape) if s == -1]
    for s in shape:
        if s != -1:
            if s < 0:
                raise RuntimeError(f"reshape: invalid shape dimension {s} in {list(shape)}")
            known *= s
    if len(infer) > 1 or (not infer and known != numel) or (infer and (known == 0 or numel % known)):
        raise RuntimeError(f"reshape: shape {list(shape)} is invalid for input of size {numel} "
                           f"(shape {list(x.shape)})")
    if shape == tuple(x.shape):
        return x
    return Reshape.apply(x, shape=shape)


def view(x, *shape):
    # dtrain tensors never alias through view() in a way autograd could see, so view is reshape
    return reshape(x, *shape)


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, 1)
    s = _check_dim(start_dim, x.ndim, "flatten")
    e = _check_dim(end_dim, x.ndim, "flatten")
    if s > e:
        raise RuntimeError(f"flatten() has invalid args: start_dim {start_dim} cannot come after end_dim {end_dim}")
    shape = tuple(x.shape)
    n = 1
    for d in shape[s:e + 1]:
        n *= d
    return reshape(x, shape[:s] + (n,) + shape[e + 1:])


def unflatten(x, dim, sizes):
    d = _check_dim(dim, x.ndim, "unflatten")
    shape = tuple(x.shape)
    return reshape(x, shape[:d] + tuple(sizes) + shape[d + 1:])


def squeeze(x, dim=None):
    shape = tuple(x.shape)
    if dim is None:
        new = tuple(s for s in shape if s != 1)
    else:
        dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
        dims = {_check_dim(d, x.ndim, "squeeze") for d in dims}
        new = tuple(s for i, s in enumerate(shape) if not (i in dims and s == 1))
    return reshape(x, new)


def unsqueeze(x, dim):
    d = _check_dim(dim, x.ndim + 1, "unsqueeze")
    shape = tuple(x.shape)
    return reshape(x, shape[:d] + (1,) + shape[d:])


class Permute(Function):
    def forward(self, a, dims=()):
        self.dims = dims
        return a.transpose(dims)

    def backward(self, g):
        inverse = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inverse[d] = i
        return g.transpose(inverse)


def permute(x, *dims):
    dims = _sizes(dims)
    if len(dims) != x.ndim:
        raise RuntimeError(f"permute: number of dims {len(dims)} doesn't match the tensor's {x.ndim} dims "
                           f"(shape {list(x.shape)})")
    dims = tuple(_check_dim(d, x.ndim, "permute") for d in dims)
    if len(set(dims)) != len(dims):
        raise RuntimeError(f"permute: repeated dim in {list(dims)}")
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    if x.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return x
    d0, d1 = _check_dim(dim0, x.ndim, "transpose"), _check_dim(dim1, x.ndim, "transpose")
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(x, dims=tuple(dims))


def t(x):
    if x.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D; use transpose()")
    return transpose(x, 0, 1) if x.ndim == 2 else x


class Expand(Function):
    def forward(self, a, shape=()):
        self.shape = a.shape
        return get_array_module(a).broadcast_to(a, shape)

    def backward(self, g):
        from ..function import unbroadcast
        return unbroadcast(g, self.shape)


def expand(x, *sizes):
    sizes = _sizes(sizes)
    shape = tuple(x.shape)
    if len(sizes) < len(shape):
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
                           f"the number of dimensions in the tensor ({len(shape)})")
    lead = len(sizes) - len(shape)
    target = []
    for i, s in enumerate(sizes):
        cur = shape[i - lead] if i >= lead else None
        if s == -1:
            if cur is None:
                raise RuntimeError(f"expand: -1 is not allowed in a leading, non-existing dimension ({list(sizes)})")
            s = cur
        elif cur is not None and cur != 1 and cur != s:
            raise RuntimeError(f"expand: the expanded size of the tensor ({s}) must match the existing size "
                               f"({cur}) at non-singleton dimension {i}. Target sizes: {list(sizes)}. "
                               f"Tensor sizes: {list(shape)}")
        target.append(s)
    return Expand.apply(x, shape=tuple(target))


def expand_as(x, other):
    return expand(x, *other.shape)


def broadcast_to(x, shape):
    return expand(x, *shape)


class Repeat(Function):
    def forward(self, a, reps=()):
        self.shape, self.reps = a.shape, reps
        return get_array_module(a).tile(a, reps)

    def backward(self, g):
        # split every dim into (rep, size) and sum the rep axes
        split = []
        for r, n in zip(self.reps, (1,) * (len(self.reps) - len(self.shape)) + tuple(self.shape)):
            split += [r, n]
        g = g.reshape(split).sum(axis=tuple(range(0, len(split), 2)))
        return g.reshape(self.shape)


def repeat(x, *reps):
    reps = _sizes(reps)
    if len(reps) < x.ndim:
        raise RuntimeError(f"repeat: number of repeat dims ({len(reps)}) can not be smaller than the number "
                           f"of dimensions of the tensor ({x.ndim})")
    if any(r < 0 for r in reps):
        raise RuntimeError(f"repeat: repeats can not be negative, got {list(reps)}")
    return Repeat.apply(x, reps=reps)


class Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g


def clone(x):
    return Clone.apply(x)


def contiguous(x):
    return x if x.is_contiguous() else clone(x)


class Cast(Function):
    def forward(self, a, dtype=None):
        self.dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.dtype)


class ToDevice(Function):
    def forward(self, a, device=None):
        self.device = backend.device_of(a)
        return backend.to_device(a, device)

    def backward(self, g):
        return backend.to_device(g, self.device)


# ---- joining and splitting ----------------------------------------------------------

class Cat(Function):
    def forward(self, *arrays, axis=0):
        self.axis, self.sizes = axis, [a.shape[axis] for a in arrays]
        return get_array_module(*arrays).concatenate(arrays, axis=axis)

    def backward(self, g):
        out, start = [], 0
        for n, need in zip(self.sizes, self.needs_input_grad):
            idx = [slice(None)] * g.ndim
            idx[self.axis] = slice(start, start + n)
            out.append(g[tuple(idx)] if need else None)
            start += n
        return tuple(out)


def cat(tensors, dim=0):
    """Join tensors along an existing dim; shapes must match elsewhere."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("cat: expected a non-empty list of Tensors")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"cat: expected a sequence of Tensors, got {[type(t).__name__ for t in tensors]}")
    # PyTorch's legacy rule: 1-D empty tensors are skipped
    kept = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]
    ref = kept[0]
    axis = _check_dim(dim, ref.ndim, "cat")
    if ref.ndim == 0:
        raise RuntimeError("cat: zero-dimensional tensor cannot be concatenated")
    for i, t in enumerate(kept):
        if t.ndim != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(t.shape, ref.shape)) if j != axis):
            raise RuntimeError(f"cat: sizes of tensors must match except in dimension {axis}: expected "
                               f"{list(ref.shape)} but got {list(t.shape)} for tensor number {i} in the list")
    from .. import dtypes
    dtype = ref.dtype
    for t in kept[1:]:
        dtype = dtypes.promote(dtype, t.dtype)
    return Cat.apply(*[t.to(dtype) for t in kept], axis=axis)


concat = cat


def stack(tensors, dim=0):
    """Join tensors along a new dim; all shapes must be equal."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    for i, t in enumerate(tensors):
        if tuple(t.shape) != tuple(tensors[0].shape):
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} "
                               f"at entry 0 and {list(t.shape)} at entry {i}")
    d = _check_dim(dim, tensors[0].ndim + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)


def split(x, split_size_or_sections, dim=0):
    """Pieces of ``split_size`` along dim (the last may be smaller), or of the given sizes."""
    d = _check_dim(dim, x.ndim, "split")
    n = x.shape[d]
    if isinstance(split_size_or_sections, numbers.Integral):
        size = int(split_size_or_sections)
        if size <= 0 and n:
            raise RuntimeError(f"split: split_size must be positive, got {size}")
        sizes = [min(size, n - s) for s in range(0, n, size)] if n else [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's "
                               f"size at dimension {d}), but got split_sizes={sizes}")
    out, start = [], 0
    for s in sizes:
        idx = [slice(None)] * x.ndim
        idx[d] = slice(start, start + s)
        out.append(x[tuple(idx)])
        start += s
    return tuple(out)


def chunk(x, chunks, dim=0):
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    n = x.shape[_check_dim(dim, x.ndim, "chunk")]
    size = -(-n // chunks) if n else 1
    return split(x, size, dim)


def unbind(x, dim=0):
    d = _check_dim(dim, x.ndim, "unbind")
    return tuple(squeeze(p, d) for p in split(x, 1, d))


class Flip(Function):
    def forward(self, a, axes=()):
        self.axes = axes
        return get_array_module(a).flip(a, axes)

    def backward(self, g):
        return get_array_module(g).flip(g, self.axes)


def flip(x, dims):
    """Reverse the order of elements along ``dims`` (an int or a tuple)."""
    dims = (dims,) if isinstance(dims, numbers.Integral) else dims
    axes = tuple(_check_dim(d, x.ndim, "flip") for d in dims)
    return Flip.apply(x, axes=axes) if x.ndim else clone(x)


def narrow(input, dim, start, length):  # noqa: A002
    """The slice ``start:start + length`` of ``dim`` (a view); ``start`` may be negative.

    Example:
        >>> dtrain.arange(6).narrow(0, 2, 3)
        tensor([2, 3, 4])
    """
    if input.ndim == 0:
        raise RuntimeError("narrow() cannot be applied to a 0-dim tensor.")
    d = _check_dim(dim, input.ndim, "narrow")
    n = input.shape[d]
    start = int(start)
    if not -n <= start <= n:
        raise IndexError(f"narrow(): start out of range (expected to be in range of [{-n}, {n}], but got {start})")
    if start < 0:
        start += n
    if length < 0:
        raise RuntimeError(f"narrow(): length must be non-negative, got {length}")
    if start + length > n:
        raise RuntimeError(f"narrow(): start ({start}) + length ({length}) exceeds dimension size ({n}).")
    return input[(slice(None),) * d + (slice(start, start + int(length)),)]


class Roll(Function):
    def forward(self, a, shifts=(), axes=()):
        self.shifts, self.axes = shifts, axes
        return self._roll(a, shifts)

    def _roll(self, a, shifts):
        xp = get_array_module(a)
        if self.axes is None:  # flattened, then restored
            return xp.roll(a.reshape(-1), shifts).reshape(a.shape)
        return xp.roll(a, shifts, self.axes)

    def backward(self, g):
        return self._roll(g, tuple(-s for s in self.shifts) if self.axes is not None else -self.shifts)


def roll(input, shifts, dims=None):  # noqa: A002
    """Shift elements along ``dims`` cyclically by ``shifts`` (ints or tuples of equal
    length); without ``dims`` the flattened tensor is rolled and the shape restored.

    Example:
        >>> dtrain.roll(dtrain.arange(4), 1)
        tensor([3, 0, 1, 2])
    """
    if dims is None:
        if not isinstance(shifts, numbers.Integral):
            shifts = tuple(shifts)
            if len(shifts) != 1:
                raise RuntimeError(f"roll: shifts {list(shifts)} given without dims must be one int")
            shifts = shifts[0]
        return Roll.apply(input, shifts=int(shifts), axes=None)
    shifts = (shifts,) if isinstance(shifts, numbers.Integral) else tuple(shifts)
    dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"roll: shifts and dimensions must align. shifts: {len(shifts)}, dims: {len(dims)}")
    axes = tuple(_check_dim(d, input.ndim, "roll") for d in dims)
    return Roll.apply(input, shifts=tuple(int(s) for s in shifts), axes=axes)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):  # noqa: A002
    """Repeat each element ``repeats`` times along ``dim`` (flattened when None);
    ``repeats`` is an int or a 1-D int tensor with one count per element. With a single
    int tensor argument, ``repeat_interleave(r)`` repeats ``arange(len(r))``.

    Example:
        >>> dtrain.repeat_interleave(dtrain.tensor([1, 2]), 2)
        tensor([1, 1, 2, 2])
    """
    from .. import dtypes
    if repeats is None:  # repeat_interleave(repeats): the indices themselves
        repeats, input = input, None
    if isinstance(repeats, Tensor):
        if repeats.dtype.kind not in "iu":
            raise RuntimeError(f"repeat_interleave: repeats must be an int tensor, got dtype {repeats.dtype}")
        if repeats.ndim > 1:
            raise RuntimeError(f"repeat_interleave: repeats must be 0-dim or 1-dim tensor, got shape "
                               f"{list(repeats.shape)}")
        counts = repeats.array.reshape(-1)
        if counts.size and int(counts.min()) < 0:
            raise RuntimeError("repeat_interleave: repeats can not be negative")
    elif isinstance(repeats, numbers.Integral):
        if repeats < 0:
            raise RuntimeError(f"repeat_interleave: repeats can not be negative, got {repeats}")
        counts = int(repeats)
    else:
        raise TypeError(f"repeat_interleave: repeats must be an int or an int Tensor, got {type(repeats).__name__}")
    if input is None:
        xp = get_array_module(counts)
        return Tensor._wrap(backend.repeat(xp.arange(counts.size, dtype=dtypes.int64), counts))
    if dim is None:
        input, dim = input.reshape(-1), 0
    d = _check_dim(dim, input.ndim, "repeat_interleave")
    n = input.shape[d] if input.ndim else 1
    if not isinstance(counts, int) and counts.size not in (1, n):
        raise RuntimeError(f"repeat_interleave: repeats must have the same size as input along dim {d}: "
                           f"got {counts.size} repeats for size {n}")
    xp = get_array_module(input.array)
    idx = backend.repeat(xp.arange(n, dtype=dtypes.int64), counts)
    if output_size is not None and idx.size != output_size:
        raise RuntimeError(f"repeat_interleave: output_size {output_size} does not match the {idx.size} "
                           f"elements the repeats give")
    from .index import index_select
    if input.ndim == 0:
        input = input.reshape(1)
    return index_select(input, d, Tensor._wrap(idx))
