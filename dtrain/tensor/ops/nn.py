"""Neural-network ops: activations, softmax, losses, dropout, normalization, embedding, pad.

The hot ones (relu, softmax, log_softmax, cross_entropy, batch_norm, layer_norm) are each
one Function with a hand-written backward; the rest derive from other ops.
"""
import math
import numbers
import warnings

from .. import backend, device_checks
from ..backend import get_array_module
from ..function import Function, on_input_device, unbroadcast
from ..grad_mode import no_grad
from ..random import uniform_array
from ..tensor import Tensor, _check_dim
from .shape import unsqueeze


def _check_float(x, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise RuntimeError(f"{op}: expected a floating-point input, got dtype {x.dtype}; convert it with .float()")


# ---- activations ------------------------------------------------------------------------

class ReLU(Function):
    def forward(self, a):
        self.out = get_array_module(a).maximum(a, 0)
        return self.out

    def backward(self, g):
        # the mask is out > 0, not a >= 0: the gradient at 0 is 0, as in PyTorch
        return g * (self.out > 0)


class Scale(Function):
    """``a * factor`` with a constant per-element factor (leaky_relu's slope, dropout's mask)."""

    def forward(self, a, factor=None):
        self.factor = factor
        return a * factor

    def backward(self, g):
        return g * self.factor


def _blocks(a, elements, axis=None):
    """Slices of ``a`` along dim 0 of about ``elements`` elements each, for loops whose
    temporaries then stay in the CPU's L2 cache (NumPy makes one pass over memory per op);
    one slice for the whole array on a GPU, or when the op reduces along dim 0 (``axis``)."""
    if backend.is_cuda_array(a) or a.size == 0 or (axis is not None and axis % a.ndim == 0):
        return [slice(None)]
    step = max(1, elements // (a.size // a.shape[0]))
    return [slice(i, i + step) for i in range(0, a.shape[0], step)]


def _gelu_float32(a, grad):
    """(gelu(a), its derivative or None) for a float32 array on the CPU, erf by Abramowitz
    and Stegun 7.1.26 (absolute error < 1.5e-7, the formula of PyTorch's vectorized CPU
    erf), computed chunk by chunk with in-place ufuncs: four times faster than SciPy's erf
    alone, whose float32 loop calls the double-precision function per element."""
    xp = get_array_module(a)
    flat = a.reshape(-1)
    out = xp.empty_like(flat)
    deriv = xp.empty_like(flat) if grad else None
    blocks = _blocks(flat, 32768)  # a block's half-dozen temporaries: 32768 float32 each
    t, q, gauss = (xp.empty_like(flat[blocks[0]]) for _ in range(3))
    with backend.quiet_float_errors():  # x * x overflows to inf for huge x: exp(-inf) = 0 is meant
        for s in blocks:
            x = flat[s]
            n = x.size
            tn, qn, gn = t[:n], q[:n], gauss[:n]
            xp.abs(x, out=tn)  # z = x / sqrt(2): erf(|z|) = 1 - poly(t) exp(-z^2), t = 1 / (1 + p |z|)
            tn *= 0.3275911 / math.sqrt(2)
            tn += 1
            xp.reciprocal(tn, out=tn)
            xp.multiply(tn, 0.5 * 1.061405429, out=qn)  # poly / 2
            for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
                qn += 0.5 * c
                qn *= tn
            xp.multiply(x, x, out=gn)
            gn *= -0.5
            xp.exp(gn, out=gn)  # exp(-x^2 / 2)
            qn *= gn  # (1 - erf(|z|)) / 2
            xp.subtract(0.5, qn, out=qn)
            xp.copysign(qn, x, out=qn)  # erf(z) / 2
            qn += 0.5  # Phi(x)
            xp.multiply(x, qn, out=out[s])
            if grad:  # Phi(x) + x pdf(x)
                d = deriv[s]
                xp.multiply(x, gn, out=d)
                d *= 1 / math.sqrt(2 * math.pi)
                d += qn
    return out.reshape(a.shape), None if deriv is None else deriv.reshape(a.shape)


class GELU(Function):
    """x Phi(x), exact or with the tanh approximation; forward also computes the derivative
    (when a gradient is wanted), so backward is one product."""

    def forward(self, a, approximate="none"):
        xp = get_array_module(a)
        grad = self.needs_input_grad[0]
        if approximate == "tanh":
            t = xp.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a * a * a))
            if grad:
                inner = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * a * a)
                self.deriv = 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * inner
            return 0.5 * a * (1 + t)
        if a.dtype.name == "float32" and not backend.is_cuda_array(a):
            out, self.deriv = _gelu_float32(a, grad)
            return out
        cdf = 0.5 * (1 + backend.erf(a * (1 / math.sqrt(2))))
        if grad:
            self.deriv = xp.exp(-0.5 * a * a)
            self.deriv *= a * (1 / math.sqrt(2 * math.pi))
            self.deriv += cdf
        return a * cdf

    def backward(self, g):
        return g * self.deriv


