"""Upsample, UpsamplingNearest2d and UpsamplingBilinear2d (as torch.nn): F.interpolate as a layer."""
from .. import functional as F
from ..module import Module


class Upsample(Module):
    """Resize (N, C, L) or (N, C, H, W) input to ``size``, or by ``scale_factor``.

    Args:
        size: the output's spatial size (int or one per dim).
        scale_factor: or a multiplier (number or one per dim).
        mode: 'nearest' (default), 'nearest-exact', 'linear' (3-D input) or 'bilinear' (4-D).
        align_corners: linear modes: align the corner pixels' centres (True) or edges (False/None).
        recompute_scale_factor: resample with in / out instead of 1 / scale_factor.

    Example:
        >>> nn.Upsample(scale_factor=2, mode="bilinear")(dtrain.randn(1, 3, 4, 4)).shape
        dtrain.Size([1, 3, 8, 8])
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size = size
        if isinstance(scale_factor, (tuple, list)):
            self.scale_factor = tuple(float(s) for s in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor is not None else None
        self.mode, self.align_corners, self.recompute_scale_factor = mode, align_corners, recompute_scale_factor

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self):
        info = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{info}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """Nearest-neighbour upsampling of (N, C, H, W) input (``Upsample(mode='nearest')``).

    Example:
        >>> nn.UpsamplingNearest2d(scale_factor=2)(dtrain.randn(1, 3, 4, 4)).shape
        dtrain.Size([1, 3, 8, 8])
    """

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """Bilinear upsampling of (N, C, H, W) input with ``align_corners=True`` (as PyTorch's).

    Example:
        >>> nn.UpsamplingBilinear2d(size=(5, 5))(dtrain.randn(1, 3, 4, 4)).shape
        dtrain.Size([1, 3, 5, 5])
    """

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
