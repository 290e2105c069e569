"""Losses: cross_entropy and nll_loss (one fused Function, class indices or probabilities),
mse and l1, binary_cross_entropy_with_logits, binary_cross_entropy, smooth_l1 and huber,
kl_div (one Function each), and the margin losses cosine_embedding, margin_ranking and
triplet_margin (composites)."""
import warnings

from .. import backend, device_checks, dtypes
from ..backend import get_array_module
from ..function import Function, on_input_device, unbroadcast
from ..tensor import Tensor
from .autocast import autocast_call, bfloat16_input, fp32_math, open_regions, thread_state
from ._checks import check_float
from .activation import _log_softmax, log_softmax
from .distance import pairwise_distance
from .elementwise import clamp, minimum, where
from .shape import unsqueeze


def _resolve_reduction(reduction, size_average, reduce, op, stacklevel=3):
    if size_average is not None or reduce is not None:  # the legacy pair, mapped as PyTorch does
        warnings.warn("size_average and reduce args will be deprecated, please use reduction= instead.",
                      UserWarning, stacklevel=stacklevel)
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "none" if not reduce else "mean" if size_average else "sum"
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction; expected 'none', 'mean' or 'sum'")
    return reduction


def _apply_reduction(loss, reduction):
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


class ClassNLL(Function):
    """Negative log-likelihood of class indices along dim 1, optionally fused with log_softmax
    (cross_entropy): class weights, ignore_index, label smoothing and the weighted mean.

    Per element n: loss_n = -(1 - s) w[y_n] logp[n, y_n] - (s / C) sum_c w_c logp[n, c], zero
    where y_n == ignore_index; 'mean' divides the sum by sum_n w[y_n] over kept elements.
    """

    def forward(self, x, target, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0, logits=True):
        logp = _log_softmax(x, 1) if logits else x
        keep = target != ignore_index
        y = target * keep  # ignored elements point at class 0; their weight is 0
        wy = keep.astype(x.dtype) if weight is None else weight[y] * keep
        self.index = _class_index(y)
        loss = logp[self.index] * wy
        loss *= smoothing - 1
        self.wb = None
        if smoothing:
            c = x.shape[1]
            self.wb = None if weight is None else weight.reshape((c,) + (1,) * (x.ndim - 2))
            total = (logp.sum(axis=1) if weight is None else (logp * self.wb).sum(axis=1)) * keep
            loss -= total * (smoothing / c)
        self.logp, self.keep, self.wy = logp if logits else None, keep, wy
        self.reduction, self.smoothing, self.logits, self.shape = reduction, smoothing, logits, x.shape
        if reduction == "none":
            return loss
        if reduction == "sum":
            return loss.sum()
        self.denom = wy.sum()
        return loss.sum() / self.denom

    def backward(self, g):
        xp = get_array_module(g)
        c, s = self.shape[1], self.smoothing
        scale = g / self.denom if self.reduction == "mean" else g
        # d loss / d logp = -(1 - s) w[y] onehot(y) - (s / C) w, times the reduction's scale:
        # ``picked`` at the targets, ``spread`` (times w) everywhere
        picked = (s - 1) * scale * self.wy
        total = picked  # the sum over classes, for log_softmax's backward
        if s:
            spread = scale * self.keep * (-s / c)
            total = picked + spread * (c if self.wb is None else self.wb.sum())
        if self.logits:  # log_softmax's backward: glogp - softmax * sum_c glogp
            glogp = xp.exp(self.logp)
            glogp *= -total[:, None]
        else:
            glogp = xp.zeros(self.shape, dtype=self.wy.dtype)
        if s:
            glogp += spread[:, None] if self.wb is None else spread[:, None] * self.wb
        glogp[self.index] += picked  # one target per element: no repeated index
        return glogp, None


def _class_index(y):
    """The index that picks entry [n, y[n, d...], d...] of an (N, C, d...) array."""
    xp = get_array_module(y)
    grids = [xp.arange(n).reshape((1,) * i + (n,) + (1,) * (y.ndim - 1 - i)) for i, n in enumerate(y.shape)]
    return (grids[0], y) + tuple(grids[1:])


def _class_target(input, target, weight, op):
    """Check the (input, class-index target, weight) triple; add the batch dim to unbatched input."""
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be a Tensor, got {type(target).__name__}")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    unbatched = input.ndim == 1
    if unbatched:
        input, target = unsqueeze(input, 0), target.reshape(1) if target.ndim == 0 else target
    expected = (input.shape[0],) + tuple(input.shape[2:])
    if target.dtype.kind not in "iu":
        raise RuntimeError(f"{op}: expected target of class indices (an integer dtype, shape {list(expected)}) "
                           f"or class probabilities (floating, the input's shape {list(input.shape)}), "
                           f"got target of dtype {target.dtype} and shape {list(target.shape)}")
    if tuple(target.shape) != expected:
        raise ValueError(f"{op}: expected target of shape {list(expected)} for input of shape "
                         f"{list(input.shape)} (classes along dim 1), got target shape {list(target.shape)}")
    weight = _class_weight(weight, input.shape[1], input, op)
    return input, target, None if weight is None else weight.array.astype(input.dtype, copy=False), unbatched


