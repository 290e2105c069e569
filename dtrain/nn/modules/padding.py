"""Padding layers, 1-D and 2-D: zero, constant, reflection, replication and circular (as
torch.nn), each a fixed call of F.pad."""
from .. import functional as F
from ..module import Module
from ._checks import int_tuple


class _PadNd(Module):
    """``padding``: an int (every side) or (left, right[, top, bottom]); stored as that tuple."""

    mode, dims, show_value = "constant", 2, False

    def __init__(self, padding, value=0.0):
        super().__init__()
        # constant padding may be negative (it crops)
        self.padding = int_tuple(type(self).__name__, "padding", padding, 2 * self.dims,
                                 None if self.mode == "constant" else 0)
        self.value = value

    def forward(self, input):
        if input.ndim not in (self.dims + 1, self.dims + 2):
            layout = "(C, L) or (N, C, L)" if self.dims == 1 else "(C, H, W) or (N, C, H, W)"
            raise RuntimeError(f"{type(self).__name__}: expected a {self.dims + 1}-D or {self.dims + 2}-D input "
                               f"{layout}, got shape {list(input.shape)}")
        if self.mode == "constant":
            return F.pad(input, self.padding, "constant", self.value)
        return F.pad(input, self.padding, self.mode)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}" if self.show_value else f"{self.padding}"


class ConstantPad1d(_PadNd):
    """Pad the last dim of (N, C, L) with ``value``: padding = (left, right) or an int.

    Example:
        >>> nn.ConstantPad1d(2, 3.5)(dtrain.zeros(1, 1, 2))
        tensor([[[3.5000, 3.5000, 0.0000, 0.0000, 3.5000, 3.5000]]])
    """

    dims, show_value = 1, True

    def __init__(self, padding, value):
        super().__init__(padding, value)


class ConstantPad2d(_PadNd):
    """Pad the last two dims of (N, C, H, W) with ``value``: padding = (left, right, top,
    bottom) or an int (negative values crop).

    Example:
        >>> nn.ConstantPad2d((1, 0, 0, 1), 9.0)(dtrain.zeros(1, 1, 1, 1))
        tensor([[[[9., 0.],
                  [9., 9.]]]])
    """

    show_value = True

    def __init__(self, padding, value):
        super().__init__(padding, value)


class ZeroPad1d(ConstantPad1d):
    """Pad the last dim of (N, C, L) with zeros: padding = (left, right) or an int.

    Example:
        >>> nn.ZeroPad1d((1, 2))(dtrain.ones(1, 1, 2)).shape
        dtrain.Size([1, 1, 5])
    """

    show_value = False

    def __init__(self, padding):
        super().__init__(padding, 0.0)


class ZeroPad2d(ConstantPad2d):
    """Pad the last two dims of (N, C, H, W) with zeros: padding = (left, right, top, bottom) or an int.

    Example:
        >>> nn.ZeroPad2d(1)(dtrain.ones(1, 1, 2, 2)).shape
        dtrain.Size([1, 1, 4, 4])
    """

    show_value = False

    def __init__(self, padding):
        super().__init__(padding, 0.0)


class ReflectionPad1d(_PadNd):
    """Pad the last dim by reflecting it about its edge values (each padding < the input size).

    Example:
        >>> nn.ReflectionPad1d(2)(dtrain.tensor([[[0.0, 1.0, 2.0]]]))
        tensor([[[2., 1., 0., 1., 2., 1., 0.]]])
    """

    mode, dims = "reflect", 1


class ReflectionPad2d(_PadNd):
    """Pad the last two dims by reflection about the edges: padding = (left, right, top, bottom) or an int.

    Example:
        >>> nn.ReflectionPad2d(1)(dtrain.ones(1, 1, 3, 3)).shape
        dtrain.Size([1, 1, 5, 5])
    """

    mode = "reflect"


class ReplicationPad1d(_PadNd):
    """Pad the last dim by repeating its edge values.

    Example:
        >>> nn.ReplicationPad1d((0, 2))(dtrain.tensor([[[0.0, 1.0]]]))
        tensor([[[0., 1., 1., 1.]]])
    """

    mode, dims = "replicate", 1


class ReplicationPad2d(_PadNd):
    """Pad the last two dims by repeating the edge values: padding = (left, right, top, bottom) or an int.

    Example:
        >>> nn.ReplicationPad2d(1)(dtrain.ones(1, 1, 3, 3)).shape
        dtrain.Size([1, 1, 5, 5])
    """

    mode = "replicate"


class CircularPad1d(_PadNd):
    """Pad the last dim by wrapping around (periodic boundary).

    Example:
        >>> nn.CircularPad1d(1)(dtrain.tensor([[[0.0, 1.0, 2.0]]]))
        tensor([[[2., 0., 1., 2., 0.]]])
    """

    mode, dims = "circular", 1


class CircularPad2d(_PadNd):
    """Pad the last two dims by wrapping around: padding = (left, right, top, bottom) or an int.

    Example:
        >>> nn.CircularPad2d(1)(dtrain.ones(1, 1, 3, 3)).shape
        dtrain.Size([1, 1, 5, 5])
    """

    mode = "circular"
