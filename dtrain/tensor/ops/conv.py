"""2-D convolution and pooling on NCHW tensors, vectorized.

conv2d is im2col through a zero-copy strided window view, then one batched matmul (groups
are a batch dim of it); its input gradient scatters back one kernel offset at a time (a loop
over kh * kw offsets, never over pixels). Pools work the same way on strided slices.
"""
import numbers

from ..backend import get_array_module, sliding_window_view
from ..function import Function
from ..tensor import Tensor
from .linalg import matmul
from .shape import unsqueeze


def _pair(v, name, op, minimum):
    t = (v, v) if isinstance(v, numbers.Integral) else tuple(v) if isinstance(v, (tuple, list)) else None
    if t is None or len(t) != 2 or not all(isinstance(i, numbers.Integral) and i >= minimum for i in t):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints >= {minimum}, got {v!r}")
    return int(t[0]), int(t[1])


def _batched(x, op):
    """(N, C, H, W) as is; an unbatched (C, H, W) gets a batch dim (the caller drops it again)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise RuntimeError(f"{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape {list(x.shape)}")
    return (x, False) if x.ndim == 4 else (unsqueeze(x, 0), True)


def _geometry(op, x, kernel, stride, pads, dilation, ceil_mode=False):
    """The output size, and the padding ((top, bottom), (left, right)) that fits every window:
    in ceil_mode the last window may reach past the requested padding."""
    out, full = [], []
    for n, k, s, (lo, hi), d in zip(x.shape[2:], kernel, stride, pads, dilation):
        span = n + lo + hi - d * (k - 1) - 1
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + lo:  # the last window must start inside the input or left padding
            o -= 1
        out.append(o)
        full.append((lo, max(hi, (o - 1) * s + d * (k - 1) + 1 - n - lo)))
    if min(out) < 1:
        raise ValueError(f"{op}: input of shape {list(x.shape)} (spatial {x.shape[2]}x{x.shape[3]}, padding "
                         f"{[list(p) for p in pads]}) is too small for kernel {kernel[0]}x{kernel[1]} with "
                         f"dilation {dilation[0]}x{dilation[1]}: the output size would be {out[0]}x{out[1]}")
    return tuple(out), tuple(full)


def _pad(a, pads, value):
    """``a`` (N, C, H, W) padded by ((top, bottom), (left, right)) with ``value``."""
    if not any(pads[0] + pads[1]):
        return a
    (top, bottom), (left, right) = pads
    n, c, h, w = a.shape
    out = get_array_module(a).full((n, c, h + top + bottom, w + left + right), value, dtype=a.dtype)
    out[:, :, top:top + h, left:left + w] = a  # 1.7x faster than xp.pad
    return out


def _offsets(kernel, stride, dilation, out):
    """Per kernel offset (p, q), row-major: the (rows, cols) slices of the padded input that the
    offset reads, one element per output position."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    return [(slice(p * dh, p * dh + sh * (ho - 1) + 1, sh), slice(q * dw, q * dw + sw * (wo - 1) + 1, sw))
            for p in range(kh) for q in range(kw)]


def _disjoint(kernel, stride, dilation):
    """True when no input position is read by two windows (each offset writes its own cells)."""
    return all(s > d * (k - 1) for k, s, d in zip(kernel, stride, dilation))


def _scatter(g_of, shape, pads, offsets, disjoint, xp, dtype):
    """The input gradient: offset i's output-shaped gradient ``g_of(i, out)`` added at the
    positions it read, padding cropped. When windows are disjoint, ``g_of`` writes straight
    into ``out`` (the target view); otherwise ``out`` is None and it returns an array."""
    n, c, h, w = shape
    (top, bottom), (left, right) = pads
    gx = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=dtype)
    for i, (rows, cols) in enumerate(offsets):
        if disjoint:
            g_of(i, gx[:, :, rows, cols])
        else:
            gx[:, :, rows, cols] += g_of(i, None)
    return gx[:, :, top:top + h, left:left + w] if any(pads[0] + pads[1]) else gx


def _put(xp, a, out):
    """``a`` itself, or copied into ``out`` (a ``g_of`` for _scatter that computes nothing)."""
    if out is None:
        return a
    xp.copyto(out, a)
    return out


# ---- conv2d -----------------------------------------------------------------------------

