"""Losses beyond cross-entropy/NLL/MSE/L1/BCE-with-logits (those live in nn.py):
binary_cross_entropy, smooth_l1 and huber, kl_div (one Function each), and the margin
losses cosine_embedding, margin_ranking and triplet_margin (composites)."""
import warnings

from .. import backend, device_checks
from ..backend import get_array_module
from ..function import Function, unbroadcast
from ..tensor import Tensor
from .distance import pairwise_distance
from .elementwise import clamp, minimum, where
from .nn import _check_float, _pair_loss_args, _reduce, _reduction


def _clamped_log(v, positive):
    """max(log(v), -100) as PyTorch's BCE, computed without log(0) warnings; ``positive``
    is where v > 0 (elsewhere the result is -100)."""
    xp = get_array_module(v)
    return xp.where(positive, xp.maximum(xp.log(xp.where(positive, v, 1)), -100), -100).astype(v.dtype, copy=False)


class BinaryCrossEntropy(Function):
    """-w [t log(x) + (1 - t) log(1 - x)], each log clamped at -100 (so x = 0 or 1 stays finite)."""

    def forward(self, x, t, weight=None):
        self.logx = _clamped_log(x, x > 0)
        self.log1mx = _clamped_log(1 - x, x < 1)
        self.x, self.t, self.weight = x, t, weight
        loss = -(t * self.logx + (1 - t) * self.log1mx)
        return loss if weight is None else loss * weight

    def backward(self, g):
        xp = get_array_module(g)
        nx, nt = self.needs_input_grad
        x, t = self.x, self.t
        g = g if self.weight is None else g * self.weight
        # PyTorch's kernel: (x - t) / max(x (1 - x), 1e-12)
        gx = g * (x - t) / xp.maximum(x * (1 - x), 1e-12) if nx else None
        gt = g * (self.log1mx - self.logx) if nt else None
        return gx, gt


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """Binary cross-entropy between probabilities ``input`` and ``target``, both in [0, 1].

    Each log is clamped at -100, as PyTorch, so an input of exactly 0 or 1 gives a finite loss.

    Args:
        input: probabilities, any shape.
        target: probabilities of the input's shape. A value of either outside [0, 1] raises
            RuntimeError: at once on the CPU; on a GPU at the next host synchronisation
            (``.item()``, printing; ``dtrain.tensor.device_checks``), checked on the device.
        weight: optional rescaling of each element's loss, broadcast to the input's shape.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.

    Example:
        >>> F.binary_cross_entropy(dtrain.tensor([0.5, 0.9]), dtrain.tensor([1.0, 1.0]))
        tensor(0.3993)
    """
    op = "binary_cross_entropy"
    reduction = _reduction(reduction, size_average, reduce, op)
    _check_float(input, op)
    if not isinstance(target, Tensor) or target.shape != input.shape:
        shape = list(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"{op}: Using a target size ({shape}) that is different to the input size "
                         f"({list(input.shape)}) is deprecated. Please ensure they have the same size.")
    target = target.to(input.dtype)
    for name, t in (("input", input), ("target", target)):
        a = t.array
        if not a.size:
            continue
        inside = ((a >= 0) & (a <= 1)).all()  # NaN fails too

        def make_error(lo, hi, name=name):
            return RuntimeError(f"{op}: all elements of {name} should be between 0 and 1, got values in [{lo}, {hi}]")
        if backend.is_cuda_array(a):  # raised at the next host synchronisation (device_checks)
            device_checks.defer(get_array_module(a), ~inside, [a.min(), a.max()], (op, name), make_error)
        elif not inside:
            raise make_error(float(a.min()), float(a.max()))
    consts = {}
    if weight is not None:
        try:
            if backend.broadcast_shapes(tuple(weight.shape), tuple(input.shape)) != tuple(input.shape):
                raise ValueError
        except ValueError:
            raise ValueError(f"{op}: weight of shape {list(weight.shape)} does not broadcast to the input's "
                             f"shape {list(input.shape)}") from None
        consts["weight"] = weight.array.astype(input.dtype, copy=False)
    return _reduce(BinaryCrossEntropy.apply(input, target, **consts), reduction)