class SiLU(Function):
    def forward(self, a):
        xp = get_array_module(a)
        self.a, self.s = a, xp.tanh(a * 0.5) * 0.5 + 0.5  # sigmoid through tanh: no overflow
        return a * self.s

    def backward(self, g):
        s = self.s
        return g * (s * (1 + self.a * (1 - s)))


class Softplus(Function):
    def forward(self, a, beta=1.0, threshold=20.0):
        xp = get_array_module(a)
        ba = a * beta
        self.linear = ba > threshold  # PyTorch reverts to the identity above the threshold
        self.s = xp.tanh(ba * 0.5) * 0.5 + 0.5
        out = xp.logaddexp(0, ba)
        if beta != 1:
            out /= beta
        return xp.where(self.linear, a, out)  # not out[mask] = ...: a boolean-mask write syncs a GPU

    def backward(self, g):
        return g * get_array_module(g).where(self.linear, 1, self.s)


def relu(input, inplace=False):
    """max(0, x) elementwise; the gradient at 0 is 0.

    Args:
        input: a Tensor.
        inplace: accepted for PyTorch compatibility; the result is computed out of place
            (same values, ``input`` is left unchanged).

    Returns:
        A Tensor of input's shape.

    Example:
        >>> F.relu(dtrain.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    return ReLU.apply(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x where x > 0, else ``negative_slope * x``.

    Args:
        input: a floating-point Tensor.
        negative_slope: the slope for x <= 0 (default 0.01).
        inplace: accepted for PyTorch compatibility; computed out of place.

    Example:
        >>> F.leaky_relu(dtrain.tensor([-1.0, 2.0]), 0.1)
        tensor([-0.1000,  2.0000])
    """
    _check_float(input, "leaky_relu")
    a = input.array
    factor = (a > 0).astype(a.dtype)
    factor *= 1 - negative_slope
    factor += negative_slope
    return Scale.apply(input, factor=factor)


def gelu(input, approximate="none"):
    """Gaussian error linear unit x * Phi(x), exact (``'none'``) or with the tanh approximation.

    Args:
        input: a floating-point Tensor.
        approximate: ``'none'`` (erf) or ``'tanh'``.

    Example:
        >>> F.gelu(dtrain.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8413])
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    _check_float(input, "gelu")
    return GELU.apply(input, approximate=approximate)


def silu(input, inplace=False):
    """x * sigmoid(x) (swish).

    Example:
        >>> F.silu(dtrain.tensor([0.0, 1.0]))
        tensor([0.0000, 0.7311])
    """
    _check_float(input, "silu")
    return SiLU.apply(input)


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (as PyTorch).

    Example:
        >>> F.softplus(dtrain.tensor([0.0]))
        tensor([0.6931])
    """
    _check_float(input, "softplus")
    return Softplus.apply(input, beta=beta, threshold=threshold)


# ---- softmax ----------------------------------------------------------------------------

_SOFTMAX_BLOCK = 131072  # elements: for (35 x 20, 10,000) LM logits, 13 rows at a time


def _log_softmax(a, axis):
    xp = get_array_module(a)
    if a.size == 0:
        return a.copy()
    z = xp.empty_like(a)
    blocks = _blocks(a, _SOFTMAX_BLOCK, axis)
    e = xp.empty_like(a[blocks[0]])  # exp's temporary, reused block after block
    for s in blocks:
        x, zs = a[s], z[s]
        es = e[:x.shape[0]]
        xp.subtract(x, x.max(axis=axis, keepdims=True), out=zs)  # shift by the max: exp cannot overflow
        xp.exp(zs, out=es)
        zs -= xp.log(es.sum(axis=axis, keepdims=True))
    return z


