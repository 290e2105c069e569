"""Distance layers: PairwiseDistance and CosineSimilarity (as torch.nn)."""
from .. import functional as F
from ..module import Module


class PairwiseDistance(Module):
    """The p-norm of ``x1 - x2 + eps`` along the last dim.

    Args:
        p: the norm's exponent (default 2).
        eps: added to the difference (default 1e-6).
        keepdim: keep the reduced dim.

    Example:
        >>> nn.PairwiseDistance()(dtrain.randn(4, 3), dtrain.randn(4, 3)).shape
        dtrain.Size([4])
    """

    def __init__(self, p=2.0, eps=1e-6, keepdim=False):
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def forward(self, x1, x2):
        return F.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)


class CosineSimilarity(Module):
    """Cosine of the angle between x1 and x2 along ``dim`` (inputs broadcast together).

    Args:
        dim: the dim of the vectors (default 1).
        eps: the smallest norm used as a divisor (default 1e-8).

    Example:
        >>> nn.CosineSimilarity()(dtrain.randn(4, 3), dtrain.randn(4, 3)).shape
        dtrain.Size([4])
    """

    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1, x2):
        return F.cosine_similarity(x1, x2, self.dim, self.eps)
