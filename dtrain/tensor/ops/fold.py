"""unfold (im2col) and fold (col2im) of NCHW tensors, as torch.nn.functional: each is the
other's adjoint, so each one's backward is the other's forward."""
import math

from ..backend import get_array_module
from ..function import Function
from ..tensor import Tensor
from .conv import _batched, _disjoint, _geometry, _im2col, _offsets, _pair, _put, _scatter


def _unfold(x, kernel, stride, dilation, pads, out):
    n, c = x.shape[:2]
    return _im2col(x, kernel, stride, dilation, pads, out, 1).reshape(n, c * kernel[0] * kernel[1], -1)


def _fold(cols, x_shape, kernel, stride, dilation, pads, out):
    """Sum each column's blocks back into an (N, C, H, W) image (overlaps add up)."""
    xp = get_array_module(cols)
    n, c = x_shape[:2]
    blocks = cols.reshape(n, c, kernel[0] * kernel[1], *out)
    return _scatter(lambda i, dst: _put(xp, blocks[:, :, i], dst), x_shape, pads,
                    _offsets(kernel, stride, dilation, out), _disjoint(kernel, stride, dilation), xp, cols.dtype)


class Unfold(Function):
    def forward(self, x, kernel=(), stride=(), dilation=(), pads=(), out=()):
        self.args, self.x_shape = (kernel, stride, dilation, pads, out), x.shape
        return _unfold(x, *self.args)

    def backward(self, g):
        return _fold(g, self.x_shape, *self.args)


class Fold(Function):
    def forward(self, cols, x_shape=(), kernel=(), stride=(), dilation=(), pads=(), out=()):
        self.args = (kernel, stride, dilation, pads, out)
        return _fold(cols, x_shape, *self.args)

    def backward(self, g):
        return _unfold(g, *self.args)


def _window(op, kernel_size, dilation, padding, stride):
    return (_pair(kernel_size, "kernel_size", op, 1), _pair(stride, "stride", op, 1),
            _pair(dilation, "dilation", op, 1), tuple((p, p) for p in _pair(padding, "padding", op, 0)))


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding blocks of an image as columns (im2col): column l holds the C * kH * kW values of
    block l, ordered (c, kh, kw); blocks run row-major over the output positions.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size, dilation, padding (zeros, both sides), stride: an int or a pair.

    Returns:
        (N, C * kH * kW, L) (or (C * kH * kW, L)), L the number of block positions.

    Example:
        >>> F.unfold(dtrain.randn(2, 3, 4, 5), 2).shape
        dtrain.Size([2, 12, 12])
    """
    op = "unfold"
    x, unbatched = _batched(input, op)
    kernel, stride, dilation, pads = _window(op, kernel_size, dilation, padding, stride)
    out, _ = _geometry(op, x.shape, kernel, stride, pads, dilation, shown=input.shape)
    y = Unfold.apply(x, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out)
    return y.squeeze(0) if unbatched else y


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Columns of sliding blocks summed back into an image (col2im), the adjoint of unfold:
    values that several blocks share are added.

    Args:
        input: (N, C * kH * kW, L) or (C * kH * kW, L).
        output_size: the image's (H, W) (an int or a pair).
        kernel_size, dilation, padding, stride: an int or a pair, as given to unfold.

    Returns:
        (N, C, H, W) (or (C, H, W)).

    Example:
        >>> F.fold(dtrain.ones(1, 4, 4), (3, 3), 2)
        tensor([[[[1., 2., 1.],
                  [2., 4., 2.],
                  [1., 2., 1.]]]])
    """
    op = "fold"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(input).__name__}")
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{op}: expected a 2-D (C * kH * kW, L) or 3-D (N, C * kH * kW, L) input, got shape "
                           f"{list(input.shape)}")
    cols = input if input.ndim == 3 else input.unsqueeze(0)
    size = _pair(output_size, "output_size", op, 1)
    kernel, stride, dilation, pads = _window(op, kernel_size, dilation, padding, stride)
    kk = math.prod(kernel)
    if cols.shape[1] % kk:
        raise RuntimeError(f"{op}: input of shape {list(input.shape)}: its dim {input.ndim - 2} "
                           f"(size {cols.shape[1]}) must be divisible by the product of kernel_size={kernel} ({kk})")
    x_shape = (cols.shape[0], cols.shape[1] // kk) + size
    out, _ = _geometry(op, x_shape, kernel, stride, pads, dilation, shown=x_shape[1:])
    if cols.shape[2] != out[0] * out[1]:
        raise RuntimeError(f"{op}: input of shape {list(input.shape)} has {cols.shape[2]} blocks, but output_size="
                           f"{size}, kernel_size={kernel}, dilation={dilation}, padding={tuple(p for p, _ in pads)} "
                           f"and stride={stride} make {out[0]} * {out[1]} = {out[0] * out[1]} blocks")
    y = Fold.apply(cols, x_shape=x_shape, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out)
    return y.squeeze(0) if input.ndim == 2 else y
