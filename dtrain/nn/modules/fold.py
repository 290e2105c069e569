"""Fold and Unfold (as torch.nn): sliding blocks to columns (im2col) and back (col2im)."""
from .. import functional as F
from ..module import Module


class Fold(Module):
    """Sum columns of sliding blocks (N, C * kH * kW, L) back into an (N, C, H, W) image;
    the adjoint of Unfold (overlapping values add up).

    Args:
        output_size: the image's (H, W).
        kernel_size, dilation, padding, stride: an int or a pair, as for Unfold.

    Example:
        >>> nn.Fold((4, 5), 2)(dtrain.randn(1, 12, 12)).shape
        dtrain.Size([1, 3, 4, 5])
    """

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, input):
        return F.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"output_size={self.output_size}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")


class Unfold(Module):
    """Sliding blocks of an (N, C, H, W) image as columns (N, C * kH * kW, L) (im2col).

    Args:
        kernel_size, dilation, padding (zeros, both sides), stride: an int or a pair.

    Example:
        >>> nn.Unfold(2)(dtrain.randn(1, 3, 4, 5)).shape
        dtrain.Size([1, 12, 12])
    """

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, input):
        return F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
                f"stride={self.stride}")