class Huber(Function):
    """scale * (0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)), of d = input - target.
    Its gradient is scale * clip(d, -delta, delta)."""

    def forward(self, d, delta=1.0, scale=1.0):
        xp = get_array_module(d)
        self.d, self.delta, self.scale = d, delta, scale
        ad = xp.abs(d)
        return xp.where(ad < delta, (0.5 * scale) * d * d, (scale * delta) * (ad - 0.5 * delta))

    def backward(self, g):
        return g * (get_array_module(g).clip(self.d, -self.delta, self.delta) * self.scale)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target); beta = 0 is L1.

    Args:
        input, target: Tensors of the same shape (broadcast, with a warning, if not).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        beta: where the loss turns from quadratic to linear (>= 0).

    Example:
        >>> F.smooth_l1_loss(dtrain.tensor([0.5, 3.0]), dtrain.tensor([0.0, 0.0]))
        tensor(1.3125)
    """
    op = "smooth_l1_loss"
    reduction = _reduction(reduction, size_average, reduce, op)
    if beta < 0:
        raise RuntimeError(f"{op}: beta must be non-negative, got {beta}")
    _check_float(input, op)
    _pair_loss_args(input, target, op)
    d = input - target
    return _reduce(d.abs() if beta == 0 else Huber.apply(d, delta=beta, scale=1.0 / beta), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta) (d = input - target).

    Args:
        input, target: Tensors of the same shape (broadcast, with a warning, if not).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        delta: where the loss turns from quadratic to linear (> 0).
        weight: optional per-element weights of the input's shape; 'mean' is then the plain
            mean of the weighted losses (as PyTorch's huber_loss, unlike mse_loss).

    Example:
        >>> F.huber_loss(dtrain.tensor([0.5, 3.0]), dtrain.tensor([0.0, 0.0]), delta=2.0)
        tensor(2.0625)
    """
    op = "huber_loss"
    reduction = _reduction(reduction, None, None, op)
    if not delta > 0:
        raise RuntimeError(f"{op}: delta must be positive, got {delta}")
    _check_float(input, op)
    _pair_loss_args(input, target, op)
    loss = Huber.apply(input - target, delta=delta)
    if weight is not None:
        if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(input.shape):
            got = list(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"{op}: weight must have the input's shape {list(input.shape)}, got {got}")
        loss = loss * weight
    return _reduce(loss, reduction)


class KLDiv(Function):
    """Pointwise KL divergence of log-probabilities x from target t: t (log t - x), 0 where
    t = 0; with ``log_target`` (t holds log-probabilities): exp(t) (t - x)."""

    def forward(self, x, t, log_target=False):
        xp = get_array_module(x, t)
        self.x, self.t, self.log_target = x, t, log_target
        if log_target:
            self.et = xp.exp(t)
            return self.et * (t - x)
        self.logt = xp.log(xp.where(t > 0, t, 1))  # xlogy: t log t is 0 at t = 0
        return t * self.logt - t * x

    def backward(self, g):
        nx, nt = self.needs_input_grad
        x, t = self.x, self.t
        if self.log_target:
            gx = -g * self.et if nx else None
            gt = g * self.et * (t - x + 1) if nt else None
        else:
            gx = -g * t if nx else None
            gt = g * (self.logt + 1 - x) if nt else None
        return (None if gx is None else unbroadcast(gx, x.shape),
                None if gt is None else unbroadcast(gt, t.shape))


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """KL divergence loss: ``input`` holds log-probabilities, ``target`` probabilities (or
    log-probabilities with ``log_target=True``); pointwise target * (log(target) - input).

    Args:
        input: log-probabilities, any shape.
        target: the input's shape (broadcast if not).
        reduction: ``'batchmean'`` (the sum divided by the batch size: the KL divergence's
            mean over samples), ``'mean'`` (over every element, with PyTorch's warning),
            ``'sum'`` or ``'none'``.
        log_target: the target is given as log-probabilities.

    Example:
        >>> p = dtrain.tensor([[0.5, 0.5]])
        >>> F.kl_div(dtrain.tensor([[0.25, 0.75]]).log(), p, reduction="batchmean")
        tensor(0.1438)
    """
    op = "kl_div"
    if size_average is not None or reduce is not None or reduction != "batchmean":
        reduction = _reduction(reduction, size_average, reduce, op)
        if reduction == "mean" and size_average is None and reduce is None:
            warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                          "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                          "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                          UserWarning, stacklevel=2)
    _check_float(input, op)
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be a Tensor, got {type(target).__name__}")
    try:
        backend.broadcast_shapes(tuple(input.shape), tuple(target.shape))
    except ValueError:
        raise RuntimeError(f"{op}: target of shape {list(target.shape)} does not broadcast with input of shape "
                           f"{list(input.shape)}") from None
    loss = KLDiv.apply(input, target.to(input.dtype), log_target=log_target)
    if reduction == "batchmean":
        return loss.sum() / input.shape[0] if input.ndim else loss.sum()
    return _reduce(loss, reduction)


