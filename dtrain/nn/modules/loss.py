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
    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{reduction} is not a valid value for reduction: expected one of {_REDUCTIONS}")
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