class Softmax(Function):
    def forward(self, a, axis=-1):
        xp = get_array_module(a)
        if a.size == 0:
            e = a.copy()
        else:
            e = a - a.max(axis=axis, keepdims=True)
            xp.exp(e, out=e)
            e /= e.sum(axis=axis, keepdims=True)
        self.out, self.axis = e, axis
        return e

    def backward(self, g):
        xp = get_array_module(g)
        gx = g * self.out
        xp.subtract(g, gx.sum(axis=self.axis, keepdims=True), out=gx)
        gx *= self.out
        return gx


class LogSoftmax(Function):
    def forward(self, a, axis=-1):
        self.out, self.axis = _log_softmax(a, axis), axis
        return self.out

    def backward(self, g):
        xp = get_array_module(g)
        total = g.sum(axis=self.axis, keepdims=True)
        gx = xp.empty_like(self.out)
        for s in _blocks(gx, _SOFTMAX_BLOCK, self.axis):  # g - exp(out) * total, block by block
            xp.exp(self.out[s], out=gx[s])
            gx[s] *= total[s]
            xp.subtract(g[s], gx[s], out=gx[s])
        return gx


def _softmax_args(input, dim, dtype, op):
    if dtype is not None:
        input = input.to(dtype)
    _check_float(input, op)
    if dim is None:  # PyTorch's legacy implicit dim
        dim = 0 if input.ndim in (0, 1, 3) else 1
        warnings.warn(f"Implicit dimension choice for {op} has been deprecated. Change the call to include "
                      f"dim={dim} as an argument.", UserWarning, stacklevel=3)
    return input, _check_dim(dim, input.ndim, op)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x) / sum(exp(x)) along ``dim``, computed with the max subtracted (no overflow).

    Args:
        input: a floating-point Tensor.
        dim: the dimension that sums to 1.
        dtype: cast the input to this dtype first.

    Example:
        >>> F.softmax(dtrain.tensor([[0.0, 0.0]]), dim=1)
        tensor([[0.5000, 0.5000]])
    """
    input, axis = _softmax_args(input, dim, dtype, "softmax")
    if input.ndim == 0:  # the ops work in place on arrays; NumPy gives a 0-d input's results as scalars
        return Softmax.apply(input.reshape(1), axis=0).reshape(())
    return Softmax.apply(input, axis=axis)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """log(softmax(x)) along ``dim``, computed as x - max - log(sum(exp(x - max))) (stable).

    Example:
        >>> F.log_softmax(dtrain.tensor([[0.0, 0.0]]), dim=1)
        tensor([[-0.6931, -0.6931]])
    """
    input, axis = _softmax_args(input, dim, dtype, "log_softmax")
    if input.ndim == 0:  # as softmax
        return LogSoftmax.apply(input.reshape(1), axis=0).reshape(())
    return LogSoftmax.apply(input, axis=axis)


# ---- losses -----------------------------------------------------------------------------

def _reduction(reduction, size_average, reduce, op):
    if size_average is not None or reduce is not None:  # the legacy pair, mapped as PyTorch does
        warnings.warn("size_average and reduce args will be deprecated, please use reduction= instead.",
                      UserWarning, stacklevel=3)
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "none" if not reduce else "mean" if size_average else "sum"
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction; expected 'none', 'mean' or 'sum'")
    return reduction


def _reduce(loss, reduction):
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
    reduction = _reduction(reduction, size_average, reduce, "cross_entropy")
    _check_float(input, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if isinstance(target, Tensor) and target.dtype.kind == "f" and target.shape == input.shape:
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
    return _reduce(-prod.sum(axis), reduction)


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
    reduction = _reduction(reduction, size_average, reduce, "nll_loss")
    _check_float(input, "nll_loss")
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
        return _reduce(loss, reduction)
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
    reduction = _reduction(reduction, size_average, reduce, "mse_loss")
    _pair_loss_args(input, target, "mse_loss")
    diff = input - target
    return _pointwise_loss(diff * diff, weight, reduction, input, "mse_loss")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean absolute error |input - target|, reduced; arguments as :func:`mse_loss`.

    Example:
        >>> F.l1_loss(dtrain.tensor([1.0, -3.0]), dtrain.tensor([0.0, 0.0]))
        tensor(2.)
    """
    reduction = _reduction(reduction, size_average, reduce, "l1_loss")
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
    op = "binary_cross_entropy_with_logits"
    reduction = _reduction(reduction, size_average, reduce, op)
    _check_float(input, op)
    if not isinstance(target, Tensor) or target.shape != input.shape:
        shape = list(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"{op}: target size ({shape}) must be the same as input size ({list(input.shape)})")
    target = target.to(input.dtype)
    consts = {}
    for name, w in (("weight", weight), ("pos_weight", pos_weight)):
        if w is not None:
            try:
                backend.broadcast_shapes(tuple(w.shape), tuple(input.shape))
            except ValueError:
                raise ValueError(f"{op}: {name} of shape {list(w.shape)} does not broadcast to the input's "
                                 f"shape {list(input.shape)}") from None
            consts[name] = w.array.astype(input.dtype, copy=False)
    return _reduce(BCEWithLogits.apply(input, target, **consts), reduction)


