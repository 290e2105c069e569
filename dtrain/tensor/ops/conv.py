"""Convolutions on NCHW (and NCL) tensors, vectorized: conv1d, conv2d, conv_transpose2d,
and the window helpers that pooling, fold and unfold share.

conv2d is im2col through a zero-copy strided window view, then one batched matmul (groups
are a batch dim of it); its input gradient scatters back one kernel offset at a time (a loop
over kh * kw offsets, never over pixels). conv_transpose2d is the same two halves swapped:
its forward is conv2d's input gradient, its backward an im2col and two matmuls. conv1d is
conv2d over a height of 1.
"""
import numbers

from ..backend import get_array_module, is_cuda_array, sliding_window_view
from ..function import Function
from ..tensor import Tensor
from .autocast import autocast_call, open_regions, thread_state
from .shape import unsqueeze
from .workspace import output, workspace

_LAYOUT = {1: ("2-D (C, L)", "3-D (N, C, L)"), 2: ("3-D (C, H, W)", "4-D (N, C, H, W)")}


def _tuple(v, n, name, op, minimum):
    t = (v,) * n if isinstance(v, numbers.Integral) else tuple(v) if isinstance(v, (tuple, list)) else None
    if t is None or len(t) != n or not all(isinstance(i, numbers.Integral) and i >= minimum for i in t):
        what = "an int" if n == 1 else "an int or a pair of ints"
        raise ValueError(f"{op}: {name} must be {what} >= {minimum}, got {v!r}")
    return tuple(int(i) for i in t)


def _pair(v, name, op, minimum):
    return _tuple(v, 2, name, op, minimum)


def _batched(x, op, dims=2):
    """(N, C, *spatial) as is; an unbatched (C, *spatial) gets a batch dim (the caller drops it again)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if x.ndim not in (dims + 1, dims + 2):
        unbatched, batched = _LAYOUT[dims]
        raise RuntimeError(f"{op}: expected a {unbatched} or {batched} input, got shape {list(x.shape)}")
    return (x, False) if x.ndim == dims + 2 else (unsqueeze(x, 0), True)


def _geometry(op, shape, kernel, stride, pads, dilation, ceil_mode=False, shown=None, dims=2):
    """The output size for a batched (N, C, H, W) input ``shape``, and the padding ((top,
    bottom), (left, right)) that fits every window: in ceil_mode the last window may reach past
    the requested padding. ``shown``: the caller's input shape, for the message; a 1-D op
    (``dims=1``) runs on a height of 1."""
    out, full = [], []
    for n, k, s, (lo, hi), d in zip(shape[2:], kernel, stride, pads, dilation):
        span = n + lo + hi - d * (k - 1) - 1
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + lo:  # the last window must start inside the input or left padding
            o -= 1
        out.append(o)
        full.append((lo, max(hi, (o - 1) * s + d * (k - 1) + 1 - n - lo)))
    if min(out) < 1:
        one = dims == 1  # show the 1-D op's own sizes
        sizes = lambda v: "x".join(map(str, v[1:] if one else v))  # noqa: E731
        raise ValueError(f"{op}: input of shape {list(shape if shown is None else shown)} (spatial "
                         f"{sizes(shape[2:])}, padding {[list(p) for p in (pads[1:] if one else pads)]}) is too "
                         f"small for kernel {sizes(kernel)} with dilation {sizes(dilation)}: the output size would "
                         f"be {sizes(out)}")
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


def _padded_grad(shape, pads, offsets, disjoint, xp, dtype):
    """The zero input gradient on the padded grid (uninitialized when disjoint windows read
    every position, as a 2x2 pool with stride 2: the scatter writes every cell)."""
    n, c, h, w = shape
    (top, bottom), (left, right) = pads
    hp, wp = h + top + bottom, w + left + right
    rows, cols = offsets[0]
    tiled = disjoint and len(offsets) * len(range(hp)[rows]) * len(range(wp)[cols]) == hp * wp
    gx = output(xp, (n, c, hp, wp), dtype)
    if not tiled:
        gx.fill(0)
    return gx


def _add_windows(gx, g_of, offsets, disjoint):
    """Offset i's output-shaped gradient ``g_of(i, out)`` added into padded ``gx`` at the
    positions it read. When windows are disjoint, ``g_of`` writes straight into ``out`` (the
    target view); otherwise ``out`` is None and it returns an array."""
    for i, (rows, cols) in enumerate(offsets):
        if disjoint:
            g_of(i, gx[:, :, rows, cols])
        else:
            gx[:, :, rows, cols] += g_of(i, None)


def _crop(gx, shape, pads):
    (top, _), (left, _) = pads
    return gx[:, :, top:top + shape[2], left:left + shape[3]] if any(pads[0] + pads[1]) else gx


def _scatter(g_of, shape, pads, offsets, disjoint, xp, dtype):
    """The input gradient of a windowed op (see _add_windows), padding cropped."""
    gx = _padded_grad(shape, pads, offsets, disjoint, xp, dtype)
    _add_windows(gx, g_of, offsets, disjoint)
    return _crop(gx, shape, pads)


def _put(xp, a, out):
    """``a`` itself, or copied into ``out`` (a ``g_of`` for _scatter that computes nothing)."""
    if out is None:
        return a
    xp.copyto(out, a)
    return out


def _im2col(x, kernel, stride, dilation, pads, out, groups, ones=False):
    """(N, C, H, W) -> (N, G, Cg * kh * kw, Ho * Wo), rows ordered (c, p, q) as PyTorch's
    unfold: the one copy of a convolution's forward. ``ones``: a last row of ones per group
    (for the bias)."""
    n, c = x.shape[:2]
    (kh, kw), (dh, dw), (sh, sw), (ho, wo) = kernel, dilation, stride, out
    win = sliding_window_view(_pad(x, pads, 0), (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, :sh * (ho - 1) + 1:sh, :sw * (wo - 1) + 1:sw, ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
    k = c // groups * kh * kw
    cols = workspace(x, (n, groups, k + ones, ho * wo))
    # (c, p, q) rows and (h, w) columns: the product with the weights lands in NCHW order
    # (split axes only, so the target is a view of cols even when a ones row follows)
    cols[:, :, :k].reshape(n, groups, c // groups, kh, kw, ho, wo)[...] = \
        win.transpose(0, 1, 4, 5, 2, 3).reshape(n, groups, c // groups, kh, kw, ho, wo)
    if ones:
        cols[:, :, k] = 1
    return cols


def _weight_grad(gm, cols, w_shape):
    """sum_n gm[n] @ cols[n]^T: (N, G, Og, M) and (N, G, K, M) -> the weight's gradient."""
    return (gm @ cols.swapaxes(-1, -2)).sum(axis=0).reshape(w_shape)


