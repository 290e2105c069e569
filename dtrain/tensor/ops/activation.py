"""Activations beyond relu/gelu/silu (those live in nn.py): hardtanh and relu6, the ELU
family (elu, selu, celu), mish, hardswish, hardsigmoid and prelu, one Function each.

The gradients at the kinks follow PyTorch's kernels: hardtanh's (relu6's) is 0 at both bounds,
hardswish's is 0 at -3 and 1 at 3, hardsigmoid's is 0 at -3 and 3.
"""
from ..backend import get_array_module
from ..function import Function, unbroadcast
from ..tensor import Tensor
from .nn import _check_float

# SELU's constants, as PyTorch (Klambauer et al., 2017)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Hardtanh(Function):
    def forward(self, a, lo=-1.0, hi=1.0):
        self.inside = (a > lo) & (a < hi)
        return get_array_module(a).clip(a, lo, hi)

    def backward(self, g):
        return g * self.inside


class ELU(Function):
    """scale * (x if x > 0 else alpha * (exp(input_scale * x) - 1)): elu, selu and celu."""

    def forward(self, a, alpha=1.0, scale=1.0, input_scale=1.0):
        xp = get_array_module(a)
        self.pos = a > 0
        # exp of the clipped input: the positive side must not overflow where it is discarded
        self.e = xp.exp(xp.minimum(a, 0) * input_scale)
        self.coef = (scale, alpha * scale * input_scale)
        return xp.where(self.pos, a * scale, (self.e - 1) * (alpha * scale)).astype(a.dtype, copy=False)

    def backward(self, g):
        pos_coef, neg_coef = self.coef
        return g * get_array_module(g).where(self.pos, pos_coef, self.e * neg_coef).astype(g.dtype, copy=False)


class Mish(Function):
    """x * tanh(softplus(x)); softplus as logaddexp(0, x), which cannot overflow."""

    def forward(self, a):
        xp = get_array_module(a)
        self.a, self.t = a, xp.tanh(xp.logaddexp(0, a))
        return a * self.t

    def backward(self, g):
        xp = get_array_module(g)
        sig = xp.tanh(self.a * 0.5) * 0.5 + 0.5
        return g * (self.t + self.a * sig * (1 - self.t * self.t))


class Hardswish(Function):
    def forward(self, a):
        xp = get_array_module(a)
        self.a = a
        return a * xp.clip(a + 3, 0, 6) * (1 / 6)

    def backward(self, g):
        xp = get_array_module(g)
        a = self.a
        # PyTorch's kernel: 0 up to -3, x / 3 + 1/2 between, 1 from 3 on
        return g * xp.where(a <= -3, 0, xp.where(a < 3, a * (1 / 3) + 0.5, 1)).astype(g.dtype, copy=False)


class Hardsigmoid(Function):
    def forward(self, a):
        self.inside = (a > -3) & (a < 3)
        return get_array_module(a).clip(a + 3, 0, 6) * (1 / 6)

    def backward(self, g):
        return g * self.inside * (1 / 6)


class PReLU(Function):
    """x where x > 0, else weight * x, with one weight per channel (dim 1) or one shared."""

    def forward(self, a, w, bshape=()):
        self.a, self.wb, self.wshape = a, w.reshape(bshape), w.shape
        self.pos = a > 0
        return get_array_module(a).where(self.pos, a, a * self.wb)

    def backward(self, g):
        xp = get_array_module(g)
        na, nw = self.needs_input_grad
        zero = g.dtype.type(0)
        ga = g * xp.where(self.pos, 1, self.wb).astype(g.dtype, copy=False) if na else None
        gw = unbroadcast(xp.where(self.pos, zero, g * self.a), self.wb.shape).reshape(self.wshape) if nw else None
        return ga, gw


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """``input`` clipped to [min_val, max_val]; the gradient is 0 outside and at the bounds.

    Args:
        input: a floating-point Tensor.
        min_val, max_val: the bounds (default -1 and 1), min_val < max_val.
        inplace: accepted for PyTorch compatibility; computed out of place.

    Example:
        >>> F.hardtanh(dtrain.tensor([-2.0, 0.5, 3.0]))
        tensor([-1.0000,  0.5000,  1.0000])
    """
    _check_float(input, "hardtanh")
    if not min_val < max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) must be less than max_val ({max_val})")
    return Hardtanh.apply(input, lo=min_val, hi=max_val)


