"""Convolution layers: Conv1d, Conv2d, ConvTranspose2d (as ``torch.nn``; same weight shapes,
state_dict keys and initialization)."""
from ...tensor import empty
from .. import functional as F
from ..module import Module
from ..parameter import Parameter
from .linear import init_weight_and_bias
from ._checks import check_int, int_tuple

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """What the convolution layers share: argument checks, parameters, init, repr."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, transposed, output_padding,
                 groups, bias, padding_mode, device, dtype, dims):
        super().__init__()
        layer = type(self).__name__
        in_channels = check_int(layer, "in_channels", in_channels)
        out_channels = check_int(layer, "out_channels", out_channels)
        if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
            raise ValueError(f"groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups (in_channels={in_channels}, groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups (out_channels={out_channels}, "
                             f"groups={groups})")
        kernel_size, stride, dilation = (int_tuple(layer, name, v, dims, minimum=1) for name, v in
                                         (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)))
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of ('valid', 'same')")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError(f"padding='same' is not supported for strided convolutions (stride={stride})")
        else:
            padding = int_tuple(layer, "padding", padding, dims)
        output_padding = int_tuple(layer, "output_padding", output_padding, dims)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, but got padding_mode='{padding_mode}'")
        if transposed and padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {layer}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.transposed, self.output_padding = transposed, output_padding
        self.groups, self.padding_mode = groups, padding_mode
        self._reversed_padding_repeated_twice = _reversed_padding(padding, kernel_size, dilation)
        shape = (in_channels, out_channels // groups) if transposed else (out_channels, in_channels // groups)
        self.weight = Parameter(empty(*shape, *kernel_size, dtype=dtype, device=device))
        self.bias = Parameter(empty(out_channels, dtype=dtype, device=device)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init_weight_and_bias(self.weight, self.bias)

    def extra_repr(self):
        n = len(self.kernel_size)
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


def _reversed_padding(padding, kernel_size, dilation):
    """F.pad's (left, right, top, bottom) for the padding_mode != "zeros" path."""
    if padding == "valid":
        return (0, 0) * len(kernel_size)
    if padding == "same":
        out = []
        for d, k in zip(reversed(dilation), reversed(kernel_size)):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    return tuple(p for p in reversed(padding) for _ in range(2))


class _Conv(_ConvNd):
    """Conv1d and Conv2d (``_dims`` of them): the convolution, after F.pad for a padding_mode
    other than "zeros"."""

    _dims = None
    _functional = None  # F.conv1d or F.conv2d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0, groups, bias,
                         padding_mode, device, dtype, self._dims)

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return self._functional(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return self._functional(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class Conv1d(_Conv):
    """1-D convolution (cross-correlation, as in PyTorch) over (N, C, L) input.

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size, stride, dilation: an int (or a 1-tuple).
        padding: an int, or "valid" / "same".
        groups: split channels into this many independent groups.
        bias: learn a per-output-channel bias (default True).
        padding_mode: "zeros", "reflect", "replicate" or "circular".
        device, dtype: where and in which dtype to create the parameters.

    Shapes: input ``(N, C_in, L)`` or ``(C_in, L)``; weight ``(out_channels, in_channels // groups, k)``.

    Example:
        >>> nn.Conv1d(3, 8, 5, padding=2)(dtrain.randn(4, 3, 20)).shape
        dtrain.Size([4, 8, 20])
    """

    _dims, _functional = 1, staticmethod(F.conv1d)


class Conv2d(_Conv):
    """2-D convolution (cross-correlation, as in PyTorch).

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size, stride, dilation: an int or a pair (height, width).
        padding: an int, a pair, or "valid" / "same".
        groups: split channels into this many independent groups.
        bias: learn a per-output-channel bias (default True).
        padding_mode: "zeros", "reflect", "replicate" or "circular".
        device, dtype: where and in which dtype to create the parameters.

    Shapes: input ``(N, C_in, H, W)`` or ``(C_in, H, W)``; weight
    ``(out_channels, in_channels // groups, kH, kW)``.

    Example:
        >>> nn.Conv2d(3, 16, 3, padding=1)(dtrain.randn(8, 3, 32, 32)).shape
        dtrain.Size([8, 16, 32, 32])
    """

    _dims, _functional = 2, staticmethod(F.conv2d)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution ("deconvolution"): the gradient of Conv2d with respect to
    its input, as a layer; with stride s it upsamples by about s.

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size, stride, dilation: an int or a pair.
        padding: an int or a pair: removes that many rows/columns of the full output on each side.
        output_padding: extra rows/columns at the bottom/right (smaller than stride or dilation).
        groups, bias, device, dtype: as Conv2d. padding_mode: only "zeros".

    Shapes: input ``(N, C_in, H, W)`` or ``(C_in, H, W)``; weight
    ``(in_channels, out_channels // groups, kH, kW)``; H_out = (H - 1) s - 2 p + d (k - 1) + output_padding + 1.
    ``forward(input, output_size)`` picks the output_padding that gives ``output_size``.

    Example:
        >>> nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)(dtrain.randn(1, 16, 5, 5)).shape
        dtrain.Size([1, 8, 10, 10])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be an int or a pair of ints, got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, True, output_padding,
                         groups, bias, padding_mode, device, dtype, 2)

    def _output_padding(self, input, output_size):
        if output_size is None:
            return self.output_padding
        size = list(output_size)
        if len(size) == input.ndim:
            size = size[-2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: for {input.ndim}D input, output_size must have 2 or {input.ndim} "
                             f"elements (got {len(output_size)})")
        lows = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                zip(input.shape[-2:], self.stride, self.padding, self.dilation, self.kernel_size)]
        highs = [lo + s - 1 for lo, s in zip(lows, self.stride)]
        if any(not lo <= n <= hi for n, lo, hi in zip(size, lows, highs)):
            raise ValueError(f"ConvTranspose2d: requested an output size of {size}, but valid sizes range from "
                             f"{lows} to {highs} (for an input of {list(input.shape[-2:])})")
        return tuple(n - lo for n, lo in zip(size, lows))

    def forward(self, input, output_size=None):
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(input, output_size), self.groups, self.dilation)
