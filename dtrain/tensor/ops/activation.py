"""Activations, one Function each: relu, leaky_relu, gelu, silu, softplus; hardtanh and
relu6, the ELU family (elu, selu, celu), mish, hardswish, hardsigmoid and prelu; softmax and
log_softmax (PyTorch's nn/modules/activation.py holds Softmax too).

gelu (float32 on the CPU) and log_softmax run block by block, their temporaries kept in cache.
The gradients at the kinks follow PyTorch's kernels: relu's is 0 at 0, hardtanh's (relu6's)
is 0 at both bounds, hardswish's is 0 at -3 and 1 at 3, hardsigmoid's is 0 at -3 and 3.
"""
import math
import warnings

from .. import backend, dtypes
from ..backend import get_array_module
from ..function import Function, unbroadcast
from ..tensor import Tensor, _check_dim
from .autocast import autocast_call, bfloat16_input, fp32_math, open_regions, thread_state
from ._checks import check_float
from .elementwise import Scale
from .workspace import output


# ---- relu, leaky_relu, gelu, silu, softplus ---------------------------------------------

class ReLU(Function):
    """Output and gradient in pooled buffers when large (workspace.output: no fresh pages). Only
    for C-contiguous operands: otherwise NumPy's result keeps the input's layout (strides), as
    PyTorch's does, and an integer or bool input keeps NumPy's own result type."""

    def forward(self, a):
        xp = get_array_module(a)
        pooled = dtypes.is_floating(a.dtype) and a.flags.c_contiguous
        self.out = xp.maximum(a, 0, out=output(xp, a.shape, a.dtype) if pooled else None)
        return self.out

    def backward(self, g):
        xp = get_array_module(g)
        out = self.out
        pooled = g.flags.c_contiguous and out.flags.c_contiguous and g.shape == out.shape
        # the mask is out > 0, not a >= 0: the gradient at 0 is 0, as in PyTorch
        return xp.multiply(g, out > 0, out=output(xp, g.shape, g.dtype) if pooled else None)


def _cache_blocks(a, elements, axis=None):
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
    out = output(xp, flat.shape, flat.dtype)  # pooled when large: no fresh pages
    deriv = output(xp, flat.shape, flat.dtype) if grad else None
    # three temporaries of 65536 float32 (768 KiB) stay in L2; measured 7% faster than 32768
    # (benchmarks/kernel_floor.py gelu row)
    blocks = _cache_blocks(flat, 65536)
    n = flat[blocks[0]].size
    t, q, gauss = (output(xp, (n,), flat.dtype) for _ in range(3))
    sign = output(xp, (n,), xp.uint32)
    bits = flat.view(xp.uint32)
    with backend.quiet_float_errors():  # x * x overflows to inf for huge x: exp(-inf) = 0 is meant
        for s in blocks:
            x = flat[s]
            n = x.size
            tn, qn, gn, sn = t[:n], q[:n], gauss[:n], sign[:n]
            xp.abs(x, out=tn)  # z = x / sqrt(2): erf(|z|) = 1 - poly(t) exp(-z^2), t = 1 / (1 + p |z|)
            tn *= 0.3275911 / math.sqrt(2)
            tn += 1
            xp.divide(1, tn, out=tn)  # 1.3x faster than xp.reciprocal in NumPy 2.4
            xp.multiply(tn, 0.5 * 1.061405429, out=qn)  # poly / 2
            for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
                qn += 0.5 * c
                qn *= tn
            xp.square(x, out=gn)  # half the time of x * x (one operand to read)
            gn *= -0.5
            xp.exp(gn, out=gn)  # exp(-x^2 / 2)
            qn *= gn  # (1 - erf(|z|)) / 2
            xp.subtract(0.5, qn, out=qn)  # erf(|z|) / 2, >= 0 (its sign bit clear)
            # erf(z) / 2: x's sign bit OR-ed in, two integer passes; NumPy's float32 copysign
            # takes 3.4x their time (benchmarks/RESULTS.md, Session 6)
            xp.bitwise_and(bits[s], 0x80000000, out=sn)
            xp.bitwise_or(qn.view(xp.uint32), sn, out=qn.view(xp.uint32))
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
        if a.dtype.itemsize <= 4 and not backend.is_cuda_array(a):
            # float16/bfloat16 through float32, as PyTorch's CPU kernel (SciPy's erf of a bfloat16 is float64)
            out, deriv = _gelu_float32(a.astype(xp.float32, copy=False), grad)
            self.deriv = deriv if deriv is None or a.dtype.name == "float32" else deriv.astype(a.dtype)
            return out if a.dtype.name == "float32" else out.astype(a.dtype)
        cdf = 0.5 * (1 + backend.erf(a * (1 / math.sqrt(2))))
        if grad:
            self.deriv = xp.exp(-0.5 * a * a)
            self.deriv *= a * (1 / math.sqrt(2 * math.pi))
            self.deriv += cdf
        return a * cdf

    def backward(self, g):
        xp = get_array_module(g)
        return xp.multiply(g, self.deriv, out=output(xp, g.shape, xp.result_type(g, self.deriv)))


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
    check_float(input, "leaky_relu")
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
    check_float(input, "gelu")
    return GELU.apply(input, approximate=approximate)