# ---- dropout ----------------------------------------------------------------------------

@on_input_device
def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p).

    The mask comes from dtrain's generator of the input's device (``dtrain.manual_seed``).

    Args:
        input: a floating-point Tensor.
        p: the probability of zeroing an element, in [0, 1].
        training: when False (or p == 0) the input is returned unchanged.
        inplace: accepted for PyTorch compatibility; computed out of place.

    Example:
        >>> F.dropout(dtrain.ones(4), p=0.5)   # e.g. tensor([2., 0., 2., 2.])
    """
    _check_dropout(input, p, "dropout")
    return _masked(input, p, input.shape) if training else input


def _check_dropout(input, p, op):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    _check_float(input, op)


def _masked(input, p, mask_shape):
    """``input`` times a 0 / (1 / (1 - p)) mask of ``mask_shape`` (broadcast over the rest)."""
    if p == 0 or input.numel() == 0:
        return input
    keep = uniform_array(mask_shape, 0.0, 1.0, input.dtype, input.device) >= p
    mask = keep.astype(input.dtype)
    if p < 1:
        mask *= 1 / (1 - p)
    return Scale.apply(input, factor=mask)


def _channel_dropout(input, p, training, batched, op):
    """Zero whole channels: one mask entry per (sample, channel) of a batched input, per
    channel (dim 0) of an unbatched one, constant over the remaining dims."""
    lead = 2 if batched else 1
    if input.ndim < lead:
        raise RuntimeError(f"{op}: expected an input with channels, got shape {list(input.shape)}")
    if not training:
        return input
    return _masked(input, p, tuple(input.shape[:lead]) + (1,) * (input.ndim - lead))


def _warn_rank(input, spatial, op):
    if input.ndim not in (spatial + 1, spatial + 2):
        warnings.warn(f"{op}: Received a {input.ndim}-D input to {op}, which is deprecated and will result in an "
                      f"error in a future release. To retain the behavior and silence this warning, please use "
                      f"dropout instead. Note that {op} exists to provide channel-wise dropout on inputs with "
                      f"{spatial} spatial dimensions, a channel dimension, and an optional batch dimension (i.e. "
                      f"{spatial + 1}D or {spatial + 2}D inputs).", UserWarning, stacklevel=3)


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, L) or (C, L) input with probability ``p``, scaling the
    rest by 1 / (1 - p).

    Args:
        input: a 2-D or 3-D floating-point Tensor.
        p: the probability of zeroing a channel.
        training: when False the input is returned unchanged.
        inplace: accepted for PyTorch compatibility; computed out of place.

    Example:
        >>> F.dropout1d(dtrain.ones(2, 3, 4), p=0.5)   # each [n, c, :] all 0 or all 2
    """
    op = "dropout1d"
    _check_dropout(input, p, op)
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{op}: Expected 2D or 3D input, but received a {input.ndim}D input of shape "
                           f"{list(input.shape)}. Note that dropout1d exists to provide channel-wise dropout on "
                           f"inputs with 1 spatial dimension, a channel dimension, and an optional batch "
                           f"dimension (i.e. 2D or 3D inputs).")
    return _channel_dropout(input, p, training, input.ndim == 3, op)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, H, W) input with probability ``p``, scaling the rest
    by 1 / (1 - p).

    As PyTorch (with its warning), a 3-D input is taken as (N, C, L), not as an unbatched
    (C, H, W); other ranks are warned about and get one mask entry per element of dims 0-1.

    Example:
        >>> F.dropout2d(dtrain.ones(2, 3, 4, 4), p=0.5)   # each [n, c] plane all 0 or all 2
    """
    op = "dropout2d"
    _check_dropout(input, p, op)
    _warn_rank(input, 2, op)
    if input.ndim == 3:
        warnings.warn(f"{op}: Received a 3D input to {op} and assuming that channel-wise 1D dropout behavior is "
                      f"desired - input is interpreted as shape (N, C, L), where C is the channel dim. This "
                      f"behavior will change in a future release to interpret the input as one without a batch "
                      f"dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout behavior, please "
                      f"switch to using dropout1d instead.", UserWarning, stacklevel=2)
    return _channel_dropout(input, p, training, True, op)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, D, H, W) or (C, D, H, W) input with probability ``p``,
    scaling the rest by 1 / (1 - p).

    Example:
        >>> F.dropout3d(dtrain.ones(2, 3, 2, 2, 2), p=0.5)
    """
    op = "dropout3d"
    _check_dropout(input, p, op)
    _warn_rank(input, 3, op)
    return _channel_dropout(input, p, training, input.ndim == 5, op)


