"""Pooling layers, 1-D and 2-D: max, average, adaptive max and adaptive average (as torch.nn)."""
from .. import functional as F
from ..module import Module
from ._checks import int_tuple


def _check_window(layer, kernel_size, stride, padding, dilation=1, dims=2):
    """Early, clear errors for window arguments (the ops check the input against them)."""
    kernel, _, pads, dilations = (int_tuple(layer, name, value, dims, minimum) for name, value, minimum in
                                  (("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0),
                                   ("dilation", dilation, 1)))
    for k, p, d in zip(kernel, pads, dilations):
        if p > (d * (k - 1) + 1) // 2:
            raise ValueError(f"{layer}: pad should be at most half of effective kernel size, but got "
                             f"padding={padding}, kernel_size={kernel_size} and dilation={dilation}")


class _MaxPoolNd(Module):
    """MaxPool1d and MaxPool2d: ``_functional`` over ``_dims`` spatial dims."""

    _dims, _functional = None, None

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        _check_window(type(self).__name__, kernel_size, self.stride, padding, dilation, dims=self._dims)
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input):
        return self._functional(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool2d(_MaxPoolNd):
    """The maximum over each ``kernel_size`` window.

    Args:
        kernel_size: the window (int or pair).
        stride: the step (default: ``kernel_size``).
        padding: implicit -inf padding on both sides (at most half the kernel).
        dilation: spacing between window elements.
        return_indices: also return the flat argmax indices (for MaxUnpool).
        ceil_mode: use ceil instead of floor for the output size.

    Example:
        >>> nn.MaxPool2d(2)(dtrain.randn(1, 3, 8, 8)).shape
        dtrain.Size([1, 3, 4, 4])
    """

    _dims, _functional = 2, staticmethod(F.max_pool2d)


class AvgPool2d(Module):
    """The mean over each ``kernel_size`` window.

    Args:
        kernel_size, stride (default ``kernel_size``), padding: as for MaxPool2d.
        ceil_mode: use ceil instead of floor for the output size.
        count_include_pad: count the zero padding in the divisor.
        divisor_override: divide by this instead of the window size.

    Example:
        >>> nn.AvgPool2d(2)(dtrain.randn(1, 3, 8, 8)).shape
        dtrain.Size([1, 3, 4, 4])
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        _check_window("AvgPool2d", kernel_size, self.stride, padding)
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _AdaptivePool(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptivePool):
    """Average pooling to a fixed ``output_size`` (int, pair, or None in a pair to keep
    that input size), whatever the input size.

    Example:
        >>> nn.AdaptiveAvgPool2d((1, 1))(dtrain.randn(2, 8, 7, 5)).shape
        dtrain.Size([2, 8, 1, 1])
    """

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveAvgPool1d(_AdaptivePool):
    """Average pooling of an (N, C, L) input to a fixed length ``output_size``.

    Example:
        >>> nn.AdaptiveAvgPool1d(1)(dtrain.randn(2, 8, 7)).shape
        dtrain.Size([2, 8, 1])
    """

    def forward(self, input):
        return F.adaptive_avg_pool1d(input, self.output_size)


class _AdaptiveMaxPool(_AdaptivePool):
    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = return_indices


class AdaptiveMaxPool2d(_AdaptiveMaxPool):
    """Max pooling to a fixed ``output_size`` (int, pair, or None in a pair to keep that
    input size), whatever the input size.

    Args:
        output_size: the output's (H, W).
        return_indices: also return the flat index h * W + w of each max in its input plane.

    Example:
        >>> nn.AdaptiveMaxPool2d((2, 3))(dtrain.randn(2, 8, 7, 5)).shape
        dtrain.Size([2, 8, 2, 3])
    """

    def forward(self, input):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)


class AdaptiveMaxPool1d(_AdaptiveMaxPool):
    """Max pooling of an (N, C, L) input to a fixed length ``output_size``.

    Args:
        output_size: the output's length.
        return_indices: also return the position of each max along L.

    Example:
        >>> nn.AdaptiveMaxPool1d(3)(dtrain.randn(2, 8, 7)).shape
        dtrain.Size([2, 8, 3])
    """

    def forward(self, input):
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)


class MaxPool1d(_MaxPoolNd):
    """The maximum over each ``kernel_size`` window of an (N, C, L) input.

    Args:
        kernel_size, stride (default ``kernel_size``), padding (-inf, at most half the
            kernel), dilation: ints.
        return_indices: also return the position of each max along L (for MaxUnpool1d).
        ceil_mode: use ceil instead of floor for the output size.

    Example:
        >>> nn.MaxPool1d(2)(dtrain.randn(1, 3, 8)).shape
        dtrain.Size([1, 3, 4])
    """

    _dims, _functional = 1, staticmethod(F.max_pool1d)


class AvgPool1d(Module):
    """The mean over each ``kernel_size`` window of an (N, C, L) input.

    Args:
        kernel_size, stride (default ``kernel_size``), padding: ints (kept as 1-tuples, as PyTorch).
        ceil_mode: use ceil instead of floor for the output size.
        count_include_pad: count the zero padding in the divisor.

    Example:
        >>> nn.AvgPool1d(2)(dtrain.randn(1, 3, 8)).shape
        dtrain.Size([1, 3, 4])
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        _check_window("AvgPool1d", kernel_size, kernel_size if stride is None else stride, padding, dims=1)
        one = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,)  # noqa: E731
        self.kernel_size = one(kernel_size)
        self.stride = one(stride if stride is not None else kernel_size)
        self.padding, self.ceil_mode, self.count_include_pad = one(padding), ceil_mode, count_include_pad

    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