def _check_targets(op, target):
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be a Tensor of 1 and -1, got {type(target).__name__}")


def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    """1 - cos(x1, x2) where target is 1, max(0, cos(x1, x2) - margin) where it is -1.

    The cosine is PyTorch's: sum(x1 x2) / sqrt((|x1|^2 + 1e-12)(|x2|^2 + 1e-12)).

    Args:
        input1, input2: (N, D), or (D,) for one pair.
        target: (N,) (or ()) of 1 (similar) and -1 (dissimilar).
        margin: in [-1, 1]; dissimilar pairs cost only above it (default 0).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.

    Example:
        >>> x = dtrain.tensor([[1.0, 0.0]])
        >>> F.cosine_embedding_loss(x, x, dtrain.tensor([1.0]))
        tensor(0.)
    """
    op = "cosine_embedding_loss"
    reduction = _reduction(reduction, size_average, reduce, op)
    _check_targets(op, target)
    if target.ndim not in (0, 1):
        raise RuntimeError(f"{op}: expected a 0-D or 1-D target (multi-target not supported), got shape "
                           f"{list(target.shape)}")
    want = target.ndim + 1
    if input1.ndim != want or input2.ndim != want:
        raise RuntimeError(f"{op}: a {target.ndim}D target expects {want}D input tensors, but found inputs with "
                           f"sizes {list(input1.shape)} and {list(input2.shape)}")
    dim = target.ndim
    eps = 1e-12
    prod = (input1 * input2).sum(dim)
    denom = (((input1 * input1).sum(dim) + eps) * ((input2 * input2).sum(dim) + eps)).sqrt()
    cos = prod / denom
    t = target.array
    loss = where(Tensor._wrap(t == 1), 1 - cos, 0.0) + where(Tensor._wrap(t == -1), clamp(cos - margin, min=0), 0.0)
    return _reduce(loss, reduction)


def margin_ranking_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    """max(0, -target * (input1 - input2) + margin): target 1 asks input1 to rank higher.

    Args:
        input1, input2: (N,) scores (or ()).
        target: the inputs' shape, of 1 and -1.
        margin: the required gap (default 0).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.

    Example:
        >>> F.margin_ranking_loss(dtrain.tensor([1.0]), dtrain.tensor([2.0]), dtrain.tensor([1.0]))
        tensor(1.)
    """
    op = "margin_ranking_loss"
    reduction = _reduction(reduction, size_average, reduce, op)
    _check_targets(op, target)
    if not input1.ndim == input2.ndim == target.ndim:
        raise RuntimeError(f"{op}: all input tensors should have the same number of dimensions, but got sizes: "
                           f"input1: {list(input1.shape)}, input2: {list(input2.shape)}, target: "
                           f"{list(target.shape)}")
    return _reduce(clamp(-target * (input1 - input2) + margin, min=0), reduction)


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, size_average=None,
                        reduce=None, reduction="mean"):
    """max(0, d(a, p) - d(a, n) + margin), d the p-norm pairwise distance; with ``swap``,
    d(a, n) is replaced by min(d(a, n), d(p, n)) (the distance swap of Balntas et al.).

    Args:
        anchor, positive, negative: (N, D) (or (D,)), all of the same number of dims.
        margin: the required gap (default 1).
        p: the norm's exponent (default 2).
        eps: added to the differences (see :func:`pairwise_distance`).
        swap: use the distance swap.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.

    Example:
        >>> a = dtrain.tensor([[0.0, 0.0]])
        >>> F.triplet_margin_loss(a, a, a + 3.0, eps=0.0)
        tensor(0.)
    """
    op = "triplet_margin_loss"
    reduction = _reduction(reduction, size_average, reduce, op)
    for name, t in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise RuntimeError(f"{op}: the anchor, positive, and negative tensors are expected to have the same number "
                           f"of dimensions, but got: anchor {anchor.ndim}D, positive {positive.ndim}D, and "
                           f"negative {negative.ndim}D inputs")
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce(clamp(margin + d_pos - d_neg, min=0), reduction)
