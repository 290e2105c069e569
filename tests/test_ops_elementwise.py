"""Elementwise ops: values against NumPy and PyTorch, gradients by finite differences and
against PyTorch (all through helpers.check_op), one table row per op and variant."""
import math

import numpy as np
import pytest

import dtrain
from helpers import check_op, compare, lib, rand


def pos(*shape):
    return rand(*shape, positive=True)


def sigmoid(a):
    return np.exp(-np.logaddexp(0, -a))


# (id, fn, inputs (shapes or arrays), NumPy reference). ``fn`` is written with Tensor methods
# and operators so that the same lambda runs on torch tensors.
CASES = [
    ("add", lambda a, b: a + b, [(2, 3), (2, 3)], np.add),
    ("add_both_broadcast", lambda a, b: a + b, [(2, 1, 3), (4, 1)], np.add),
    ("add_scalar_right", lambda a: a + 2.5, [(2, 3)], lambda a: a + 2.5),
    ("add_scalar_left", lambda a: 2.5 + a, [(2, 3)], lambda a: 2.5 + a),
    ("add_alpha", lambda a, b: a.add(b, alpha=3), [(2, 3), (3,)], lambda a, b: a + 3 * b),
    ("sub", lambda a, b: a - b, [(3, 1), (1, 4)], np.subtract),
    ("sub_scalar_left", lambda a: 2 - a, [(2, 3)], lambda a: 2 - a),
    ("sub_scalar_right", lambda a: a - 2, [(2, 3)], lambda a: a - 2),
    ("sub_alpha", lambda a, b: a.sub(b, alpha=2), [(2, 3), (2, 3)], lambda a, b: a - 2 * b),
    ("mul", lambda a, b: a * b, [(2, 3), (2, 3)], np.multiply),
    ("mul_both_broadcast", lambda a, b: a * b, [(4, 1, 3), (2, 1)], np.multiply),
    ("mul_scalar_left", lambda a: 3 * a, [(2, 3)], lambda a: 3 * a),
    ("mul_0d", lambda a, b: a * b, [(2, 3), np.array(1.5)], np.multiply),
    ("div", lambda a, b: a / b, [(2, 3), pos(2, 3)], np.divide),
    ("div_broadcast", lambda a, b: a / b, [(2, 1), pos(3)], np.divide),
    ("div_scalar_left", lambda a: 2 / a, [pos(2, 3)], lambda a: 2 / a),
    ("div_scalar_right", lambda a: a / 4, [(2, 3)], lambda a: a / 4),
    ("pow_int_scalar", lambda a: a ** 3, [(2, 3)], lambda a: a ** 3),
    ("pow_float_scalar", lambda a: a ** 0.5, [pos(2, 3)], np.sqrt),
    ("pow_negative_scalar", lambda a: a ** -2, [pos(2, 3)], lambda a: a ** -2.0),
    ("pow_zero_exponent", lambda a: a ** 0, [np.array([0.0, 1.5])], lambda a: a ** 0),
    ("pow_scalar_base", lambda a: 2 ** a, [(2, 3)], lambda a: 2.0 ** a),
    ("pow_tensors", lambda a, b: a ** b, [pos(2, 3), (3,)], np.power),
    ("neg", lambda a: -a, [(2, 3)], np.negative),
    ("abs", lambda a: a.abs(), [(2, 3)], np.abs),
    ("exp", lambda a: a.exp(), [(2, 3)], np.exp),
    ("log", lambda a: a.log(), [pos(2, 3)], np.log),
    ("log1p", lambda a: a.log1p(), [pos(2, 3)], np.log1p),
    ("sqrt", lambda a: a.sqrt(), [pos(2, 3)], np.sqrt),
    ("rsqrt", lambda a: a.rsqrt(), [pos(2, 3)], lambda a: 1 / np.sqrt(a)),
    ("sin", lambda a: a.sin(), [(2, 3)], np.sin),
    ("cos", lambda a: a.cos(), [(2, 3)], np.cos),
    ("tanh", lambda a: a.tanh(), [(2, 3)], np.tanh),
    ("sigmoid", lambda a: a.sigmoid(), [(2, 3)], sigmoid),
    ("sigmoid_extreme", lambda a: a.sigmoid(), [np.array([-800.0, -30.0, 0.0, 30.0, 800.0])], sigmoid),
    ("clamp", lambda a: a.clamp(-0.5, 0.5), [(3, 4)], lambda a: np.clip(a, -0.5, 0.5)),
    ("clamp_min", lambda a: a.clamp(min=0.1), [(3, 4)], lambda a: np.maximum(a, 0.1)),
    ("clamp_max", lambda a: a.clamp(max=0.1), [(3, 4)], lambda a: np.minimum(a, 0.1)),
    ("clamp_tensor_bounds", lambda a, lo, hi: a.clamp(lo, hi), [(3, 4), rand(4) - 1, rand(4) + 1],
     lambda a, lo, hi: np.minimum(np.maximum(a, lo), hi)),
    ("maximum", lambda a, b: a.maximum(b), [(2, 3), (3,)], np.maximum),
    ("minimum", lambda a, b: a.minimum(b), [(2, 1), (1, 3)], np.minimum),
    ("square", lambda a: a.square(), [(2, 3)], np.square),
    ("square_function", lambda a: lib(a).square(a), [(2, 3)], np.square),
    ("erf", lambda a: a.erf(), [(2, 3)], lambda a: np.vectorize(math.erf)(a)),
    ("erf_function", lambda a: lib(a).erf(a), [np.array([-3.0, -0.5, 0.0, 0.5, 3.0])],
     lambda a: np.vectorize(math.erf)(a)),
    ("sinh", lambda a: a.sinh(), [(2, 3)], np.sinh),
    ("cosh", lambda a: lib(a).cosh(a), [(2, 3)], np.cosh),
    ("lerp_scalar", lambda a, b: a.lerp(b, 0.3), [(2, 3), (2, 3)], lambda a, b: a + 0.3 * (b - a)),
    ("lerp_tensor_weight", lambda a, b, w: lib(a).lerp(a, b, w), [(2, 3), (3,), (2, 1)],
     lambda a, b, w: a + w * (b - a)),
    ("used_many_times", lambda a, b: a * a + a.exp() * b - a / (b * b + 1), [(2, 3), (3,)],
     lambda a, b: a * a + np.exp(a) * b - a / (b * b + 1)),
    ("transposed_leaves", lambda a, b: a * b + a.exp(), [rand(3, 2).T, rand(3, 2).T],
     lambda a, b: a * b + np.exp(a)),
]