# ---- normalization ----------------------------------------------------------------------

class Normalize(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias. ``batch_stats``: mean and var were taken
    from x over ``axes`` (so they carry gradient); else they are constants (running stats).
    weight and bias are Tensors of any shape reshaping to ``pshape``, or the numbers 1 and 0.
    batch_norm and group_norm; layer_norm and rms_norm have RowNormalize."""

    def forward(self, x, weight, bias, mean=None, var=None, axes=(), pshape=(), eps=1e-5, batch_stats=True):
        xp = get_array_module(x)
        self.invstd = 1 / xp.sqrt(var + eps)
        xhat = x - mean
        xhat *= self.invstd
        self.xhat, self.axes, self.pshape, self.batch_stats = xhat, axes, pshape, batch_stats
        self.w = weight.reshape(pshape) if hasattr(weight, "shape") else weight
        return xhat * self.w + (bias.reshape(pshape) if hasattr(bias, "shape") else bias)

    def backward(self, g):
        nx, nw, nb = self.needs_input_grad
        xhat, axes = self.xhat, self.axes
        gx = gw = gb = None
        if nx:
            gxhat = g * self.w
            if self.batch_stats:  # mean and var depend on x too
                proj = (gxhat * xhat).mean(axis=axes, keepdims=True)
                gxhat = gxhat - gxhat.mean(axis=axes, keepdims=True)
                gxhat = gxhat - xhat * proj
            gx = gxhat * self.invstd
        if nw:
            gw = unbroadcast(g * xhat, self.pshape).reshape(self.inputs[1].shape)
        if nb:
            gb = unbroadcast(g, self.pshape).reshape(self.inputs[2].shape)
        return gx, gw, gb


def _moments(a, axes):
    mean = a.mean(axis=axes, keepdims=True)
    centered = a - mean
    return mean, (centered * centered).mean(axis=axes, keepdims=True)


def _param(t, shape, name, op, input):
    if t is None:
        return None
    if not isinstance(t, Tensor) or tuple(t.shape) != tuple(shape):
        got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise RuntimeError(f"{op}: expected {name} of shape {list(shape)} for input of shape {list(input.shape)}, "
                           f"got {got}")
    if t.device != input.device:
        raise RuntimeError(f"{op}: {name} is on {t.device} but the input is on {input.device}")
    return t


@on_input_device
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalization over dim 1 (channels) of an (N, C, ...) input.

    Training: normalize with the batch's mean and biased variance, and (when given) update
    ``running_mean`` / ``running_var`` in place with ``momentum`` and the unbiased variance,
    as PyTorch. Eval: normalize with the running statistics.

    Args:
        input: (N, C) or (N, C, d1, ...).
        running_mean, running_var: Tensors of shape (C,), or None (training only).
        weight, bias: optional affine parameters of shape (C,).
        training: use batch statistics.
        momentum: running = (1 - momentum) * running + momentum * batch.
        eps: added to the variance.

    Example:
        >>> x = dtrain.randn(8, 3, 4, 4)
        >>> F.batch_norm(x, dtrain.zeros(3), dtrain.ones(3), training=True).shape
        dtrain.Size([8, 3, 4, 4])
    """
    op = "batch_norm"
    _check_float(input, op)
    if input.ndim < 2:
        raise ValueError(f"{op}: expected input of shape (N, C, ...), got shape {list(input.shape)}")
    c = input.shape[1]
    running_mean = _param(running_mean, (c,), "running_mean", op, input)
    running_var = _param(running_var, (c,), "running_var", op, input)
    weight, bias = _param(weight, (c,), "weight", op, input), _param(bias, (c,), "bias", op, input)
    axes = (0,) + tuple(range(2, input.ndim))
    pshape = (c,) + (1,) * (input.ndim - 2)
    if training:
        n = input.numel() // c
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                             f"{list(input.shape)}")
        mean, var = _moments(input.array, axes)
        with no_grad():
            if running_mean is not None:
                running_mean.lerp_(mean.reshape(c), momentum)
            if running_var is not None:
                running_var.lerp_(var.reshape(c) * (n / (n - 1)), momentum)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError(f"{op}: running_mean and running_var must be given in evaluation mode "
                               f"(training=False)")
        mean = running_mean.array.reshape(pshape).astype(input.dtype, copy=False)
        var = running_var.array.reshape(pshape).astype(input.dtype, copy=False)
    return Normalize.apply(input, 1 if weight is None else weight, 0 if bias is None else bias, mean=mean,
                           var=var, axes=axes, pshape=pshape, eps=eps, batch_stats=training)


