"""Elementwise ops: arithmetic, unary math, clamp, where; and, without gradient, comparisons,
logic, bitwise ops, remainder, floor_divide and rounding."""
import math
import numbers

from .. import dtypes
from ..backend import broadcast_shapes, erf as erf_array, get_array_module
from ..function import Function, unbroadcast
from ..tensor import Tensor
from .autocast import autocast_call, open_regions, thread_state


def _shape(a):
    return tuple(getattr(a, "shape", ()))  # Python scalars are 0-d


def _scalar(x):
    """A NumPy scalar (np.float32(2)) acts as the Python number it holds, as in PyTorch."""
    return x.item() if isinstance(x, numbers.Number) and hasattr(x, "item") else x


# ---- operands and dtype promotion -----------------------------------------------------

def operands(a, b, op):
    """Bring a binary op's operands to one dtype as PyTorch would; Python scalars stay
    scalars (passed to forward as constants, so CuPy takes them as kernel arguments)."""
    a, b = _scalar(a), _scalar(b)
    ta, tb = isinstance(a, Tensor), isinstance(b, Tensor)
    if ta and tb:
        da, db = a.dtype, b.dtype
        if da == db:
            return a, b
        # a 0-d tensor does not promote a tensor of the same category (as in PyTorch)
        if a.ndim == 0 and b.ndim > 0 and dtypes.is_floating(da) == dtypes.is_floating(db):
            d = db
        elif b.ndim == 0 and a.ndim > 0 and dtypes.is_floating(da) == dtypes.is_floating(db):
            d = da
        else:
            d = dtypes.promote(da, db)
        return a.to(d), b.to(d)
    if not ta and not tb:
        raise TypeError(f"{op}: expected a Tensor operand, got {type(a).__name__} and {type(b).__name__}")
    t, s = (a, b) if ta else (b, a)
    if not isinstance(s, numbers.Number):
        if hasattr(s, "shape") and hasattr(s, "dtype"):  # a raw NumPy/CuPy array
            s = Tensor._wrap(get_array_module(s).asarray(s))
            return operands(a if ta else s, s if ta else b, op)
        raise TypeError(f"{op}: unsupported operand type {type(s).__name__} (expected a Tensor or a number)")
    d = dtypes.promote_scalar(t.dtype, s)
    if d != t.dtype:
        t = t.to(d)
    return (t, s) if ta else (s, t)


def apply_broadcast(cls, op, *args):
    """``cls.apply(*args)`` for an op whose operands broadcast together. A broadcasting
    failure names the op and the shapes instead of surfacing NumPy's ValueError; the
    shapes are checked only on failure, so the common path costs nothing."""
    try:
        return cls.apply(*args)
    except ValueError:
        shapes = [_shape(x) for x in args]
        try:
            broadcast_shapes(*shapes)
        except ValueError:
            raise RuntimeError(f"{op}: shapes {' and '.join(str(list(s)) for s in shapes)} cannot be "
                               f"broadcast together") from None
        raise


def binary(cls, a, b, op):
    a, b = operands(a, b, op)
    return apply_broadcast(cls, op, a, b)


# ---- arithmetic -----------------------------------------------------------------------

class Add(Function):
    def forward(self, a, b):
        self.sa, self.sb = _shape(a), _shape(b)
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.sa), unbroadcast(g, self.sb)


class Sub(Function):
    def forward(self, a, b):
        self.sa, self.sb = _shape(a), _shape(b)
        return a - b

    def backward(self, g):
        return unbroadcast(g, self.sa), unbroadcast(-g, self.sb) if self.needs_input_grad[1] else None


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        na, nb = self.needs_input_grad
        return (unbroadcast(g * self.b, _shape(self.a)) if na else None,
                unbroadcast(g * self.a, _shape(self.b)) if nb else None)


class Scale(Function):
    """``a * factor`` with a constant per-element factor (leaky_relu's slope, dropout's mask)."""

    def forward(self, a, factor=None):
        self.factor = factor
        return a * factor

    def backward(self, g):
        return g * self.factor


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        na, nb = self.needs_input_grad
        ga = unbroadcast(g / self.b, _shape(self.a)) if na else None
        gb = unbroadcast(-g * self.a / (self.b * self.b), _shape(self.b)) if nb else None
        return ga, gb


