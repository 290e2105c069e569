"""pad: constant (negative widths crop), reflect, replicate and circular padding of the
last dims."""
from .. import backend
from ..backend import get_array_module
from ..function import Function


class ConstantPad(Function):
    """Pad with a constant; negative widths crop, as in PyTorch."""

    def forward(self, a, widths=(), value=0):
        xp = get_array_module(a)
        self.src, self.dst, self.shape = [], [], a.shape
        out_shape = []
        for n, (lo, hi) in zip(a.shape, widths):
            out_shape.append(n + lo + hi)
            self.src.append(slice(max(-lo, 0), n - max(-hi, 0)))
            self.dst.append(slice(max(lo, 0), max(lo, 0) + n - max(-lo, 0) - max(-hi, 0)))
        self.src, self.dst = tuple(self.src), tuple(self.dst)
        out = xp.full(out_shape, value, dtype=a.dtype)
        out[self.dst] = a[self.src]
        return out

    def backward(self, g):
        gx = get_array_module(g).zeros(self.shape, dtype=g.dtype)
        gx[self.src] = g[self.dst]
        return gx


class IndexPad(Function):
    """Pad by gathering, per padded dim, the source position of every output position
    (reflect, replicate, circular); the backward scatter-adds the gradient back."""

    def forward(self, a, index=()):
        self.index, self.shape = index, a.shape
        for axis, idx in index:
            a = a.take(idx, axis=axis)
        return a

    def backward(self, g):
        xp = get_array_module(g)
        for axis, idx in reversed(self.index):
            shape = list(g.shape)
            shape[axis] = self.shape[axis]
            out = xp.zeros(shape, dtype=g.dtype)
            backend.scatter_add(out, (slice(None),) * axis + (idx,), g)
            g = out
        return g


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(input, pad, mode="constant", value=None):
    """Pad the last dims of ``input``: ``pad = (left, right)`` for the last dim, then
    ``(top, bottom)`` for the one before, and so on.

    Args:
        input: a Tensor.
        pad: an even-length sequence of ints; in constant mode negative values crop.
        mode: ``'constant'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
        value: the fill value in constant mode (default 0).

    Example:
        >>> F.pad(dtrain.tensor([[1.0, 2.0]]), (1, 0))
        tensor([[0., 1., 2.]])
    """
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: the padding {list(pad)} must have an even length of at most 2 * input.ndim "
                         f"({2 * input.ndim} for input of shape {list(input.shape)})")
    pairs = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(pad) // 2)]
    widths = [(0, 0)] * (input.ndim - len(pairs)) + pairs[::-1]
    if mode == "constant":
        for n, (lo, hi) in zip(input.shape, widths):
            if n + lo + hi < 0:
                raise ValueError(f"pad: padding {list(pad)} gives a negative size for input of shape "
                                 f"{list(input.shape)}")
        return ConstantPad.apply(input, widths=tuple(widths), value=0 if value is None else value)
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"pad: mode {mode!r} is not supported; expected 'constant', 'reflect', "
                                  f"'replicate' or 'circular'")
    if value:
        raise ValueError(f"pad: a fill value is only allowed in constant mode, got value={value} with mode={mode!r}")
    xp = get_array_module(input.array)
    index = []
    for axis, (n, (lo, hi)) in enumerate(zip(input.shape, widths)):
        if (lo, hi) == (0, 0):
            continue
        limit = n - 1 if mode == "reflect" else n if mode == "circular" else float("inf")
        if min(lo, hi) < 0 or max(lo, hi) > limit or n == 0:
            raise ValueError(f"pad: {mode} padding ({lo}, {hi}) of dim {axis} (size {n}) must be non-negative "
                             f"and at most {limit}")
        index.append((axis, xp.pad(xp.arange(n), (lo, hi), mode=_PAD_MODES[mode])))
    return IndexPad.apply(input, index=tuple(index))