def trailing_axes(input, normalized_shape, op):
    """(normalized_shape as a tuple, the axes it covers) for layer_norm and rms_norm: the
    input must be floating and end with that shape."""
    _check_float(input, op)
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or k > input.ndim or tuple(input.shape[input.ndim - k:]) != shape:
        raise RuntimeError(f"{op}: input of shape {list(input.shape)} does not end with normalized_shape "
                           f"{list(shape)}")
    return shape, tuple(range(input.ndim - k, input.ndim))


class RowNormalize(Function):
    """layer_norm and rms_norm: each row of x, an (M, K) view of the input whose K covers
    the normalized trailing dims, becomes (x - mean) / sqrt(var + eps) * weight + bias
    (``center=False``: no mean subtracted, var is the mean square). weight and bias are
    (K,) Tensors, or the numbers 1 and 0.

    Not Normalize (batch and group norm): along rows, the sums are matrix-vector products
    and the row dot products einsum, one pass each, several times faster than NumPy's
    ``mean`` over a short last axis."""

    def forward(self, x, weight, bias, eps=1e-5, center=True):
        xp = get_array_module(x)
        self.inv_k = 1 / max(x.shape[-1], 1)
        self.mean_vec = xp.full(x.shape[-1], self.inv_k, dtype=x.dtype)  # x @ mean_vec: the row means
        xhat = x - (x @ self.mean_vec)[:, None] if center else x.copy()
        invstd = xp.einsum("ij,ij->i", xhat, xhat)
        invstd *= self.inv_k
        invstd += eps
        xp.sqrt(invstd, out=invstd)
        xp.reciprocal(invstd, out=invstd)
        xhat *= invstd[:, None]
        self.xhat, self.invstd, self.w, self.center = xhat, invstd, weight, center
        out = xhat * weight
        if hasattr(bias, "shape"):
            out += bias
        return out

    def backward(self, g):
        xp = get_array_module(g)
        nx, nw, nb = self.needs_input_grad
        xhat = self.xhat
        gx = gw = gb = None
        if nx:
            gxhat = g * self.w if hasattr(self.w, "shape") else g
            # d/dx = invstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)), per row
            proj = xp.einsum("ij,ij->i", gxhat, xhat)
            proj *= -self.inv_k
            gx = xhat * proj[:, None]
            gx += gxhat
            if self.center:
                gx -= (gxhat @ self.mean_vec)[:, None]
            gx *= self.invstd[:, None]
        if nw:
            gw = xp.einsum("ij,ij->j", g, xhat)
        if nb:
            gb = xp.ones(g.shape[0], dtype=g.dtype) @ g
        return gx, gw, gb