def silu(input, inplace=False):
    """x * sigmoid(x) (swish).

    Example:
        >>> F.silu(dtrain.tensor([0.0, 1.0]))
        tensor([0.0000, 0.7311])
    """
    check_float(input, "silu")
    return SiLU.apply(input)


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (as PyTorch).

    Example:
        >>> F.softplus(dtrain.tensor([0.0]))
        tensor([0.6931])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(softplus, "softplus", **locals())
    check_float(input, "softplus")
    return Softplus.apply(input, beta=beta, threshold=threshold)


# ---- hardtanh, relu6, the ELU family, mish, hardswish, hardsigmoid, prelu ---------------

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
    check_float(input, "hardtanh")
    if not min_val < max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) must be less than max_val ({max_val})")
    return Hardtanh.apply(input, lo=min_val, hi=max_val)


def relu6(input, inplace=False):
    """min(max(0, x), 6): hardtanh with bounds 0 and 6.

    Example:
        >>> F.relu6(dtrain.tensor([-1.0, 3.0, 8.0]))
        tensor([0., 3., 6.])
    """
    check_float(input, "relu6")
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
    check_float(input, "elu")
    return ELU.apply(input, alpha=alpha)


def selu(input, inplace=False):
    """scale * elu(x, alpha) with PyTorch's constants (alpha 1.6733, scale 1.0507).

    Example:
        >>> F.selu(dtrain.tensor([-1.0, 1.0]))
        tensor([-1.1113,  1.0507])
    """
    check_float(input, "selu")
    return ELU.apply(input, alpha=SELU_ALPHA, scale=SELU_SCALE)


def celu(input, alpha=1.0, inplace=False):
    """x where x > 0, else alpha * (exp(x / alpha) - 1); alpha must not be 0.

    Example:
        >>> F.celu(dtrain.tensor([-1.0, 2.0]), alpha=2.0)
        tensor([-0.7869,  2.0000])
    """
    check_float(input, "celu")
    if alpha == 0:
        raise ZeroDivisionError("celu: alpha cannot be 0 (the input is divided by it)")
    return ELU.apply(input, alpha=alpha, input_scale=1.0 / alpha)


def mish(input, inplace=False):
    """x * tanh(softplus(x)).

    Example:
        >>> F.mish(dtrain.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8651])
    """
    check_float(input, "mish")
    return Mish.apply(input)


def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6 (MobileNetV3).

    Example:
        >>> F.hardswish(dtrain.tensor([-4.0, 1.0, 4.0]))
        tensor([-0.0000,  0.6667,  4.0000])
    """
    check_float(input, "hardswish")
    return Hardswish.apply(input)


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6: 0 below -3, 1 above 3, linear between.

    Example:
        >>> F.hardsigmoid(dtrain.tensor([-4.0, 0.0, 4.0]))
        tensor([0.0000, 0.5000, 1.0000])
    """
    check_float(input, "hardsigmoid")
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
    if open_regions[0] and not thread_state.running:
        return autocast_call(prelu, "prelu", **locals())
    op = "prelu"
    check_float(input, op)
    if not isinstance(weight, Tensor) or weight.ndim > 1:
        got = f"shape {list(weight.shape)}" if isinstance(weight, Tensor) else type(weight).__name__
        raise RuntimeError(f"{op}: weight must be a 0-D or 1-D Tensor, got {got}")
    n, c = weight.numel(), input.shape[1] if input.ndim > 1 else 1
    if n != 1 and n != c:
        raise RuntimeError(f"{op}: the weight has {n} parameters but the input of shape {list(input.shape)} has "
                         f"{c} channels (dim 1); expected 1 or {c}")
    bshape = (n,) + (1,) * (input.ndim - 2) if n > 1 else ()  # the weight's shape broadcast along dim 1
    return PReLU.apply(input, weight, bshape=bshape)


# ---- softmax ----------------------------------------------------------------------------

_SOFTMAX_BLOCK = 131072  # elements: for (35 x 20, 10,000) LM logits, 13 rows at a time


def _log_softmax(a, axis):
    xp = get_array_module(a)
    if a.size == 0:
        return a.copy()
    z = xp.empty_like(a)
    blocks = _cache_blocks(a, _SOFTMAX_BLOCK, axis)
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
        for s in _cache_blocks(gx, _SOFTMAX_BLOCK, self.axis):  # g - exp(out) * total, block by block
            xp.exp(self.out[s], out=gx[s])
            gx[s] *= total[s]
            xp.subtract(g[s], gx[s], out=gx[s])
        return gx


def _softmax_args(input, dim, dtype, op):
    if dtype is not None:
        input = input.to(dtype)
    check_float(input, op)
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
    if open_regions[0] and not thread_state.running:
        return autocast_call(softmax, "softmax", **locals())
    if bfloat16_input(input):  # float32 math, the result rounded once (as torch's CPU kernel)
        return fp32_math(softmax, **locals())
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
    if open_regions[0] and not thread_state.running:
        return autocast_call(log_softmax, "log_softmax", **locals())
    if bfloat16_input(input):  # float32 math, the result rounded once (as torch's CPU kernel)
        return fp32_math(log_softmax, **locals())
    input, axis = _softmax_args(input, dim, dtype, "log_softmax")
    if input.ndim == 0:  # as softmax
        return LogSoftmax.apply(input.reshape(1), axis=0).reshape(())
    return LogSoftmax.apply(input, axis=axis)
