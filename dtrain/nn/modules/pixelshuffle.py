"""PixelShuffle and PixelUnshuffle (as torch.nn): channels to space and back."""
from .. import functional as F
from ..module import Module
from ._checks import check_int


class PixelShuffle(Module):
    """(*, C * r^2, H, W) -> (*, C, H * r, W * r), r = upscale_factor (sub-pixel convolution's last step).

    Example:
        >>> nn.PixelShuffle(2)(dtrain.randn(1, 8, 3, 3)).shape
        dtrain.Size([1, 2, 6, 6])
    """

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = check_int("PixelShuffle", "upscale_factor", upscale_factor, minimum=1)

    def forward(self, input):
        return F.pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """(*, C, H * r, W * r) -> (*, C * r^2, H, W), r = downscale_factor: the inverse of PixelShuffle.

    Example:
        >>> nn.PixelUnshuffle(2)(dtrain.randn(1, 2, 6, 6)).shape
        dtrain.Size([1, 8, 3, 3])
    """

    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = check_int("PixelUnshuffle", "downscale_factor", downscale_factor, minimum=1)

    def forward(self, input):
        return F.pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"