class Conv2d(Function):
    def forward(self, x, w, b=None, stride=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), out=(1, 1), groups=1):
        n, c = x.shape[:2]
        o, cg, kh, kw = w.shape
        (ho, wo), (dh, dw), (sh, sw) = out, dilation, stride
        xpad = _pad(x, pads, 0)
        win = sliding_window_view(xpad, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
        win = win[:, :, :sh * (ho - 1) + 1:sh, :sw * (wo - 1) + 1:sw, ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
        # im2col, the one copy: (N, G, Cg*kh*kw, Ho*Wo), so that the product lands in NCHW order
        cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, groups, cg * kh * kw, ho * wo)
        wm = w.reshape(groups, o // groups, cg * kh * kw)
        y = (wm @ cols).reshape(n, o, ho, wo)
        if b is not None:
            y += b.reshape(o, 1, 1)
        nx, nw = self.needs_input_grad[:2]
        self.cols, self.w = cols if nw else None, w if nx else None
        self.x_shape, self.w_shape, self.has_b = x.shape, w.shape, b is not None
        self.stride, self.dilation, self.pads, self.out, self.groups = stride, dilation, pads, out, groups
        return y

    def backward(self, g):
        xp = get_array_module(g)
        n, c = self.x_shape[:2]
        o, _, kh, kw = self.w_shape
        ho, wo = self.out
        gm = g.reshape(n, self.groups, o // self.groups, ho * wo)
        nx, nw = self.needs_input_grad[:2]
        gx = gw = None
        if nw:
            gw = (gm @ self.cols.swapaxes(-1, -2)).sum(axis=0).reshape(self.w_shape)
        if nx:
            groups, cg = self.groups, c // self.groups
            # weights ordered (kh, kw, Cg): each kernel offset's gradient is then one contiguous
            # block per sample, which makes the scatter below ~1.7x faster than (Cg, kh, kw)
            wk = self.w.transpose(0, 2, 3, 1).reshape(groups, o // groups, kh * kw * cg)
            gcols = (wk.swapaxes(-1, -2) @ gm).reshape(n, groups, kh * kw, cg, ho, wo)
            offsets = _offsets((kh, kw), self.stride, self.dilation, self.out)
            gx = _scatter(lambda i, out: _put(xp, gcols[:, :, i].reshape(n, c, ho, wo), out), self.x_shape,
                          self.pads, offsets, _disjoint((kh, kw), self.stride, self.dilation), xp, g.dtype)
        if not self.has_b:
            return gx, gw
        return gx, gw, g.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as PyTorch) of an NCHW input.

    Args:
        input: (N, C_in, H, W), or unbatched (C_in, H, W).
        weight: (C_out, C_in / groups, kH, kW).
        bias: optional (C_out,).
        stride, dilation: an int or a pair (sH, sW).
        padding: an int, a pair (pH, pW), ``'valid'`` (no padding) or ``'same'`` (output size =
            input size; stride 1 only; an odd total goes to the bottom/right, as PyTorch).
        groups: split input and output channels into this many independent groups.

    Returns:
        (N, C_out, H_out, W_out), H_out = (H + 2 pH - dH (kH - 1) - 1) // sH + 1.

    Example:
        >>> x, w = dtrain.randn(1, 3, 8, 8), dtrain.randn(4, 3, 3, 3)
        >>> F.conv2d(x, w, padding=1).shape
        dtrain.Size([1, 4, 8, 8])
    """
    op = "conv2d"
    x, unbatched = _batched(input, op)
    if not isinstance(weight, Tensor) or weight.ndim != 4:
        got = list(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise RuntimeError(f"{op}: weight must be 4-D (C_out, C_in / groups, kH, kW), got {got}")
    if not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    o, cg, kh, kw = weight.shape
    if x.shape[1] != cg * groups:
        raise RuntimeError(f"{op}: input of shape {list(input.shape)} has {x.shape[1]} channels, but weight of shape "
                           f"{list(weight.shape)} with groups={groups} expects {cg * groups} channels")
    if o % groups:
        raise RuntimeError(f"{op}: weight of shape {list(weight.shape)} has {o} output channels, not divisible by "
                           f"groups={groups}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise RuntimeError(f"{op}: bias must have shape [{o}] (C_out), got {list(bias.shape)}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise RuntimeError(f"{op}: input dtype {x.dtype} and weight dtype {weight.dtype}"
                           f"{'' if bias is None else f' and bias dtype {bias.dtype}'} differ; convert with .to(dtype)")
    stride, dilation = _pair(stride, "stride", op, 1), _pair(dilation, "dilation", op, 1)
    if padding == "valid":
        pads = ((0, 0), (0, 0))
    elif padding == "same":
        if stride != (1, 1):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride={stride})")
        pads = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip((kh, kw), dilation))
    elif isinstance(padding, str):
        raise ValueError(f"{op}: invalid padding string {padding!r}; expected 'valid' or 'same'")
    else:
        pads = tuple((p, p) for p in _pair(padding, "padding", op, 0))
    out, pads = _geometry(op, x, (kh, kw), stride, pads, dilation)
    args = (x, weight) if bias is None else (x, weight, bias)
    y = Conv2d.apply(*args, stride=stride, dilation=dilation, pads=pads, out=out, groups=groups)
    return y.squeeze(0) if unbatched else y


# ---- pooling ----------------------------------------------------------------------------

def _pool_args(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    x, unbatched = _batched(input, op)
    kernel = _pair(kernel_size, "kernel_size", op, 1)
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride", op, 1)
    padding, dilation = _pair(padding, "padding", op, 0), _pair(dilation, "dilation", op, 1)
    for p, k, d in zip(padding, kernel, dilation):
        if 2 * p > d * (k - 1) + 1:
            raise ValueError(f"{op}: pad should be at most half of effective kernel size, but got "
                             f"padding={padding}, kernel_size={kernel} and dilation={dilation}")
    out, pads = _geometry(op, x, kernel, stride, tuple((p, p) for p in padding), dilation, ceil_mode)
    return x, unbatched, kernel, stride, padding, dilation, out, pads


class MaxPool2d(Function):
    """Records a max pool done by _max_windows: its output and, per output, the winning offset."""

    def forward(self, x, out=None, argmax=None, x_shape=(), pads=(), offsets=(), disjoint=True):
        self.argmax, self.x_shape, self.pads, self.offsets, self.disjoint = argmax, x_shape, pads, offsets, disjoint
        return out

    def backward(self, g):
        xp = get_array_module(g)
        hit = xp.empty(g.shape, dtype=bool)

        def g_of(i, out):
            return xp.multiply(g, xp.equal(self.argmax, i, out=hit), out=out)
        return _scatter(g_of, self.x_shape, self.pads, self.offsets, self.disjoint, xp, g.dtype)


def _max_windows(xpad, offsets):
    """The max over each window and the index of the offset holding it: the first maximum,
    or the last NaN (as PyTorch's CPU kernel)."""
    xp = get_array_module(xpad)
    first = xpad[(Ellipsis,) + offsets[0]]
    kind = xp.int8 if len(offsets) < 128 else xp.int32
    argmax, step = xp.zeros(first.shape, dtype=kind), xp.empty(first.shape, dtype=kind)
    wins = xp.empty(first.shape, dtype=bool)
    # NaN needs a test per offset; it runs only when the cheap pass found a NaN in the result
    for nan_rule in (False, True) if xpad.dtype.kind == "f" else (False,):
        out = first.copy()
        for i, sl in enumerate(offsets[1:], 1):
            s = xpad[(Ellipsis,) + sl]
            xp.greater(s, out, out=wins)
            if nan_rule:
                wins |= s != s
            xp.maximum(out, s, out=out)  # NaN propagates
            # offsets come in increasing order, so a winner's index is above every earlier one:
            # a max updates argmax (masked assignment is several times slower)
            xp.maximum(argmax, xp.multiply(wins, kind(i), out=step), out=argmax)
        if nan_rule or not bool(xp.isnan(out).any()):
            break
        argmax[...] = 0
    return out, argmax


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
    x, unbatched, kernel, stride, _, dilation, out, pads = _pool_args(op, input, kernel_size, stride, padding,
                                                                      dilation, ceil_mode)
    xp = get_array_module(x.array)
    low = -xp.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min
    offsets = _offsets(kernel, stride, dilation, out)
    values, argmax = _max_windows(_pad(x.array, pads, low), offsets)
    y = MaxPool2d.apply(x, out=values, argmax=argmax, x_shape=x.shape, pads=pads, offsets=offsets,
                        disjoint=_disjoint(kernel, stride, dilation))
    y = y.squeeze(0) if unbatched else y
    if not return_indices:
        return y
    flat = argmax.astype("int64")
    p, q = flat // kernel[1], flat % kernel[1]
    rows = xp.arange(out[0]).reshape(-1, 1) * stride[0] + p * dilation[0] - pads[0][0]
    cols = xp.arange(out[1]) * stride[1] + q * dilation[1] - pads[1][0]
    idx = Tensor._wrap(rows.astype("int64") * x.shape[3] + cols)
    return y, idx.squeeze(0) if unbatched else idx


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
    x, unbatched, kernel, stride, padding, _, out, pads = _pool_args(op, input, kernel_size, stride, padding, 1,
                                                                     ceil_mode)
    if x.dtype.kind != "f":
        raise RuntimeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")
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
    return y.squeeze(0) if unbatched else y


def _adaptive_matrix(xp, n, o, dtype):
    """(o, n): row i averages input positions [floor(i n / o), ceil((i + 1) n / o))."""
    i = xp.arange(o)[:, None]
    start, end = i * n // o, ((i + 1) * n + o - 1) // o
    j = xp.arange(n)
    return (((j >= start) & (j < end)) / (end - start)).astype(dtype)


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
    x, unbatched = _batched(input, op)
    if x.dtype.kind != "f":
        raise RuntimeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")
    sizes = (output_size, output_size) if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    sizes = tuple(n if o is None else o for n, o in zip(x.shape[2:], sizes)) if len(sizes) == 2 else sizes
    (ho, wo) = _pair(sizes, "output_size", op, 1)
    n, c, h, w = x.shape
    if min(h, w) < 1:
        raise ValueError(f"{op}: input of shape {list(input.shape)} has an empty spatial dimension")
    if h % ho == 0 and w % wo == 0:  # equal bins: a reshape view and a mean
        y = x.reshape(n, c, ho, h // ho, wo, w // wo).mean(dim=(3, 5))
    else:
        xp = get_array_module(x.array)
        rows = Tensor._wrap(_adaptive_matrix(xp, h, ho, x.dtype))
        cols = Tensor._wrap(_adaptive_matrix(xp, w, wo, x.dtype).T.copy())
        y = matmul(matmul(rows, x), cols)
    return y.squeeze(0) if unbatched else y