class Pow(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        na, nb = self.needs_input_grad
        a, b = self.a, self.b
        xp = get_array_module(a, b)
        ga = gb = None
        if na:
            # d(a^b)/da = b a^(b-1), which is 0 where b == 0 (not 0 * a^-1 = nan at a == 0)
            e = xp.where(b == 0, 1, b - 1) if hasattr(b, "shape") else (b - 1 if b != 0 else 1)
            ga = unbroadcast(g * b * a ** e, _shape(a))
        if nb:
            # d(a^b)/db = a^b log a; where a == 0 the limit is 0 (PyTorch's convention). A Python
            # scalar base stays a Python number so that float32 grads stay float32.
            log_a = xp.log(xp.where(a > 0, a, 1)) if hasattr(a, "shape") else math.log(a) if a > 0 else 0.0
            gb = unbroadcast(g * self.out * log_a, _shape(b))
        return ga, gb


def add(a, b, alpha=1):
    return binary(Add, a, b if alpha == 1 else b * alpha, "add")


def sub(a, b, alpha=1):
    return binary(Sub, a, b if alpha == 1 else b * alpha, "sub")


def mul(a, b):
    return binary(Mul, a, b, "mul")


def div(a, b, rounding_mode=None):
    a, b = operands(a, b, "div")
    if rounding_mode == "floor":
        return _no_grad_binary(a, b, "floor_divide", "div")
    if rounding_mode == "trunc":
        q = _no_grad_binary(a, b, "true_divide", "div")
        return _no_grad_unary(q, "trunc").to((a if isinstance(a, Tensor) else b).dtype)
    if rounding_mode is not None:
        raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")
    if not _is_float(a) and not _is_float(b):  # true division of integers gives floats
        a = a.to(dtypes.get_default_dtype()) if isinstance(a, Tensor) else a
        b = b.to(dtypes.get_default_dtype()) if isinstance(b, Tensor) else b
    return apply_broadcast(Div, "div", a, b)


def pow(a, b):
    if open_regions[0] and not thread_state.running:
        return autocast_call(pow, "pow", **locals())
    return binary(Pow, a, b, "pow")


def _is_float(x):
    return isinstance(x, float) or (isinstance(x, Tensor) and dtypes.is_floating(x.dtype))


# ---- unary math ----------------------------------------------------------------------

class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Abs(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).abs(a)  # not abs(): this module's abs() shadows the builtin

    def backward(self, g):
        return g * get_array_module(self.a).sign(self.a)


class Exp(Function):
    def forward(self, a):
        self.out = get_array_module(a).exp(a)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).log(a)

    def backward(self, g):
        return g / self.a


class Log1p(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).log1p(a)

    def backward(self, g):
        return g / (1 + self.a)


class Sqrt(Function):
    def forward(self, a):
        self.out = get_array_module(a).sqrt(a)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class Rsqrt(Function):
    def forward(self, a):
        self.out = 1 / get_array_module(a).sqrt(a)
        return self.out

    def backward(self, g):
        return g * -0.5 * self.out ** 3


class Erf(Function):
    def forward(self, a):
        self.a = a
        return erf_array(a).astype(a.dtype, copy=False)

    def backward(self, g):
        a = self.a
        return g * (2 / math.sqrt(math.pi)) * get_array_module(a).exp(-a * a)


class Sinh(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).sinh(a)

    def backward(self, g):
        return g * get_array_module(self.a).cosh(self.a)


class Cosh(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).cosh(a)

    def backward(self, g):
        return g * get_array_module(self.a).sinh(self.a)


class Sin(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).sin(a)

    def backward(self, g):
        return g * get_array_module(self.a).cos(self.a)


class Cos(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).cos(a)

    def backward(self, g):
        return -g * get_array_module(self.a).sin(self.a)


class Tanh(Function):
    def forward(self, a):
        self.out = get_array_module(a).tanh(a)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


class Sigmoid(Function):
    def forward(self, a):
        xp = get_array_module(a)
        # written through tanh: exp(-a) overflows for very negative a
        self.out = xp.tanh(a * 0.5) * 0.5 + 0.5
        return self.out.astype(a.dtype, copy=False)

    def backward(self, g):
        return g * self.out * (1 - self.out)


class Clamp(Function):
    def forward(self, a, lo=None, hi=None):
        self.a, self.lo, self.hi = a, lo, hi
        return get_array_module(a).clip(a, lo, hi)

    def backward(self, g):
        a, mask = self.a, None
        # the gradient passes where the input was inside [lo, hi], boundaries included (as PyTorch)
        if self.lo is not None:
            mask = a >= self.lo
        if self.hi is not None:
            m = a <= self.hi
            mask = m if mask is None else mask & m
        return g * mask


