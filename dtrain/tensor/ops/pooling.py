"""Pooling on NCHW (and NCL) tensors, vectorized: max, average and adaptive pools.

Fixed windows work on strided slices of the input, one slice per kernel offset (a loop over
kh * kw offsets, never over pixels); their input gradient scatters back the same way.
Adaptive max pooling gathers its (possibly overlapping) bins first. The 1-D pools are the
2-D ones over a height of 1.
"""
from .. import dtypes
from ..backend import get_array_module, is_cuda_array, scatter_add
from ..function import Function, on_input_device
from ..tensor import Tensor
from .conv import _batched, _disjoint, _geometry, _offsets, _pad, _pair, _put, _scatter, _tuple
from .linalg import matmul
from .workspace import output


def _as_given(v, dims):
    """An argument as the caller gave its shape: 1-D ops run on a height of 1."""
    return v[1] if dims == 1 else v


def _pool_args(op, input, x, kernel, stride, padding, dilation, ceil_mode, dims):
    """Checks the window against the (batched, 4-D) input x; the output size and full padding."""
    for p, k, d in zip(padding, kernel, dilation):
        if 2 * p > d * (k - 1) + 1:
            raise ValueError(f"{op}: pad should be at most half of effective kernel size, but got "
                             f"padding={_as_given(padding, dims)}, kernel_size={_as_given(kernel, dims)} and "
                             f"dilation={_as_given(dilation, dims)}")
    pads = tuple((p, p) for p in padding)
    return _geometry(op, x.shape, kernel, stride, pads, dilation, ceil_mode, shown=input.shape, dims=dims)


def _window_2d(op, input, kernel_size, stride, padding, dilation):
    x, unbatched = _batched(input, op)
    kernel = _pair(kernel_size, "kernel_size", op, 1)
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride", op, 1)
    return x, unbatched, kernel, stride, _pair(padding, "padding", op, 0), _pair(dilation, "dilation", op, 1)


def _window_1d(op, input, kernel_size, stride, padding, dilation):
    """The 1-D window as a 2-D one of height 1, and x with that height."""
    x, unbatched = _batched(input, op, dims=1)
    kernel = _tuple(kernel_size, 1, "kernel_size", op, 1)
    stride = kernel if stride is None or stride == [] else _tuple(stride, 1, "stride", op, 1)
    return (x.unsqueeze(2), unbatched, (1,) + kernel, (1,) + stride, (0,) + _tuple(padding, 1, "padding", op, 0),
            (1,) + _tuple(dilation, 1, "dilation", op, 1))


# ---- max --------------------------------------------------------------------------------

class MaxPool2d(Function):
    """Records a max pool done by _running_max: its output and, per output, the winning offset."""

    def forward(self, x, out=None, argmax=None, x_shape=(), pads=(), offsets=(), disjoint=True):
        self.argmax, self.x_shape, self.pads, self.offsets, self.disjoint = argmax, x_shape, pads, offsets, disjoint
        return out

    def backward(self, g):
        xp = get_array_module(g)
        hit = xp.empty(g.shape, dtype=bool)

        def g_of(i, out):
            return xp.multiply(g, xp.equal(self.argmax, i, out=hit), out=out)
        return _scatter(g_of, self.x_shape, self.pads, self.offsets, self.disjoint, xp, g.dtype)


def _running_max(views):
    """The elementwise max over ``views`` (equal shapes) and the index of the view holding it:
    the first maximum, or the last NaN (as PyTorch's CPU kernels)."""
    xp = get_array_module(views[0])
    kind = xp.int8 if len(views) < 128 else xp.int32
    argmax, step = xp.zeros(views[0].shape, dtype=kind), xp.empty(views[0].shape, dtype=kind)
    wins = xp.empty(views[0].shape, dtype=bool)
    # NaN needs a test per view. On the CPU it runs only when the cheap pass found a NaN in
    # the result; on a GPU that look would be a host synchronisation: always NaN-aware there
    rules = (False,) if not dtypes.is_floating(views[0].dtype) else (True,) if is_cuda_array(views[0]) else (False, True)
    for nan_rule in rules:
        out = output(xp, views[0].shape, views[0].dtype)  # a pooled buffer when large: no fresh pages
        xp.copyto(out, views[0])
        for i, s in enumerate(views[1:], 1):
            xp.greater(s, out, out=wins)
            if nan_rule:
                wins |= s != s
            xp.maximum(out, s, out=out)  # NaN propagates
            # views come in increasing order, so a winner's index is above every earlier one:
            # a max updates argmax (masked assignment is several times slower)
            xp.maximum(argmax, xp.multiply(wins, kind(i), out=step), out=argmax)
        if nan_rule or not bool(xp.isnan(out).any()):
            break
        argmax[...] = 0
    return out, argmax