def normalize_rows(input, shape, weight, bias, eps, center):
    """RowNormalize of ``input`` over its trailing dims ``shape`` (weight and bias: Tensors
    of that shape, or None), in the input's shape."""
    k = math.prod(shape)
    rows = input if input.ndim == 2 and len(shape) == 1 else \
        input.reshape(math.prod(input.shape[:input.ndim - len(shape)]), k)
    weight = 1 if weight is None else weight if weight.ndim == 1 else weight.reshape(k)
    bias = 0 if bias is None else bias if bias.ndim == 1 else bias.reshape(k)
    out = RowNormalize.apply(rows, weight, bias, eps=eps, center=center)
    return out if rows is input else out.reshape(input.shape)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the last dims ``normalized_shape``, then scale by weight and add bias.

    Args:
        input: a Tensor whose shape ends with ``normalized_shape``.
        normalized_shape: an int or a tuple of ints.
        weight, bias: optional, of shape ``normalized_shape``.
        eps: added to the variance.

    Example:
        >>> F.layer_norm(dtrain.tensor([[1.0, 3.0]]), (2,))
        tensor([[-1.0000,  1.0000]])
    """
    op = "layer_norm"
    shape, _ = trailing_axes(input, normalized_shape, op)
    weight, bias = _param(weight, shape, "weight", op, input), _param(bias, shape, "bias", op, input)
    return normalize_rows(input, shape, weight, bias, eps, center=True)


# ---- embedding --------------------------------------------------------------------------

class Embedding(Function):
    def forward(self, weight, idx, padding_idx=None):
        self.idx, self.shape, self.padding_idx = idx, weight.shape, padding_idx
        return weight[idx]

    def backward(self, g):
        xp = get_array_module(g)
        gw = xp.zeros(self.shape, dtype=g.dtype)
        if backend.is_cuda_array(g):
            backend.scatter_add(gw, self.idx, g)  # repeated indices accumulate
        elif self.idx.size:
            # np.add.at is slow on rows: sort the indices and sum each run of equal ones
            idx = self.idx.reshape(-1)
            order = xp.argsort(idx, kind="stable")
            idx = idx[order]
            starts = xp.flatnonzero(xp.concatenate((xp.ones(1, dtype=bool), idx[1:] != idx[:-1])))
            gw[idx[starts]] = xp.add.reduceat(g.reshape(idx.size, self.shape[1])[order], starts, axis=0)
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return gw, None


@on_input_device
def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Rows of ``weight`` picked by the indices ``input``; the row ``padding_idx`` gets no gradient.

    Args:
        input: integer indices, any shape, in [0, num_embeddings): on the CPU an index out of
            range raises IndexError at once; on a GPU it is checked on the device and raises
            at the next host synchronisation (``.item()``, printing; see
            ``dtrain.tensor.device_checks``), so that the check costs no synchronisation.
        weight: (num_embeddings, embedding_dim).
        padding_idx: optional index (negative counts from the end) whose row is not trained.

    Returns:
        A Tensor of shape ``input.shape + (embedding_dim,)``.

    Example:
        >>> F.embedding(dtrain.tensor([1]), dtrain.tensor([[0.0, 0.0], [1.0, 2.0]]))
        tensor([[1., 2.]])
    """
    op = "embedding"
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError(f"{op}: max_norm, scale_grad_by_freq and sparse are not supported; "
                                  f"leave them at their defaults")
    if not isinstance(input, Tensor) or input.dtype.kind not in "iu":
        got = input.dtype if isinstance(input, Tensor) else type(input).__name__
        raise RuntimeError(f"{op}: expected indices of an integer dtype (int64), got {got}")
    if weight.ndim != 2:
        raise RuntimeError(f"{op}: weight must be 2-D (num_embeddings, embedding_dim), got shape "
                           f"{list(weight.shape)}")
    n = weight.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"{op}: padding_idx {padding_idx} must be within num_embeddings ({n})")
        padding_idx %= n
    idx = input.array
    if idx.size:
        device_checks.check_range(idx, 0, n, (op, n), lambda lo, hi: IndexError(
            f"{op}: indices must be in [0, {n - 1}] (num_embeddings = {n}), got values in [{lo}, {hi}]"))
    return Embedding.apply(weight, idx, padding_idx=padding_idx)