@pytest.mark.parametrize("fn, inputs, ref", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_elementwise(fn, inputs, ref):
    """Value, dtype, gradient (finite differences, PyTorch) of one elementwise op."""
    check_op(fn, *inputs, ref=ref)


def test_where():
    """where picks a where cond holds else b, broadcasting all three; no grad flows to the
    unselected side."""
    cond = rand(2, 3) > 0
    check_op(lambda c, a, b: lib(a).where(c, a, b), cond, (2, 3), (3,), ref=np.where)


def test_where_scalar_branch():
    """where with a Python scalar on one side keeps the tensor's dtype and differentiates the other."""
    cond = rand(2, 3) > 0
    check_op(lambda c, a: lib(a).where(c, a, 0.0), cond, (2, 3), ref=lambda c, a: np.where(c, a, 0.0))


def test_clamp_gradient_at_boundary():
    """clamp passes the gradient at the boundary itself, as PyTorch does."""
    x = dtrain.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    x.clamp(min=0.0).sum().backward()
    compare(x.grad, [0.0, 1.0, 1.0])


def test_maximum_tie_splits_gradient():
    """maximum/minimum with equal operands send half the gradient to each (as PyTorch)."""
    a = dtrain.tensor([1.0, 2.0], requires_grad=True)
    b = dtrain.tensor([1.0, 3.0], requires_grad=True)
    a.maximum(b).sum().backward()
    compare(a.grad, [0.5, 0.0])
    compare(b.grad, [0.5, 1.0])


def test_pow_zero_base_gradient_is_finite():
    """d(a**b)/db at a == 0 is 0, not nan (PyTorch's convention)."""
    check_op(lambda a, b: a ** b, np.array([0.0, 1.5]), np.array([2.0, 2.0]), ref=np.power)


CMP = [
    ("eq", lambda a, b: a == b, np.equal),
    ("ne", lambda a, b: a != b, np.not_equal),
    ("lt", lambda a, b: a < b, np.less),
    ("le", lambda a, b: a <= b, np.less_equal),
    ("gt", lambda a, b: a > b, np.greater),
    ("ge", lambda a, b: a >= b, np.greater_equal),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in CMP], ids=[c[0] for c in CMP])