def _max_pool(op, input, x, unbatched, kernel, stride, padding, dilation, ceil_mode, return_indices, dims):
    out, pads = _pool_args(op, input, x, kernel, stride, padding, dilation, ceil_mode, dims)
    xp = get_array_module(x.array)
    low = -xp.inf if dtypes.is_floating(x.dtype) else xp.iinfo(x.dtype).min
    offsets = _offsets(kernel, stride, dilation, out)
    xpad = _pad(x.array, pads, low)
    values, argmax = _running_max([xpad[(Ellipsis,) + sl] for sl in offsets])
    y = MaxPool2d.apply(x, out=values, argmax=argmax, x_shape=x.shape, pads=pads, offsets=offsets,
                        disjoint=_disjoint(kernel, stride, dilation))
    if dims == 1:
        y = y.squeeze(2)
    y = y.squeeze(0) if unbatched else y
    if not return_indices:
        return y
    flat = argmax.astype("int64")
    p, q = flat // kernel[1], flat % kernel[1]
    rows = xp.arange(out[0]).reshape(-1, 1) * stride[0] + p * dilation[0] - pads[0][0]
    cols = xp.arange(out[1]) * stride[1] + q * dilation[1] - pads[1][0]
    idx = rows.astype("int64") * x.shape[3] + cols
    idx = idx[:, :, 0] if dims == 1 else idx
    return y, Tensor._wrap(idx[0] if unbatched else idx)