# ---- pad --------------------------------------------------------------------------------

class ConstantPad(Function):
    """Pad with a constant; negative widths crop, as in PyTorch."""

    def forward(self, a, widths=(), value=0):
        xp = get_array_module(a)
        self.src, self.dst, self.shape = [], [], a.shape
        out_shape = []
        for n, (lo, hi) in zip(a.shape, widths):
            out_shape.append(n + lo + hi)
            self.src.append(slice(max(-lo, 0), n - max(-hi, 0)))
            self.dst.append(slice(max(lo, 0), max(lo, 0) + n - max(-lo, 0) - max(-hi, 0)))
        self.src, self.dst = tuple(self.src), tuple(self.dst)
        out = xp.full(out_shape, value, dtype=a.dtype)
        out[self.dst] = a[self.src]
        return out

    def backward(self, g):
        gx = get_array_module(g).zeros(self.shape, dtype=g.dtype)
        gx[self.src] = g[self.dst]
        return gx


class IndexPad(Function):
    """Pad by gathering, per padded dim, the source position of every output position
    (reflect, replicate, circular); the backward scatter-adds the gradient back."""

    def forward(self, a, index=()):
        self.index, self.shape = index, a.shape
        for axis, idx in index:
            a = a.take(idx, axis=axis)
        return a

    def backward(self, g):
        xp = get_array_module(g)
        for axis, idx in reversed(self.index):
            shape = list(g.shape)
            shape[axis] = self.shape[axis]
            out = xp.zeros(shape, dtype=g.dtype)
            backend.scatter_add(out, (slice(None),) * axis + (idx,), g)
            g = out
        return g


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(input, pad, mode="constant", value=None):
    """Pad the last dims of ``input``: ``pad = (left, right)`` for the last dim, then
    ``(top, bottom)`` for the one before, and so on.

    Args:
        input: a Tensor.
        pad: an even-length sequence of ints; in constant mode negative values crop.
        mode: ``'constant'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
        value: the fill value in constant mode (default 0).

    Example:
        >>> F.pad(dtrain.tensor([[1.0, 2.0]]), (1, 0))
        tensor([[0., 1., 2.]])
    """
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: the padding {list(pad)} must have an even length of at most 2 * input.ndim "
                         f"({2 * input.ndim} for input of shape {list(input.shape)})")
    pairs = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(pad) // 2)]
    widths = [(0, 0)] * (input.ndim - len(pairs)) + pairs[::-1]
    if mode == "constant":
        for n, (lo, hi) in zip(input.shape, widths):
            if n + lo + hi < 0:
                raise ValueError(f"pad: padding {list(pad)} gives a negative size for input of shape "
                                 f"{list(input.shape)}")
        return ConstantPad.apply(input, widths=tuple(widths), value=0 if value is None else value)
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"pad: mode {mode!r} is not supported; expected 'constant', 'reflect', "
                                  f"'replicate' or 'circular'")
    if value:
        raise ValueError(f"pad: a fill value is only allowed in constant mode, got value={value} with mode={mode!r}")
    xp = get_array_module(input.array)
    index = []
    for axis, (n, (lo, hi)) in enumerate(zip(input.shape, widths)):
        if (lo, hi) == (0, 0):
            continue
        limit = n - 1 if mode == "reflect" else n if mode == "circular" else float("inf")
        if min(lo, hi) < 0 or max(lo, hi) > limit or n == 0:
            raise ValueError(f"pad: {mode} padding ({lo}, {hi}) of dim {axis} (size {n}) must be non-negative "
                             f"and at most {limit}")
        index.append((axis, xp.pad(xp.arange(n), (lo, hi), mode=_PAD_MODES[mode])))
    return IndexPad.apply(input, index=tuple(index))
