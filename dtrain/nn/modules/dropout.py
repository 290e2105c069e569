"""Dropout: zero each element with probability p during training (as torch.nn.Dropout)."""
import numbers

from .. import functional as F
from ..module import Module


class Dropout(Module):
    """In training, zero each element with probability ``p`` and scale the rest by
    ``1 / (1 - p)``; in eval mode, the identity.

    Args:
        p: the probability of an element being zeroed (default 0.5).
        inplace: do it in place.

    Example:
        >>> nn.Dropout(0.2)(dtrain.ones(4, 5))
    """

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