def relu6(input, inplace=False):
    """min(max(0, x), 6): hardtanh with bounds 0 and 6.

    Example:
        >>> F.relu6(dtrain.tensor([-1.0, 3.0, 8.0]))
        tensor([0., 3., 6.])
    """
    _check_float(input, "relu6")
    return Hardtanh.apply(input, lo=0.0, hi=6.0)


def elu(input, alpha=1.0, inplace=False):
    """x where x > 0, else alpha * (exp(x) - 1).

    Args:
        input: a floating-point Tensor.
        alpha: the value the negative side tends to, negated (default 1.0).
        inplace: accepted for PyTorch compatibility; computed out of place.

    Example:
        >>> F.elu(dtrain.tensor([-1.0, 2.0]))
        tensor([-0.6321,  2.0000])
    """
    _check_float(input, "elu")
    return ELU.apply(input, alpha=alpha)


def selu(input, inplace=False):
    """scale * elu(x, alpha) with PyTorch's constants (alpha 1.6733, scale 1.0507).

    Example:
        >>> F.selu(dtrain.tensor([-1.0, 1.0]))
        tensor([-1.1113,  1.0507])
    """
    _check_float(input, "selu")
    return ELU.apply(input, alpha=SELU_ALPHA, scale=SELU_SCALE)


def celu(input, alpha=1.0, inplace=False):
    """x where x > 0, else alpha * (exp(x / alpha) - 1); alpha must not be 0.

    Example:
        >>> F.celu(dtrain.tensor([-1.0, 2.0]), alpha=2.0)
        tensor([-0.7869,  2.0000])
    """
    _check_float(input, "celu")
    if alpha == 0:
        raise ZeroDivisionError("celu: alpha cannot be 0 (the input is divided by it)")
    return ELU.apply(input, alpha=alpha, input_scale=1.0 / alpha)


def mish(input, inplace=False):
    """x * tanh(softplus(x)).

    Example:
        >>> F.mish(dtrain.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8651])
    """
    _check_float(input, "mish")
    return Mish.apply(input)


def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6 (MobileNetV3).

    Example:
        >>> F.hardswish(dtrain.tensor([-4.0, 1.0, 4.0]))
        tensor([-0.0000,  0.6667,  4.0000])
    """
    _check_float(input, "hardswish")
    return Hardswish.apply(input)


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6: 0 below -3, 1 above 3, linear between.

    Example:
        >>> F.hardsigmoid(dtrain.tensor([-4.0, 0.0, 4.0]))
        tensor([0.0000, 0.5000, 1.0000])
    """
    _check_float(input, "hardsigmoid")
    return Hardsigmoid.apply(input)


def prelu(input, weight):
    """x where x > 0, else weight * x, with a learned slope per channel (dim 1) or one shared.

    Args:
        input: a floating-point Tensor; its channels are dim 1 (dim 0 of a 1-D input has
            one channel).
        weight: a 1-D Tensor of 1 or C slopes (or a 0-d one).

    Example:
        >>> F.prelu(dtrain.tensor([[-2.0, 1.0]]), dtrain.tensor([0.25]))
        tensor([[-0.5000,  1.0000]])
    """
    op = "prelu"
    _check_float(input, op)
    if not isinstance(weight, Tensor) or weight.ndim > 1:
        got = f"shape {list(weight.shape)}" if isinstance(weight, Tensor) else type(weight).__name__
        raise RuntimeError(f"{op}: weight must be a 0-D or 1-D Tensor, got {got}")
    n, c = weight.numel(), input.shape[1] if input.ndim > 1 else 1
    if n != 1 and n != c:
        raise RuntimeError(f"{op}: the weight has {n} parameters but the input of shape {list(input.shape)} has "
                         f"{c} channels (dim 1); expected 1 or {c}")
    bshape = (n,) + (1,) * (input.ndim - 2) if n > 1 else ()  # the weight's shape broadcast along dim 1
    return PReLU.apply(input, weight, bshape=bshape)
