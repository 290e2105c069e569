"""Loss modules (as torch.nn): each holds its settings and calls dtrain.nn.functional."""
from .. import functional as F
from ..module import Module

_REDUCTIONS = ("none", "mean", "sum")


def _legacy_reduction(size_average, reduce):
    """PyTorch's deprecated size_average/reduce flags, as a reduction string."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


class _Loss(Module):
    _reductions = _REDUCTIONS

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce)
        if reduction not in self._reductions:
            raise ValueError(f"{reduction} is not a valid value for reduction: expected one of {self._reductions}")
        self.reduction = reduction


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)  # a buffer, as in PyTorch: it moves with .to()


class MSELoss(_Loss):
    """Mean squared error: reduce((input - target)^2).

    Example:
        >>> nn.MSELoss()(dtrain.tensor([1.0, 2.0]), dtrain.tensor([1.0, 4.0]))
        tensor(2.)
    """

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error: reduce(|input - target|)."""

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class NLLLoss(_WeightedLoss):
    """Negative log likelihood of class ``target`` given log-probabilities ``input`` (N, C, ...).

    Args:
        weight: a per-class weight of shape (C,).
        ignore_index: targets equal to this contribute nothing (default -100).
        reduction: "mean" (weighted mean over non-ignored targets), "sum" or "none".
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Cross entropy between logits ``input`` (N, C, ...) and class indices or class
    probabilities ``target``; log_softmax + NLL in one stable op.

    Args:
        weight: a per-class weight of shape (C,).
        ignore_index: class-index targets equal to this contribute nothing (default -100).
        reduction: "mean", "sum" or "none".
        label_smoothing: in [0, 1]: mix the target with the uniform distribution.

    Example:
        >>> nn.CrossEntropyLoss()(dtrain.randn(4, 10), dtrain.tensor([1, 0, 9, 3]))
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy on logits (sigmoid folded in, numerically stable).

    Args:
        weight: a rescaling weight broadcast against the loss of each element.
        reduction: "mean", "sum" or "none".
        pos_weight: a weight of positive examples, broadcast along the class dim.

    Example:
        >>> nn.BCEWithLogitsLoss()(dtrain.randn(3), dtrain.tensor([0.0, 1.0, 1.0]))
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


class BCELoss(_WeightedLoss):
    """Binary cross entropy between probabilities ``input`` and ``target`` (logs clamped at -100).

    Args:
        weight: a rescaling weight broadcast against the loss of each element.
        reduction: "mean", "sum" or "none".

    Example:
        >>> nn.BCELoss()(dtrain.tensor([0.5, 0.9]), dtrain.tensor([1.0, 1.0]))
        tensor(0.3993)
    """

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta, of d = input - target.

    Args:
        reduction: "mean", "sum" or "none".
        beta: the quadratic-to-linear threshold (default 1.0; 0 gives L1).

    Example:
        >>> nn.SmoothL1Loss()(dtrain.tensor([0.5, 3.0]), dtrain.tensor([0.0, 0.0]))
        tensor(1.3125)
    """

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta), of d = input - target.

    Args:
        reduction: "mean", "sum" or "none".
        delta: the quadratic-to-linear threshold (default 1.0).

    Example:
        >>> nn.HuberLoss(delta=2.0)(dtrain.tensor([0.5, 3.0]), dtrain.tensor([0.0, 0.0]))
        tensor(2.0625)
    """

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input, target):
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class KLDivLoss(_Loss):
    """KL divergence of the log-probabilities ``input`` from ``target``.

    Args:
        reduction: "batchmean" (the sum over the batch size: the true KL mean), "mean"
            (over every element, with PyTorch's warning), "sum" or "none".
        log_target: the target holds log-probabilities.

    Example:
        >>> loss = nn.KLDivLoss(reduction="batchmean")
        >>> loss(dtrain.tensor([[0.25, 0.75]]).log(), dtrain.tensor([[0.5, 0.5]]))
        tensor(0.1438)
    """

    _reductions = _REDUCTIONS + ("batchmean",)

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class _PairMarginLoss(_Loss):
    """A loss of two inputs and a target with a ``margin`` (0 by default): ``_functional``."""

    _functional = None

    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1, input2, target):
        return self._functional(input1, input2, target, margin=self.margin, reduction=self.reduction)


class CosineEmbeddingLoss(_PairMarginLoss):
    """1 - cos(x1, x2) for target 1, max(0, cos(x1, x2) - margin) for target -1.

    Args:
        margin: in [-1, 1] (default 0).
        reduction: "mean", "sum" or "none".

    Example:
        >>> x = dtrain.randn(4, 8)
        >>> nn.CosineEmbeddingLoss()(x, x, dtrain.ones(4))
        tensor(0.)
    """

    _functional = staticmethod(F.cosine_embedding_loss)


class MarginRankingLoss(_PairMarginLoss):
    """max(0, -target * (x1 - x2) + margin): target 1 asks x1 to rank above x2 by margin.

    Example:
        >>> nn.MarginRankingLoss()(dtrain.tensor([1.0]), dtrain.tensor([2.0]), dtrain.tensor([1.0]))
        tensor(1.)
    """

    _functional = staticmethod(F.margin_ranking_loss)


class TripletMarginLoss(_Loss):
    """max(0, d(a, p) - d(a, n) + margin) with the p-norm pairwise distance d.

    Args:
        margin: the required gap (default 1.0).
        p: the norm's exponent (default 2).
        eps: added to the differences (default 1e-6).
        swap: use min(d(a, n), d(p, n)) as the negative distance.
        reduction: "mean", "sum" or "none".

    Example:
        >>> a, p, n = dtrain.randn(4, 8), dtrain.randn(4, 8), dtrain.randn(4, 8)
        >>> nn.TripletMarginLoss()(a, p, n).shape
        dtrain.Size([])
    """

    def __init__(self, margin=1.0, p=2.0, eps=1e-6, swap=False, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        if margin <= 0:
            raise ValueError(f"TripletMarginLoss: expected margin to be greater than 0, got {margin} instead")
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap

    def forward(self, anchor, positive, negative):
        return F.triplet_margin_loss(anchor, positive, negative, margin=self.margin, p=self.p, eps=self.eps,
                                     swap=self.swap, reduction=self.reduction)