def _class_weight(weight, c, input, op):
    if weight is not None:
        if not isinstance(weight, Tensor) or tuple(weight.shape) != (c,):
            shape = list(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"{op}: weight must be a Tensor of shape [{c}] (one per class), got {shape}")
        if weight.device != input.device:
            raise RuntimeError(f"{op}: weight is on {weight.device} but input is on {input.device}")
    return weight


def _check_classes(target, c, ignore_index, op):
    """Class indices in [0, c) or ``ignore_index``; on a GPU checked on the device, the error
    raised at the next host synchronisation (device_checks)."""
    t = target.array
    if not t.size:
        return
    if backend.is_cuda_array(t):
        xp = get_array_module(t)
        device_checks.check_range(
            xp.where(t == ignore_index, 0, t), 0, c, (op, c, ignore_index),
            lambda lo, hi: IndexError(f"{op}: target {hi if hi >= c else lo} is out of bounds: expected class "
                                      f"indices in [0, {c - 1}] or ignore_index ({ignore_index})"))
        return
    if 0 <= int(t.min()) and int(t.max()) < c:
        return
    bad = t[(t != ignore_index) & ((t < 0) | (t >= c))]
    if bad.size:
        raise IndexError(f"{op}: target {int(bad[0])} is out of bounds: expected class indices in "
                         f"[0, {c - 1}] or ignore_index ({ignore_index})")


def _class_nll(input, target, weight, ignore_index, reduction, smoothing, logits, op):
    input, target, weight, unbatched = _class_target(input, target, weight, op)
    _check_classes(target, input.shape[1], ignore_index, op)
    loss = ClassNLL.apply(input, target.array, weight=weight, ignore_index=ignore_index, reduction=reduction,
                          smoothing=smoothing, logits=logits)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