@on_input_device
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over each kH x kW window of an NCHW input.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size: an int or a pair.
        stride: defaults to kernel_size.
        padding: implicit -inf padding on both sides, at most half the kernel.
        dilation: spacing between window elements.
        ceil_mode: round the output size up (a last, partial window) instead of down.
        return_indices: also return, per output, the flat index h * W + w of the max in its
            input plane (as PyTorch).

    Example:
        >>> F.max_pool2d(dtrain.arange(16.0).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """
    op = "max_pool2d"
    x, unbatched, kernel, stride, padding, dilation = _window_2d(op, input, kernel_size, stride, padding, dilation)
    return _max_pool(op, input, x, unbatched, kernel, stride, padding, dilation, ceil_mode, return_indices, 2)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over each window of length kernel_size of an NCL input.

    Args:
        input: (N, C, L) or (C, L).
        kernel_size, stride (default kernel_size), padding (-inf, at most half the kernel),
            dilation: ints (or 1-tuples).
        ceil_mode: round the output size up instead of down.
        return_indices: also return the position of each max along L.

    Example:
        >>> F.max_pool1d(dtrain.tensor([[[1.0, 3.0, 2.0, 0.0]]]), 2)
        tensor([[[3., 2.]]])
    """
    op = "max_pool1d"
    x, unbatched, kernel, stride, padding, dilation = _window_1d(op, input, kernel_size, stride, padding, dilation)
    return _max_pool(op, input, x, unbatched, kernel, stride, padding, dilation, ceil_mode, return_indices, 1)


class MaxAt(Function):
    """Records a max taken elsewhere: per output, the flat position h * W + w of its max in
    the input plane; the gradient goes back there (positions may repeat: they accumulate)."""

    def forward(self, x, out=None, index=None):
        self.index, self.x_shape = index, x.shape
        return out

    def backward(self, g):
        xp = get_array_module(g)
        n, c, h, w = self.x_shape
        gx = xp.zeros((n * c, h * w), dtype=g.dtype)
        planes = xp.arange(n * c).reshape(-1, 1)
        scatter_add(gx, (planes, self.index.reshape(n * c, -1)), g.reshape(n * c, -1))
        return gx.reshape(self.x_shape)


def _adaptive_bins(xp, n, o):
    """(o, k): the input positions of each of PyTorch's bins [floor(i n / o), ceil((i + 1) n / o)),
    padded to the longest bin by repeating a bin's last position (a repeat never wins a max)."""
    i = xp.arange(o)[:, None]
    start, end = i * n // o, ((i + 1) * n + o - 1) // o
    k = int((end - start).max())
    return xp.minimum(start + xp.arange(k), end - 1)


def _adaptive_args(op, input, output_size, dims):
    """(x, unbatched, (H_out, W_out)) for an adaptive pool: x is the input batched and, for a
    1-D pool, with a height of 1; output_size an int, a pair or a 1-tuple, where None keeps
    that input size."""
    x, unbatched = _batched(input, op, dims=dims)
    if dims == 1:
        x = x.unsqueeze(2)
    given = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * dims
    if len(given) == dims:
        given = tuple(n if o is None else o for n, o in zip(x.shape[-dims:], given))
    size = (1,) + _tuple(given, 1, "output_size", op, 1) if dims == 1 else _pair(given, "output_size", op, 1)
    if min(x.shape[2:]) < 1:
        raise ValueError(f"{op}: input of shape {list(input.shape)} has an empty spatial dimension")
    return x, unbatched, size


def _adaptive_max(op, x, unbatched, size, return_indices, dims):
    xp = get_array_module(x.array)
    n, c, h, w = x.shape
    rows, cols = _adaptive_bins(xp, h, size[0]), _adaptive_bins(xp, w, size[1])
    cand = x.array[:, :, rows][..., cols]  # (N, C, Ho, kh, Wo, kw)
    kh, kw = rows.shape[1], cols.shape[1]
    values, argmax = _running_max([cand[:, :, :, a, :, b] for a in range(kh) for b in range(kw)])
    argmax = argmax.astype("int64")
    index = rows[xp.arange(size[0])[:, None], argmax // kw] * w + cols[xp.arange(size[1]), argmax % kw]
    y = MaxAt.apply(x, out=values, index=index)
    if dims == 1:
        y, index = y.squeeze(2), index[:, :, 0]
    y = y.squeeze(0) if unbatched else y
    return (y, Tensor._wrap(index[0] if unbatched else index)) if return_indices else y


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max pooling to a fixed output size, whatever the input size; bins as PyTorch's (they
    may overlap by one).

    Args:
        input: (N, C, H, W) or (C, H, W).
        output_size: an int or a pair (H_out, W_out); None in the pair keeps that input size.
        return_indices: also return the flat index h * W + w of each max in its input plane.

    Example:
        >>> F.adaptive_max_pool2d(dtrain.arange(16.0).reshape(1, 1, 4, 4), 1)
        tensor([[[[15.]]]])
    """
    op = "adaptive_max_pool2d"
    return _adaptive_max(op, *_adaptive_args(op, input, output_size, 2), return_indices, 2)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """Max pooling of an NCL input to a fixed length ``output_size``; bins as PyTorch's.

    Example:
        >>> F.adaptive_max_pool1d(dtrain.tensor([[[1.0, 5.0, 2.0, 4.0]]]), 2)
        tensor([[[5., 4.]]])
    """
    op = "adaptive_max_pool1d"
    return _adaptive_max(op, *_adaptive_args(op, input, output_size, 1), return_indices, 1)


# ---- average ----------------------------------------------------------------------------

class AvgPool2d(Function):
    def forward(self, x, pads=(), offsets=(), divisor=1, disjoint=True):
        xpad = _pad(x, pads, 0)
        out = xpad[(Ellipsis,) + offsets[0]].copy()
        for sl in offsets[1:]:
            out += xpad[(Ellipsis,) + sl]
        out /= divisor
        self.x_shape, self.pads, self.offsets, self.divisor, self.disjoint = x.shape, pads, offsets, divisor, disjoint
        return out

    def backward(self, g):
        xp = get_array_module(g)
        gd = g / self.divisor
        return _scatter(lambda i, out: _put(xp, gd, out), self.x_shape, self.pads, self.offsets, self.disjoint, xp,
                        g.dtype)


def _window_counts(xp, n, k, s, pad, o, include_pad):
    """Elements per window along one dim, in PyTorch's rule: windows are clipped to the
    (symmetrically) padded input, and also to the input itself unless include_pad."""
    start = xp.arange(o) * s
    end = xp.minimum(start + k, n + 2 * pad)
    if include_pad:
        return end - start
    return xp.minimum(end, pad + n) - xp.maximum(start, pad)


def _avg_pool(op, input, x, unbatched, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override,
              dims):
    out, pads = _pool_args(op, input, x, kernel, stride, padding, (1, 1), ceil_mode, dims)
    if not dtypes.is_floating(x.dtype):
        raise RuntimeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")
    if x.dtype.name == "bfloat16":  # window sums and divisor in float32, rounded once, as torch (ml_dtypes sums in 8 bits)
        y = _avg_pool(op, input, x.float(), False, kernel, stride, padding, ceil_mode, count_include_pad,
                      divisor_override, dims)
        return (y.squeeze(0) if unbatched else y).to(x.dtype)
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero")
        divisor = divisor_override
    else:
        xp = get_array_module(x.array)
        counts = [_window_counts(xp, n, k, s, p, o, count_include_pad)
                  for n, k, s, p, o in zip(x.shape[2:], kernel, stride, padding, out)]
        divisor = (counts[0][:, None] * counts[1]).astype(x.dtype)
    y = AvgPool2d.apply(x, pads=pads, offsets=_offsets(kernel, stride, (1, 1), out), divisor=divisor,
                        disjoint=_disjoint(kernel, stride, (1, 1)))
    y = y.squeeze(2) if dims == 1 else y
    return y.squeeze(0) if unbatched else y


@on_input_device
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over each kH x kW window of an NCHW input.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size: an int or a pair.
        stride: defaults to kernel_size.
        padding: implicit zero padding on both sides, at most half the kernel.
        ceil_mode: round the output size up instead of down.
        count_include_pad: count the zero padding in the divisor.
        divisor_override: divide by this number instead.

    Example:
        >>> F.avg_pool2d(dtrain.ones(1, 1, 4, 4), 2).shape
        dtrain.Size([1, 1, 2, 2])
    """
    op = "avg_pool2d"
    x, unbatched, kernel, stride, padding, _ = _window_2d(op, input, kernel_size, stride, padding, 1)
    return _avg_pool(op, input, x, unbatched, kernel, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, 2)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over each window of length kernel_size of an NCL input.

    Args:
        input: (N, C, L) or (C, L).
        kernel_size, stride (default kernel_size), padding (zeros, at most half the kernel): ints.
        ceil_mode: round the output size up instead of down.
        count_include_pad: count the zero padding in the divisor.

    Example:
        >>> F.avg_pool1d(dtrain.tensor([[[1.0, 3.0, 2.0, 0.0]]]), 2)
        tensor([[[2., 1.]]])
    """
    op = "avg_pool1d"
    x, unbatched, kernel, stride, padding, _ = _window_1d(op, input, kernel_size, stride, padding, 1)
    return _avg_pool(op, input, x, unbatched, kernel, stride, padding, ceil_mode, count_include_pad, None, 1)


def _adaptive_matrix(xp, n, o, dtype):
    """(o, n): row i averages input positions [floor(i n / o), ceil((i + 1) n / o))."""
    i = xp.arange(o)[:, None]
    start, end = i * n // o, ((i + 1) * n + o - 1) // o
    j = xp.arange(n)
    return (((j >= start) & (j < end)) / (end - start)).astype(dtype)


def _adaptive_avg(op, x, unbatched, size, dims):
    if not dtypes.is_floating(x.dtype):
        raise RuntimeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")
    (ho, wo), (n, c, h, w) = size, x.shape
    if h % ho == 0 and w % wo == 0:  # equal bins: a reshape view and a mean
        y = x.reshape(n, c, ho, h // ho, wo, w // wo).mean(dim=(3, 5))
    else:
        xp = get_array_module(x.array)
        rows = Tensor._wrap(_adaptive_matrix(xp, h, ho, x.dtype))
        cols = Tensor._wrap(_adaptive_matrix(xp, w, wo, x.dtype).T.copy())
        y = matmul(matmul(rows, x), cols)
    y = y.squeeze(2) if dims == 1 else y
    return y.squeeze(0) if unbatched else y


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size; bins as PyTorch's (they may overlap by one).

    Args:
        input: (N, C, H, W) or (C, H, W).
        output_size: an int or a pair (H_out, W_out); None in the pair keeps that input size.

    Example:
        >>> F.adaptive_avg_pool2d(dtrain.ones(2, 3, 7, 7), 1).shape
        dtrain.Size([2, 3, 1, 1])
    """
    op = "adaptive_avg_pool2d"
    return _adaptive_avg(op, *_adaptive_args(op, input, output_size, 2), 2)


def adaptive_avg_pool1d(input, output_size):
    """Average pooling of an NCL input to a fixed length ``output_size``; bins as PyTorch's.

    Example:
        >>> F.adaptive_avg_pool1d(dtrain.tensor([[[1.0, 3.0, 2.0, 4.0]]]), 2)
        tensor([[[2., 3.]]])
    """
    op = "adaptive_avg_pool1d"
    return _adaptive_avg(op, *_adaptive_args(op, input, output_size, 1), 1)