_CHUNK_BYTES = 2 << 20


def _input_grad(w, gm, x_shape, stride, dilation, pads, out, groups):
    """conv2d's input gradient: W^T @ gm per sample, scattered back one kernel offset at a
    time. w: (O, Cg, kh, kw); gm: (N, G, O / G, Ho * Wo); x_shape: (N, G * Cg, H, W).
    On the CPU a few samples at a time: their columns stay in cache between the matmul and
    the scatter (1.3x faster than the whole batch at once in the reference CNN)."""
    xp = get_array_module(gm)
    n, c = x_shape[:2]
    o, cg, kh, kw = w.shape
    ho, wo = out
    # weights ordered (kh, kw, Cg): each kernel offset's gradient is then one contiguous
    # block per sample, which makes the scatter below ~1.7x faster than (Cg, kh, kw)
    wk = w.transpose(0, 2, 3, 1).reshape(groups, o // groups, kh * kw * cg).swapaxes(-1, -2)
    (top, bottom), (left, right) = pads
    hp, wp = x_shape[2] + top + bottom, x_shape[3] + left + right
    if not is_cuda_array(gm) and stride == dilation == (1, 1) and (ho, wo) == (hp - kh + 1, wp - kw + 1) \
            and kh * kw > 1:
        return _input_grad_flat(xp, wk, gm, x_shape, pads, (kh, kw), out, groups)
    offsets, disjoint = _offsets((kh, kw), stride, dilation, out), _disjoint((kh, kw), stride, dilation)
    gx = _padded_grad(x_shape, pads, offsets, disjoint, xp, gm.dtype)
    step = n if is_cuda_array(gm) else max(1, _CHUNK_BYTES // (c * kh * kw * ho * wo * gm.itemsize))
    for s in range(0, n, step):
        gcols = (wk @ gm[s:s + step]).reshape(-1, groups, kh * kw, cg, ho, wo)
        _add_windows(gx[s:s + step], lambda i, dst: _put(xp, gcols[:, :, i].reshape(-1, c, ho, wo), dst), offsets,
                     disjoint)
    return _crop(gx, x_shape, pads)


def _input_grad_flat(xp, wk, gm, x_shape, pads, kernel, out, groups):
    """_input_grad for stride 1 and dilation 1 on the CPU, each kernel offset's scatter one
    add of contiguous rows. The output gradient gets kw - 1 zero columns (its rows as wide as
    the padded input's, Wp), so offset (p, q)'s columns, read as flat (Ho * Wp) rows, land on
    the padded input's flat grid at p * Wp + q onwards: one slice per offset, its inner loop
    Ho * Wp long instead of Wo (16 in the reference CNN, whose input gradient spent 4 of its
    9 ms in those short strided adds). A padded column's value is zero, so where it runs past a
    row's end into the next row it adds nothing."""
    n, c = x_shape[:2]
    kh, kw = kernel
    ho, wo = out
    (top, bottom), (left, right) = pads
    hp, wp = x_shape[2] + top + bottom, x_shape[3] + left + right
    span = ho * wp
    og, cg = gm.shape[2], c // groups
    # (the last offset's slice ends kw - 1 past the grid: the flat rows get that much slack)
    gx = output(xp, (n, c, hp * wp + kw - 1), gm.dtype)
    gx[:, :, span:] = 0
    step = max(1, _CHUNK_BYTES // (c * kh * kw * span * gm.itemsize))
    wide = xp.zeros((min(step, n), groups, og, ho, wp), dtype=gm.dtype)
    for s in range(0, n, step):
        m = min(step, n - s)
        wide[:m, ..., :wo] = gm[s:s + m].reshape(m, groups, og, ho, wo)
        gcols = (wk @ wide[:m].reshape(m, groups, og, span)).reshape(m, groups, kh * kw, cg, span)
        for i in range(kh * kw):
            start = (i // kw) * wp + i % kw
            block = gcols[:, :, i].reshape(m, c, span)
            if i == 0:  # offset (0, 0) starts the grid: assigned, the tail zeroed above
                gx[s:s + m, :, :span] = block
            else:
                gx[s:s + m, :, start:start + span] += block
    gx = gx[:, :, :hp * wp].reshape(n, c, hp, wp)
    return gx[:, :, top:top + x_shape[2], left:left + x_shape[3]] if any(pads[0] + pads[1]) else gx


class Conv2d(Function):
    """im2col and one batched matmul. The bias rides in the matmul as a row of ones under
    the columns: it saves the output's bias pass and the gradient's sum over (N, H, W)."""

    def forward(self, x, w, b=None, stride=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), out=(1, 1), groups=1):
        xp = get_array_module(x)
        n = x.shape[0]
        o, _, kh, kw = w.shape
        cols = _im2col(x, (kh, kw), stride, dilation, pads, out, groups, ones=b is not None)
        wm = w.reshape(groups, o // groups, -1)
        if b is not None:
            wm = xp.concatenate([wm, b.reshape(groups, o // groups, 1)], axis=2)
        y = xp.matmul(wm, cols, out=output(xp, (n, groups, o // groups, cols.shape[-1]), cols.dtype))
        y = y.reshape(n, o, *out)
        nx, nw = self.needs_input_grad[:2]
        nb = b is not None and self.needs_input_grad[2]
        self.cols, self.w = cols if nw or nb else None, w if nx else None
        self.x_shape, self.w_shape, self.has_b = x.shape, w.shape, b is not None
        self.stride, self.dilation, self.pads, self.out, self.groups = stride, dilation, pads, out, groups
        return y

    def backward(self, g):
        n, o = g.shape[:2]
        gm = g.reshape(n, self.groups, o // self.groups, -1)
        nx, nw = self.needs_input_grad[:2]
        nb = self.has_b and self.needs_input_grad[2]
        gwb = (gm @ self.cols.swapaxes(-1, -2)).sum(axis=0) if nw or nb else None  # (G, O / G, K [+ 1])
        gx = _input_grad(self.w, gm, self.x_shape, self.stride, self.dilation, self.pads, self.out,
                         self.groups) if nx else None
        gw = gwb[..., :gwb.shape[-1] - self.has_b].reshape(self.w_shape) if nw else None
        if not self.has_b:
            return gx, gw
        return gx, gw, gwb[..., -1].reshape(o) if nb else None


class ConvTranspose2d(Function):
    """The adjoint of Conv2d in its input: forward is conv2d's input gradient (with x as the
    output gradient), backward convolves the output gradient as conv2d's forward does."""

    def forward(self, x, w, b=None, stride=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0)), y_shape=(), groups=1):
        n, c, h, wd = x.shape
        xm = x.reshape(n, groups, c // groups, h * wd)
        y = _input_grad(w, xm, y_shape, stride, dilation, pads, (h, wd), groups)
        if b is not None:
            y = y + b.reshape(-1, 1, 1)  # y may be a cropped view of the scatter's padded grid
        nx, nw = self.needs_input_grad[:2]
        self.xm, self.w = xm if nw else None, w if nx else None
        self.x_shape, self.w_shape, self.has_b = x.shape, w.shape, b is not None
        self.stride, self.dilation, self.pads, self.groups = stride, dilation, pads, groups
        return y

    def backward(self, g):
        n, c, h, wd = self.x_shape
        _, _, kh, kw = self.w_shape
        nx, nw = self.needs_input_grad[:2]
        cols = _im2col(g, (kh, kw), self.stride, self.dilation, self.pads, (h, wd), self.groups)
        gw = _weight_grad(self.xm, cols, self.w_shape) if nw else None
        gx = (self.w.reshape(self.groups, c // self.groups, -1) @ cols).reshape(self.x_shape) if nx else None
        if not self.has_b:
            return gx, gw
        return gx, gw, g.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None


def _check_conv(op, input, x, weight, bias, groups, dims, transposed=False):
    """Shapes and dtypes of a convolution's arguments; returns the number of output channels.
    x is ``input`` with its batch dim."""
    if not isinstance(weight, Tensor) or weight.ndim != dims + 2:
        got = list(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        layout = "C_in, C_out / groups" if transposed else "C_out, C_in / groups"
        raise RuntimeError(f"{op}: weight must be {dims + 2}-D ({layout}, {', '.join(['kH', 'kW'][-dims:])}), "
                           f"got {got}")
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    c = x.shape[1]
    if transposed:
        if c != weight.shape[0]:
            raise RuntimeError(f"{op}: input of shape {list(input.shape)} has {c} channels, but weight of shape "
                               f"{list(weight.shape)} expects {weight.shape[0]} channels (its first dim)")
        if c % groups:
            raise RuntimeError(f"{op}: weight of shape {list(weight.shape)} has {c} input channels, not divisible "
                               f"by groups={groups}")
        o = weight.shape[1] * groups
    else:
        o, cg = weight.shape[:2]
        if c != cg * groups:
            raise RuntimeError(f"{op}: input of shape {list(input.shape)} has {c} channels, but weight of shape "
                               f"{list(weight.shape)} with groups={groups} expects {cg * groups} channels")
        if o % groups:
            raise RuntimeError(f"{op}: weight of shape {list(weight.shape)} has {o} output channels, not divisible "
                               f"by groups={groups}")
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (o,)):
        got = list(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise RuntimeError(f"{op}: bias must have shape [{o}] (C_out), got {got}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise RuntimeError(f"{op}: input dtype {x.dtype} and weight dtype {weight.dtype}"
                           f"{'' if bias is None else f' and bias dtype {bias.dtype}'} differ; convert with .to(dtype)")
    return o


def _conv_pads(op, padding, kernel, stride, dilation):
    """((top, bottom), (left, right)) from an int/pair, 'valid' or 'same' (an odd total
    goes to the bottom/right, as PyTorch)."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride="
                             f"{stride[1:] if op.endswith('1d') else stride})")
        return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation))
    if isinstance(padding, str):
        raise ValueError(f"{op}: invalid padding string {padding!r}; expected 'valid' or 'same'")
    return tuple((p, p) for p in padding)


def _conv(op, input, x, weight, bias, stride, pads, dilation, groups, dims=2):
    """The convolution of a batched 4-D x, its arguments checked and normalized."""
    out, pads = _geometry(op, x.shape, weight.shape[2:], stride, pads, dilation, shown=input.shape, dims=dims)
    args = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*args, stride=stride, dilation=dilation, pads=pads, out=out, groups=groups)


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(conv2d, "conv2d", **locals())
    op = "conv2d"
    x, unbatched = _batched(input, op)
    _check_conv(op, input, x, weight, bias, groups, 2)
    stride, dilation = _pair(stride, "stride", op, 1), _pair(dilation, "dilation", op, 1)
    padding = padding if isinstance(padding, str) else _pair(padding, "padding", op, 0)
    y = _conv(op, input, x, weight, bias, stride, _conv_pads(op, padding, weight.shape[2:], stride, dilation),
              dilation, groups)
    return y.squeeze(0) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution (cross-correlation, as PyTorch) of an NCL input.

    Args:
        input: (N, C_in, L), or unbatched (C_in, L).
        weight: (C_out, C_in / groups, kL).
        bias: optional (C_out,).
        stride, dilation: an int (or a 1-tuple).
        padding: an int, ``'valid'`` or ``'same'`` (stride 1 only; an odd total goes to the right).
        groups: split input and output channels into this many independent groups.

    Returns:
        (N, C_out, L_out), L_out = (L + 2 p - d (kL - 1) - 1) // s + 1.

    Example:
        >>> F.conv1d(dtrain.randn(2, 3, 10), dtrain.randn(4, 3, 3), padding="same").shape
        dtrain.Size([2, 4, 10])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(conv1d, "conv1d", **locals())
    op = "conv1d"
    x, unbatched = _batched(input, op, dims=1)
    _check_conv(op, input, x, weight, bias, groups, 1)
    stride = (1,) + _tuple(stride, 1, "stride", op, 1)
    dilation = (1,) + _tuple(dilation, 1, "dilation", op, 1)
    padding = padding if isinstance(padding, str) else (0,) + _tuple(padding, 1, "padding", op, 0)
    w2 = unsqueeze(weight, 2)
    y = _conv(op, input, unsqueeze(x, 2), w2, bias, stride, _conv_pads(op, padding, w2.shape[2:], stride, dilation),
              dilation, groups, dims=1).squeeze(2)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution ("deconvolution"): the gradient of conv2d with respect to
    its input, as a layer. Note the argument order: groups comes before dilation (as PyTorch).

    Args:
        input: (N, C_in, H, W), or unbatched (C_in, H, W).
        weight: (C_in, C_out / groups, kH, kW).
        bias: optional (C_out,).
        stride, dilation: an int or a pair.
        padding: an int or a pair: dilation * (k - 1) - padding zeros are implicitly added on each side.
        output_padding: extra rows/columns at the bottom/right of the output (an int or a
            pair, smaller than stride or dilation): picks among the output sizes that a conv2d
            with this stride maps to the input size.
        groups: split input and output channels into this many independent groups.

    Returns:
        (N, C_out, H_out, W_out), H_out = (H - 1) sH - 2 pH + dH (kH - 1) + output_padding + 1.

    Example:
        >>> F.conv_transpose2d(dtrain.randn(1, 4, 5, 5), dtrain.randn(4, 2, 3, 3), stride=2).shape
        dtrain.Size([1, 2, 11, 11])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(conv_transpose2d, "conv_transpose2d", **locals())
    op = "conv_transpose2d"
    x, unbatched = _batched(input, op)
    o = _check_conv(op, input, x, weight, bias, groups, 2, transposed=True)
    stride, dilation = _pair(stride, "stride", op, 1), _pair(dilation, "dilation", op, 1)
    padding, output_padding = _pair(padding, "padding", op, 0), _pair(output_padding, "output_padding", op, 0)
    if any(op_ >= s and op_ >= d for op_, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"{op}: output_padding must be smaller than either stride or dilation, but got "
                         f"output_padding={output_padding}, stride={stride} and dilation={dilation}")
    size = [(n - 1) * s - 2 * p + d * (k - 1) + extra + 1
            for n, s, p, d, k, extra in zip(x.shape[2:], stride, padding, dilation, weight.shape[2:], output_padding)]
    if min(size) < 1:
        raise ValueError(f"{op}: input of shape {list(input.shape)} with kernel {weight.shape[2]}x{weight.shape[3]}, "
                         f"stride {stride}, padding {padding}, dilation {dilation} and output_padding "
                         f"{output_padding} gives an empty output of size {size[0]}x{size[1]}")
    args = (x, weight) if bias is None else (x, weight, bias)
    y = ConvTranspose2d.apply(*args, stride=stride, dilation=dilation, pads=tuple((p, p) for p in padding),
                              y_shape=(x.shape[0], o, *size), groups=groups)
    return y.squeeze(0) if unbatched else y