@on_input_device
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy between logits and targets: log_softmax and nll_loss fused in one op.

    Args:
        input: logits of shape (N, C), (N, C, d1, ...) or (C,).
        target: class indices (integer dtype) of shape (N,), (N, d1, ...) or (); or class
            probabilities (floating) of the input's shape. An index out of [0, C) raises
            IndexError: at once on the CPU; on a GPU at the next host synchronisation
            (``.item()``, printing; ``dtrain.tensor.device_checks``), checked on the device.
        weight: optional per-class weights, shape (C,).
        ignore_index: target value that contributes neither loss nor gradient (index targets).
        reduction: ``'mean'`` (weighted: divided by the sum of the kept targets' weights),
            ``'sum'`` or ``'none'``.
        label_smoothing: in [0, 1]; the target becomes (1 - s) * onehot + s / C.

    Returns:
        The loss: a scalar, or per element for ``reduction='none'``.

    Example:
        >>> F.cross_entropy(dtrain.tensor([[2.0, 0.5]]), dtrain.tensor([0]))
        tensor(0.2014)
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(cross_entropy, "cross_entropy", **locals())
    if bfloat16_input(input):  # float32 math, the result rounded once (as torch's CPU kernel)
        return fp32_math(cross_entropy, **locals())
    reduction = _resolve_reduction(reduction, size_average, reduce, "cross_entropy")
    check_float(input, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if isinstance(target, Tensor) and dtypes.is_floating(target.dtype) and target.shape == input.shape:
        return _soft_cross_entropy(input, target, weight, reduction, label_smoothing)
    return _class_nll(input, target, weight, ignore_index, reduction, label_smoothing, True, "cross_entropy")


def _soft_cross_entropy(input, target, weight, reduction, smoothing):
    axis = 1 if input.ndim > 1 else 0
    c = input.shape[axis]
    if smoothing:
        target = target * (1 - smoothing) + smoothing / c
    prod = log_softmax(input, axis) * target
    if _class_weight(weight, c, input, "cross_entropy") is not None:
        prod = prod * weight.reshape((c,) + (1,) * (input.ndim - axis - 1))
    return _apply_reduction(-prod.sum(axis), reduction)


@on_input_device
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """Negative log-likelihood of class indices, for log-probabilities ``input``.

    Args:
        input: log-probabilities of shape (N, C), (N, C, d1, ...) or (C,).
        target: class indices of shape (N,), (N, d1, ...) or () (checked as in :func:`cross_entropy`).
        weight, ignore_index, reduction: as in :func:`cross_entropy`.

    Example:
        >>> F.nll_loss(dtrain.tensor([[-0.1, -2.3]]), dtrain.tensor([1]))
        tensor(2.3000)
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(nll_loss, "nll_loss", **locals())
    if bfloat16_input(input):  # float32 math, the result rounded once (as torch's CPU kernel)
        return fp32_math(nll_loss, **locals())
    reduction = _resolve_reduction(reduction, size_average, reduce, "nll_loss")
    check_float(input, "nll_loss")
    return _class_nll(input, target, weight, ignore_index, reduction, 0.0, False, "nll_loss")


def _pair_loss_args(input, target, op):
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be a Tensor, got {type(target).__name__}")
    if target.shape != input.shape:
        warnings.warn(f"{op}: using a target size ({list(target.shape)}) that is different to the input size "
                      f"({list(input.shape)}); they are broadcast, which is likely not what you want.",
                      UserWarning, stacklevel=3)


def _pointwise_loss(loss, weight, reduction, input, op):
    """Reduce an elementwise loss; with ``weight`` (the input's shape) 'mean' is the weighted mean."""
    if weight is None:
        return _apply_reduction(loss, reduction)
    if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(input.shape):
        got = list(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{op}: weight must have the input's shape {list(input.shape)}, got {got}")
    loss = loss * weight
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.sum() / weight.sum()


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean squared error (input - target)^2, reduced.

    Args:
        input, target: Tensors of the same shape (broadcast, with a warning, if not).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        weight: optional per-element weights of the input's shape; 'mean' is then
            sum(weight * loss) / sum(weight), as PyTorch.

    Example:
        >>> F.mse_loss(dtrain.tensor([1.0, 3.0]), dtrain.tensor([0.0, 0.0]))
        tensor(5.)
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(mse_loss, "mse_loss", **locals())
    reduction = _resolve_reduction(reduction, size_average, reduce, "mse_loss")
    _pair_loss_args(input, target, "mse_loss")
    diff = input - target
    return _pointwise_loss(diff * diff, weight, reduction, input, "mse_loss")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean absolute error |input - target|, reduced; arguments as :func:`mse_loss`.

    Example:
        >>> F.l1_loss(dtrain.tensor([1.0, -3.0]), dtrain.tensor([0.0, 0.0]))
        tensor(2.)
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(l1_loss, "l1_loss", **locals())
    reduction = _resolve_reduction(reduction, size_average, reduce, "l1_loss")
    _pair_loss_args(input, target, "l1_loss")
    return _pointwise_loss((input - target).abs(), weight, reduction, input, "l1_loss")


class BCEWithLogits(Function):
    """-w [p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], written with softplus(-x) =
    log1p(exp(-|x|)) + max(-x, 0) so that no exp overflows."""

    def forward(self, x, t, weight=None, pos_weight=None):
        xp = get_array_module(x, t)
        sp = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)  # softplus(-x) = -log sigmoid(x)
        lw = 1 if pos_weight is None else 1 + (pos_weight - 1) * t
        self.x, self.t, self.sp, self.lw, self.weight, self.pos_weight = x, t, sp, lw, weight, pos_weight
        loss = (1 - t) * x + lw * sp
        return loss if weight is None else loss * weight

    def backward(self, g):
        xp = get_array_module(g)
        nx, nt = self.needs_input_grad
        g = g if self.weight is None else g * self.weight
        gx = gt = None
        if nx:  # d/dx = (1 - t) - lw * sigmoid(-x)
            gx = g * ((1 - self.t) - self.lw * (0.5 - 0.5 * xp.tanh(self.x * 0.5)))
        if nt:  # d/dt = (pos_weight - 1) * softplus(-x) - x
            gt = g * (-self.x if self.pos_weight is None else (self.pos_weight - 1) * self.sp - self.x)
        return gx, gt


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Binary cross-entropy of sigmoid(input) against ``target``, stable for any logit.

    Args:
        input: logits, any shape.
        target: probabilities in [0, 1], the input's shape.
        weight: optional rescaling, broadcast to the input's shape.
        pos_weight: optional weight of the positive term, broadcast along the last dims
            (one per class).
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.

    Example:
        >>> F.binary_cross_entropy_with_logits(dtrain.tensor([0.0]), dtrain.tensor([1.0]))
        tensor(0.6931)
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(binary_cross_entropy_with_logits, "binary_cross_entropy_with_logits", **locals())
    op = "binary_cross_entropy_with_logits"
    reduction, target = _binary_args(input, target, op, (reduction, size_average, reduce), lambda shape: (
        f"{op}: target size ({shape}) must be the same as input size ({list(input.shape)})"))
    consts = _binary_weights(input, op, False, weight=weight, pos_weight=pos_weight)
    return _apply_reduction(BCEWithLogits.apply(input, target, **consts), reduction)


def _binary_args(input, target, op, reduction_args, mismatch):  # noqa: A002
    """The binary cross-entropies' resolved reduction (from ``(reduction, size_average,
    reduce)``) and checked target (``mismatch(shape)``: the message for another shape)."""
    # the warning about size_average/reduce points at the loss's caller, one frame further up
    return _resolve_reduction(*reduction_args, op, stacklevel=4), _binary_target(input, target, op, mismatch)


def _binary_target(input, target, op, mismatch):
    """The target in the input's dtype, for the binary cross-entropies: the input must be
    floating and the target a Tensor of its shape, else ValueError ``mismatch(target's shape)``
    (PyTorch words it differently for the two losses)."""
    check_float(input, op)
    if not isinstance(target, Tensor) or target.shape != input.shape:
        raise ValueError(mismatch(list(target.shape) if isinstance(target, Tensor) else type(target).__name__))
    return target.to(input.dtype)


def _binary_weights(input, op, exact, **weights):
    """The given weights (None: not given) as arrays of the input's dtype, each checked to
    broadcast with the input's shape (``exact``: to broadcast to that very shape)."""
    consts = {}
    for name, w in weights.items():
        if w is None:
            continue
        try:
            shape = backend.broadcast_shapes(tuple(w.shape), tuple(input.shape))
        except ValueError:
            shape = None
        if shape is None or (exact and shape != tuple(input.shape)):
            raise ValueError(f"{op}: {name} of shape {list(w.shape)} does not broadcast to the input's "
                             f"shape {list(input.shape)}")
        consts[name] = w.array.astype(input.dtype, copy=False)
    return consts


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(binary_cross_entropy, "binary_cross_entropy", **locals())
    op = "binary_cross_entropy"
    reduction, target = _binary_args(input, target, op, (reduction, size_average, reduce), lambda shape: (
        f"{op}: Using a target size ({shape}) that is different to the input size ({list(input.shape)}) is "
        f"deprecated. Please ensure they have the same size."))
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
    consts = _binary_weights(input, op, True, weight=weight)
    return _apply_reduction(BinaryCrossEntropy.apply(input, target, **consts), reduction)


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(smooth_l1_loss, "smooth_l1_loss", **locals())
    op = "smooth_l1_loss"
    reduction = _resolve_reduction(reduction, size_average, reduce, op)
    if beta < 0:
        raise RuntimeError(f"{op}: beta must be non-negative, got {beta}")
    check_float(input, op)
    _pair_loss_args(input, target, op)
    d = input - target
    return _apply_reduction(d.abs() if beta == 0 else Huber.apply(d, delta=beta, scale=1.0 / beta), reduction)


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(huber_loss, "huber_loss", **locals())
    op = "huber_loss"
    reduction = _resolve_reduction(reduction, None, None, op)
    if not delta > 0:
        raise RuntimeError(f"{op}: delta must be positive, got {delta}")
    check_float(input, op)
    _pair_loss_args(input, target, op)
    loss = Huber.apply(input - target, delta=delta)
    if weight is not None:
        if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(input.shape):
            got = list(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"{op}: weight must have the input's shape {list(input.shape)}, got {got}")
        loss = loss * weight
    return _apply_reduction(loss, reduction)


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(kl_div, "kl_div", **locals())
    op = "kl_div"
    if size_average is not None or reduce is not None or reduction != "batchmean":
        reduction = _resolve_reduction(reduction, size_average, reduce, op)
        if reduction == "mean" and size_average is None and reduce is None:
            warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                          "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                          "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                          UserWarning, stacklevel=2)
    check_float(input, op)
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
    return _apply_reduction(loss, reduction)


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(cosine_embedding_loss, "cosine_embedding_loss", **locals())
    op = "cosine_embedding_loss"
    reduction = _resolve_reduction(reduction, size_average, reduce, op)
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
    return _apply_reduction(loss, reduction)


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(margin_ranking_loss, "margin_ranking_loss", **locals())
    op = "margin_ranking_loss"
    reduction = _resolve_reduction(reduction, size_average, reduce, op)
    _check_targets(op, target)
    if not input1.ndim == input2.ndim == target.ndim:
        raise RuntimeError(f"{op}: all input tensors should have the same number of dimensions, but got sizes: "
                           f"input1: {list(input1.shape)}, input2: {list(input2.shape)}, target: "
                           f"{list(target.shape)}")
    return _apply_reduction(clamp(-target * (input1 - input2) + margin, min=0), reduction)


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(triplet_margin_loss, "triplet_margin_loss", **locals())
    op = "triplet_margin_loss"
    reduction = _resolve_reduction(reduction, size_average, reduce, op)
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
    return _apply_reduction(clamp(margin + d_pos - d_neg, min=0), reduction)
