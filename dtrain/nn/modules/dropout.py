"""Dropout layers: zero elements (Dropout) or whole channels (Dropout1d/2d/3d) with
probability p during training (as torch.nn)."""
import numbers

from .. import functional as F
from ..module import Module


class _DropoutNd(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """In training, zero each element with probability ``p`` and scale the rest by
    ``1 / (1 - p)``; in eval mode, the identity.

    Args:
        p: the probability of an element being zeroed (default 0.5).
        inplace: accepted for PyTorch compatibility; computed out of place.

    Example:
        >>> nn.Dropout(0.2)(dtrain.ones(4, 5))
    """

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)


class Dropout1d(_DropoutNd):
    """In training, zero whole channels of a (N, C, L) or (C, L) input with probability ``p``
    and scale the rest by ``1 / (1 - p)``; in eval mode, the identity.

    Example:
        >>> nn.Dropout1d(0.2)(dtrain.ones(4, 3, 8))
    """

    def forward(self, input):
        return F.dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(_DropoutNd):
    """In training, zero whole channels of a (N, C, H, W) input with probability ``p`` and
    scale the rest by ``1 / (1 - p)``; in eval mode, the identity. A 3-D input is taken as
    (N, C, L), with PyTorch's warning.

    Example:
        >>> nn.Dropout2d(0.2)(dtrain.ones(4, 3, 8, 8))
    """

    def forward(self, input):
        return F.dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(_DropoutNd):
    """In training, zero whole channels of a (N, C, D, H, W) or (C, D, H, W) input with
    probability ``p`` and scale the rest by ``1 / (1 - p)``; in eval mode, the identity.

    Example:
        >>> nn.Dropout3d(0.2)(dtrain.ones(2, 3, 4, 4, 4))
    """

    def forward(self, input):
        return F.dropout3d(input, self.p, self.training, self.inplace)
