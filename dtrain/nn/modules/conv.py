"""Conv2d: 2-D convolution over (N, C, H, W) input, as ``torch.nn.Conv2d``."""
from ...tensor import empty
from .. import functional as F
from ..module import Module
from ..parameter import Parameter
from .linear import init_weight_and_bias
from ._checks import check_int, pair

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Conv2d(Module):
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

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        in_channels = check_int("Conv2d", "in_channels", in_channels)
        out_channels = check_int("Conv2d", "out_channels", out_channels)
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups (in_channels={in_channels}, groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups (out_channels={out_channels}, "
                             f"groups={groups})")
        kernel_size, stride, dilation = pair(kernel_size), pair(stride), pair(dilation)
        for name, v in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
            for x in v:
                check_int("Conv2d", name, x, minimum=1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of ('valid', 'same')")
            if padding == "same" and stride != (1, 1):
                raise ValueError(f"padding='same' is not supported for strided convolutions (stride={stride})")
        else:
            padding = pair(padding)
            for x in padding:
                check_int("Conv2d", "padding", x)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, but got padding_mode='{padding_mode}'")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.groups, self.padding_mode = groups, padding_mode
        self.transposed, self.output_padding = False, (0, 0)
        self._reversed_padding_repeated_twice = _reversed_padding(padding, kernel_size, dilation)
        self.weight = Parameter(empty(out_channels, in_channels // groups, *kernel_size, dtype=dtype, device=device))
        self.bias = Parameter(empty(out_channels, dtype=dtype, device=device)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init_weight_and_bias(self.weight, self.bias)

    def forward(self, input):
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(padded, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
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
        return (0, 0, 0, 0)
    if padding == "same":
        out = []
        for d, k in zip(reversed(dilation), reversed(kernel_size)):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    return (padding[1], padding[1], padding[0], padding[0])