def test_comparison(fn, ref):
    """Comparisons broadcast, give bool tensors and no graph, on tensors and scalars."""
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    out = check_op(fn, a, b, ref=ref)
    assert out.dtype == dtrain.bool and not out.requires_grad
    check_op(lambda x: fn(x, 2.0), a, ref=lambda x: ref(x, 2.0))
    check_op(lambda x: fn(2, x), a, ref=lambda x: ref(2, x))


LOGIC = [
    ("logical_and", lambda a, b: a.logical_and(b), np.logical_and),
    ("logical_or", lambda a, b: a.logical_or(b), np.logical_or),
    ("logical_xor", lambda a, b: a.logical_xor(b), np.logical_xor),
    ("and", lambda a, b: a & b, np.logical_and),
    ("or", lambda a, b: a | b, np.logical_or),
    ("xor", lambda a, b: a ^ b, np.logical_xor),
    ("not", lambda a, b: ~a, lambda a, b: ~a),
    ("logical_not", lambda a, b: a.logical_not(), lambda a, b: ~a),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in LOGIC], ids=[c[0] for c in LOGIC])
def test_logical(fn, ref):
    """Logical ops on bool tensors broadcast and give bool tensors."""
    a = np.array([[True, False], [True, True]])
    b = np.array([True, False])
    out = check_op(fn, a, b, ref=ref)
    assert out.dtype == dtrain.bool


BITWISE = [
    ("and", lambda a, b: a & b, np.bitwise_and),
    ("or", lambda a, b: a | b, np.bitwise_or),
    ("xor", lambda a, b: a ^ b, np.bitwise_xor),
    ("not", lambda a, b: ~a, lambda a, b: ~a),
    ("reflected_and", lambda a, b: 6 & a, lambda a, b: 6 & a),
    ("reflected_xor", lambda a, b: 6 ^ b, lambda a, b: 6 ^ b),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in BITWISE], ids=[c[0] for c in BITWISE])
def test_bitwise_int(fn, ref):
    """&, |, ^, ~ on int tensors are bitwise, as in PyTorch (not logical)."""
    out = check_op(fn, np.array([[1, 2, 7], [12, 5, 0]]), np.array([3, 3, 6]), ref=ref)
    assert out.dtype == dtrain.int64


ROUNDING = [
    ("floor", lambda a: a.floor(), np.floor),
    ("ceil", lambda a: a.ceil(), np.ceil),
    ("round", lambda a: a.round(), np.round),
    ("trunc", lambda a: a.trunc(), np.trunc),
    ("sign", lambda a: a.sign(), np.sign),
    ("floordiv", lambda a: a // 2, lambda a: a // 2),
    ("mod", lambda a: a % 2, lambda a: np.mod(a, 2)),
    ("isnan", lambda a: a.isnan(), np.isnan),
    ("isfinite", lambda a: a.isfinite(), np.isfinite),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in ROUNDING], ids=[c[0] for c in ROUNDING])
def test_no_grad_unary(fn, ref):
    """Piecewise-constant ops give the right values and build no graph."""
    check_op(fn, np.array([-2.5, -1.5, -0.4, 0.0, 0.5, 1.5, 2.7]), ref=ref, grad=False)
    x = dtrain.tensor([1.5, -0.5], requires_grad=True)
    assert not fn(x).requires_grad