class Maximum(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return get_array_module(a, b).maximum(a, b)

    def backward(self, g):
        return _select_grads(self, g, self.a > self.b)


class Minimum(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return get_array_module(a, b).minimum(a, b)

    def backward(self, g):
        return _select_grads(self, g, self.a < self.b)


def _select_grads(fn, g, a_wins):
    """Gradient of max/min: to the winner; split evenly on ties (as PyTorch does)."""
    tie = fn.a == fn.b
    wa = a_wins + 0.5 * tie
    na, nb = fn.needs_input_grad
    return (unbroadcast(g * wa, _shape(fn.a)).astype(g.dtype, copy=False) if na else None,
            unbroadcast(g * (1 - wa), _shape(fn.b)).astype(g.dtype, copy=False) if nb else None)


class Where(Function):
    def forward(self, cond, a, b):
        self.cond, self.sa, self.sb = cond, _shape(a), _shape(b)
        return get_array_module(cond, a, b).where(cond, a, b)

    def backward(self, g):
        _, na, nb = self.needs_input_grad
        zero = g.dtype.type(0)
        xp = get_array_module(g)
        return (None,
                unbroadcast(xp.where(self.cond, g, zero), self.sa) if na else None,
                unbroadcast(xp.where(self.cond, zero, g), self.sb) if nb else None)


def neg(x):
    return Neg.apply(x)


def abs(x):  # noqa: A001  (PyTorch's name)
    return Abs.apply(x)


def exp(x):
    if open_regions[0] and not thread_state.running:
        return autocast_call(exp, "exp", **locals())
    return Exp.apply(_as_float(x))


def log(x):
    if open_regions[0] and not thread_state.running:
        return autocast_call(log, "log", **locals())
    return Log.apply(_as_float(x))


def log1p(x):
    if open_regions[0] and not thread_state.running:
        return autocast_call(log1p, "log1p", **locals())
    return Log1p.apply(_as_float(x))


def sqrt(x):
    return Sqrt.apply(_as_float(x))


def rsqrt(x):
    if open_regions[0] and not thread_state.running:
        return autocast_call(rsqrt, "rsqrt", **locals())
    return Rsqrt.apply(_as_float(x))


def sin(x):
    return Sin.apply(_as_float(x))


def cos(x):
    return Cos.apply(_as_float(x))


def tanh(x):
    return Tanh.apply(_as_float(x))


def sigmoid(x):
    return Sigmoid.apply(_as_float(x))


def erf(x):
    """The Gauss error function, elementwise: ``2/sqrt(pi) * integral_0^x exp(-t^2) dt``.

    Example:
        >>> dtrain.erf(dtrain.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8427])
    """
    return Erf.apply(_as_float(x))


def sinh(x):
    """Hyperbolic sine, elementwise (integer tensors give the default float dtype)."""
    if open_regions[0] and not thread_state.running:
        return autocast_call(sinh, "sinh", **locals())
    return Sinh.apply(_as_float(x))


def cosh(x):
    """Hyperbolic cosine, elementwise (integer tensors give the default float dtype)."""
    if open_regions[0] and not thread_state.running:
        return autocast_call(cosh, "cosh", **locals())
    return Cosh.apply(_as_float(x))


def square(x):
    """``x * x`` (integer tensors stay integer, as in PyTorch)."""
    return mul(x, x)


def lerp(input, end, weight):  # noqa: A002
    """``input + weight * (end - input)``; ``weight`` is a number or a Tensor (broadcast).

    Example:
        >>> dtrain.lerp(dtrain.zeros(2), dtrain.ones(2), 0.25)
        tensor([0.2500, 0.2500])
    """
    for name, t in (("input", input), ("end", end)):
        if not isinstance(t, Tensor) or not dtypes.is_floating(t.dtype):
            raise RuntimeError(f"lerp: expected {name} to be a floating-point Tensor, got "
                               f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")
    if input.dtype != end.dtype:
        raise RuntimeError(f"lerp: expected dtype {input.dtype} for `end` but got dtype {end.dtype}")
    if isinstance(weight, Tensor) and weight.dtype != input.dtype:
        raise RuntimeError(f"lerp: expected dtype {input.dtype} for `weight` but got dtype {weight.dtype}")
    return add(input, mul(weight, sub(end, input)))


def _as_float(x):
    """Unary float math on an integer tensor gives the default float dtype (as PyTorch)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a Tensor, got {type(x).__name__}")
    return x if dtypes.is_floating(x.dtype) else x.to(dtypes.get_default_dtype())


def clamp(x, min=None, max=None):  # noqa: A002
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = x
        if min is not None:
            out = maximum(out, min)
        if max is not None:
            out = minimum(out, max)
        return out
    return Clamp.apply(x, lo=min, hi=max)


clip = clamp


def maximum(a, b):
    return binary(Maximum, a, b, "maximum")


def minimum(a, b):
    return binary(Minimum, a, b, "minimum")


def where(cond, a, b):
    """Elements of ``a`` where ``cond`` is true, else of ``b`` (broadcast together)."""
    if not isinstance(cond, Tensor):
        raise TypeError(f"where: condition must be a bool Tensor, got {type(cond).__name__}")
    if cond.dtype != dtypes.bool_:
        raise TypeError(f"where: condition must be a bool Tensor, got dtype {cond.dtype}")
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = Tensor._wrap(get_array_module(cond.array).asarray(a, dtype=dtypes.promote_scalar(dtypes.bool_, a)))
    a, b = operands(a, b, "where")
    return apply_broadcast(Where, "where", cond.detach(), a, b)


# ---- no gradient: comparisons, logic, bitwise, remainder, floor_divide, rounding -----

class _NoGradUfunc(Function):
    """``xp.<ufunc>`` of the arrays, with no gradient (subclassed per ufunc)."""

    differentiable = False
    ufunc = None

    def forward(self, *arrays):
        return getattr(get_array_module(*[a for a in arrays if hasattr(a, "shape")]), self.ufunc)(*arrays)


_no_grad_ufunc_classes = {}


def _no_grad_ufunc(ufunc):
    """The no-grad Function running ``xp.<ufunc>`` (one class per ufunc, made on first use)."""
    cls = _no_grad_ufunc_classes.get(ufunc)
    if cls is None:
        cls = _no_grad_ufunc_classes[ufunc] = type(ufunc, (_NoGradUfunc,), {"ufunc": ufunc})
    return cls


def _no_grad_binary(a, b, ufunc, op):
    return apply_broadcast(_no_grad_ufunc(ufunc), op, a, b)


def _no_grad_unary(a, ufunc):
    return _no_grad_ufunc(ufunc).apply(a)


def _no_grad_binary_op(ufunc, op):
    """The public op ``op(a, b)`` (a comparison, logical, bitwise, remainder or floor_divide):
    ``xp.<ufunc>`` of the operands promoted as PyTorch, with no gradient."""
    def fn(a, b):
        a, b = operands(a, b, op)
        return _no_grad_binary(a, b, ufunc, op)
    fn.__name__ = op
    return fn


eq = _no_grad_binary_op("equal", "eq")
ne = _no_grad_binary_op("not_equal", "ne")
lt = _no_grad_binary_op("less", "lt")
le = _no_grad_binary_op("less_equal", "le")
gt = _no_grad_binary_op("greater", "gt")
ge = _no_grad_binary_op("greater_equal", "ge")
logical_and = _no_grad_binary_op("logical_and", "logical_and")
logical_or = _no_grad_binary_op("logical_or", "logical_or")
logical_xor = _no_grad_binary_op("logical_xor", "logical_xor")
bitwise_and = _no_grad_binary_op("bitwise_and", "bitwise_and")
bitwise_or = _no_grad_binary_op("bitwise_or", "bitwise_or")
bitwise_xor = _no_grad_binary_op("bitwise_xor", "bitwise_xor")
remainder = _no_grad_binary_op("remainder", "remainder")
floor_divide = _no_grad_binary_op("floor_divide", "floor_divide")


def logical_not(x):
    return _no_grad_unary(x, "logical_not")


def bitwise_not(x):
    return _no_grad_unary(x, "logical_not" if x.dtype == dtypes.bool_ else "invert")


def sign(x):
    return _no_grad_unary(x, "sign")


def floor(x):
    return _no_grad_unary(x, "floor")


def ceil(x):
    return _no_grad_unary(x, "ceil")


def round(x):  # noqa: A001
    return _no_grad_unary(x, "rint")


def trunc(x):
    return _no_grad_unary(x, "trunc")


def isnan(x):
    return _no_grad_unary(x, "isnan")


def isinf(x):
    return _no_grad_unary(x, "isinf")


def isfinite(x):
    return _no_grad_unary(x, "isfinite")


def equal(a, b):
    """True if both tensors have the same shape and elements."""
    return tuple(a.shape) == tuple(b.shape) and bool(eq(a, b).all())


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    xp = get_array_module(a.array, b.array)
    return bool(xp.allclose(a.array, b.array, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    xp = get_array_module(a.array, b.array)
    return Tensor._wrap(xp.isclose(a.array, b.array, rtol=rtol, atol=atol, equal_nan=equal_nan))