def test_div_rounding_modes():
    """div(rounding_mode='floor'|'trunc') match PyTorch on floats and ints, negatives included."""
    a, b = np.array([-7.0, 7.0, -3.0]), np.array([2.0, -2.0, 3.0])
    for mode, ref in (("floor", np.floor_divide), ("trunc", lambda x, y: np.trunc(x / y))):
        check_op(lambda x, y: x.div(y, rounding_mode=mode), a, b, ref=ref, grad=False)
        check_op(lambda x, y: x.div(y, rounding_mode=mode), a.astype(np.int64), b.astype(np.int64),
                 ref=lambda x, y: ref(x, y).astype(np.int64), grad=False)


def test_isclose_allclose_equal():
    """isclose/allclose/equal compare with tolerances / exactly, as in PyTorch."""
    a = dtrain.tensor([1.0, 2.0])
    b = dtrain.tensor([1.0, 2.0 + 1e-6])
    assert dtrain.allclose(a, b) and not dtrain.equal(a, b) and dtrain.equal(a, a.clone())
    compare(dtrain.isclose(a, dtrain.tensor([1.0, 3.0])), [True, False])
    assert not dtrain.equal(a, dtrain.tensor([1.0, 2.0, 3.0]))


def test_float32_stays_float32():
    """float32 inputs give float32 outputs and float32 gradients for every differentiable op."""
    x = dtrain.rand(2, 3, requires_grad=True)
    y = dtrain.rand(3, requires_grad=True)
    out = (x + y) * (x - y) / (y + 1) + x ** 2 + 2 ** x + (x + 1).log() + x.exp() + x.sigmoid() \
        + x.tanh() + x.sin() + x.cos() + x.abs() + x.clamp(0.2, 0.8) + x.maximum(y) + (x + 1).rsqrt() \
        + (x + 1).sqrt() + x.log1p() + dtrain.where(x > 0.5, x, y) - 2 - x
    assert out.dtype == dtrain.float32
    out.sum().backward()
    assert x.grad.dtype == dtrain.float32 and y.grad.dtype == dtrain.float32


def test_integer_unary_math_gives_float():
    """Float math on int tensors gives the default float dtype (exp, sqrt, sigmoid...)."""
    i = dtrain.tensor([1, 4])
    for f in (dtrain.exp, dtrain.sqrt, dtrain.sigmoid, dtrain.log):
        assert f(i).dtype == dtrain.float32
    compare(dtrain.sqrt(i), [1.0, 2.0])


def test_new_unary_ops_on_integers_and_float32():
    """erf/sinh/cosh of an int tensor give the default float dtype; float32 stays float32."""
    for name in ("erf", "sinh", "cosh"):
        assert getattr(dtrain, name)(dtrain.tensor([0, 1])).dtype == dtrain.float32
        x = dtrain.randn(3, requires_grad=True)
        getattr(x, name)().sum().backward()
        assert x.grad.dtype == dtrain.float32


def test_lerp_errors():
    """lerp refuses integer inputs, mixed dtypes and non-broadcasting shapes, naming the op."""
    with pytest.raises(RuntimeError, match=r"lerp: expected input to be a floating-point Tensor, got int64"):
        dtrain.lerp(dtrain.tensor([1]), dtrain.tensor([2.0]), 0.5)
    with pytest.raises(RuntimeError, match=r"lerp: expected dtype float32 for `end` but got dtype float64"):
        dtrain.lerp(dtrain.zeros(2), dtrain.zeros(2, dtype=dtrain.float64), 0.5)
    with pytest.raises(RuntimeError, match=r"lerp: expected dtype float32 for `weight` but got dtype float64"):
        dtrain.lerp(dtrain.zeros(2), dtrain.zeros(2), dtrain.zeros(2, dtype=dtrain.float64))
    with pytest.raises(RuntimeError, match=r"sub: shapes \[3\] and \[2\] cannot be broadcast together"):
        dtrain.lerp(dtrain.zeros(2), dtrain.zeros(3), 0.5)
