"""Norms: Tensor.norm / dtrain.norm, dtrain.linalg.vector_norm, matrix_norm and norm;
values against NumPy and PyTorch, gradients by finite differences and against PyTorch,
including the kinks (a zero norm, zero elements, tied maxima) where PyTorch's gradient
is finite."""
import math

import numpy as np
import pytest

import dtrain
from helpers import check_op, compare, rand

try:
    import torch
except ImportError:
    torch = None


def _linalg(x):
    return dtrain.linalg if isinstance(x, dtrain.Tensor) else torch.linalg


def _vnorm(a, ord, axis=None, keepdims=False):
    a = np.abs(a)
    if ord == math.inf:
        return a.max(axis=axis, keepdims=keepdims)
    if ord == -math.inf:
        return a.min(axis=axis, keepdims=keepdims)
    if ord == 0:
        return (a != 0).sum(axis=axis, keepdims=keepdims).astype(a.dtype)
    with np.errstate(divide="ignore"):
        return (a ** ord).sum(axis=axis, keepdims=keepdims) ** (1 / ord)


ZEROS = np.array([[0.0, 1.5, -2.0], [0.0, 0.0, 0.0], [0.3, -0.7, 0.1]])
TIED = np.array([[2.0, -2.0, 1.0], [0.5, -0.25, 0.5]])
ORDS = [2, 1, 3, 0.5, 1.5, -1, math.inf, -math.inf]

VECTOR = ([(f"ord_{o}", lambda a, o=o: _linalg(a).vector_norm(a, o), (3, 4), lambda a, o=o: _vnorm(a, o))
           for o in ORDS]
          + [(f"ord_{o}_dim_with_zeros", lambda a, o=o: _linalg(a).vector_norm(a, ord=o, dim=1), ZEROS,
              lambda a, o=o: _vnorm(a, o, 1)) for o in ORDS]
          + [("inf_ties", lambda a: _linalg(a).vector_norm(a, math.inf, dim=-1), TIED,
              lambda a: _vnorm(a, math.inf, -1)),
             ("dims_keepdim", lambda a: _linalg(a).vector_norm(a, 2, dim=(0, 2), keepdim=True), (2, 3, 4),
              lambda a: _vnorm(a, 2, (0, 2), True)),
             ("method_default", lambda a: a.norm(), (3, 4), lambda a: _vnorm(a, 2)),
             ("method_p_dim", lambda a: a.norm(1, dim=0), (3, 4), lambda a: _vnorm(a, 1, 0)),
             ("method_keepdim", lambda a: a.norm(dim=1, keepdim=True), ZEROS, lambda a: _vnorm(a, 2, 1, True)),
             ("method_fro", lambda a: a.norm("fro"), (3, 4), lambda a: _vnorm(a, 2)),
             ("function", lambda a: (dtrain if isinstance(a, dtrain.Tensor) else torch).norm(a, p=3, dim=-1),
              (2, 5), lambda a: _vnorm(a, 3, -1)),
             ("all_zero", lambda a: a.norm(), np.zeros((2, 2)), lambda a: _vnorm(a, 2))])


@pytest.mark.parametrize("fn, x, ref", [c[1:] for c in VECTOR], ids=[c[0] for c in VECTOR])
def test_vector_norm(fn, x, ref):
    """Value and gradient of one vector norm (PyTorch's gradient at zeros: 0, not nan)."""
    zeros_in_x = isinstance(x, np.ndarray) and (x == 0).any()
    # finite differences straddle the kink at 0; PyTorch's gradient there is the reference
    check_op(fn, x, ref=ref, grad=not zeros_in_x)
    if zeros_in_x and torch is not None:
        _grad_vs_torch(fn, x)


def _grad_vs_torch(fn, x):
    d, t = dtrain.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    fn(d).sum().backward()
    out = fn(t).sum()
    if out.requires_grad:
        out.backward()
    assert not np.isnan(d.grad.numpy()).any()
    compare(d.grad, np.zeros_like(x) if t.grad is None else t.grad.numpy(), what="torch gradient")


def test_ord_zero_has_a_zero_gradient():
    """ord 0 counts non-zeros; its gradient is 0 everywhere."""
    x = dtrain.tensor(ZEROS, requires_grad=True)
    n = dtrain.linalg.vector_norm(x, 0)
    n.backward()
    assert n.item() == 5 and x.grad.tolist() == np.zeros((3, 3)).tolist()


def test_float32_norm_stays_float32():
    """A float32 input gives a float32 norm and gradient; dtype= computes in another dtype."""
    x = dtrain.randn(3, requires_grad=True)
    n = x.norm()
    n.backward()
    assert n.dtype == x.grad.dtype == dtrain.float32
    assert dtrain.linalg.vector_norm(x, dtype=dtrain.float64).dtype == dtrain.float64


MATRIX = [("fro", "fro"), ("one", 1), ("minus_one", -1), ("inf", math.inf), ("minus_inf", -math.inf)]


@pytest.mark.parametrize("ord", [c[1] for c in MATRIX], ids=[c[0] for c in MATRIX])
def test_matrix_norm(ord):
    """matrix_norm and linalg.norm with a matrix ord, batched and with keepdim, match NumPy and PyTorch."""
    check_op(lambda a: _linalg(a).matrix_norm(a, ord), (2, 3, 4),
             ref=lambda a: np.linalg.norm(a, ord, axis=(-2, -1)))
    check_op(lambda a: _linalg(a).norm(a, ord), (3, 4), ref=lambda a: np.linalg.norm(a, ord))
    check_op(lambda a: _linalg(a).matrix_norm(a, ord, dim=(0, 2), keepdim=True), (3, 2, 4),
             ref=lambda a: np.linalg.norm(a, ord, axis=(0, 2), keepdims=True))


LINALG_NORM = [
    ("none_flat", lambda a: _linalg(a).norm(a), (2, 3, 4), lambda a: np.sqrt((a * a).sum())),
    ("none_dim", lambda a: _linalg(a).norm(a, dim=1), (2, 3), lambda a: np.linalg.norm(a, axis=1)),
    ("vector_ord", lambda a: _linalg(a).norm(a, 3), (5,), lambda a: np.linalg.norm(a, 3)),
    ("vector_ord_dim", lambda a: _linalg(a).norm(a, math.inf, dim=0), (3, 2), lambda a: np.abs(a).max(0)),
]


@pytest.mark.parametrize("fn, x, ref", [c[1:] for c in LINALG_NORM], ids=[c[0] for c in LINALG_NORM])
def test_linalg_norm(fn, x, ref):
    """linalg.norm picks a vector or a matrix norm as PyTorch does."""
    check_op(fn, x, ref=ref)


@pytest.mark.parametrize("call, message", [
    (lambda: dtrain.linalg.vector_norm(dtrain.ones(3, dtype=dtrain.int64)),
     r"linalg.vector_norm: Expected a floating point or complex tensor as input. Got int64"),
    (lambda: dtrain.linalg.vector_norm(dtrain.ones(3), ord="fro"), r"linalg.vector_norm: ord must be a real number"),
    (lambda: dtrain.linalg.vector_norm(dtrain.ones(3), dim=1), r"linalg.vector_norm: dimension out of range"),
    (lambda: dtrain.linalg.vector_norm(dtrain.ones(0), ord=-1), r"vector_norm of negative order -1 cannot be computed"),
    (lambda: dtrain.linalg.vector_norm(dtrain.ones(0), ord=math.inf), r"cannot compute the inf norm on an empty"),
    (lambda: dtrain.ones(3).norm(p="nuc"), r"norm: p='nuc' is not supported"),
    (lambda: dtrain.linalg.matrix_norm(dtrain.ones(3)), r"matrix_norm: The input tensor A must have at least 2 dim"),
    (lambda: dtrain.linalg.matrix_norm(dtrain.ones(3, 3), ord=3), r"matrix_norm: Order 3 not supported"),
    (lambda: dtrain.linalg.matrix_norm(dtrain.ones(3, 3), ord="nuc"), r"ord='nuc' needs singular values"),
    (lambda: dtrain.linalg.matrix_norm(dtrain.ones(3, 3), dim=(0, 0)), r"dims must be different. Got \(0, 0\)"),
    (lambda: dtrain.linalg.matrix_norm(dtrain.ones(3, 3), dim=(0,)), r"matrix_norm: dim must be a 2-tuple. Got \(0,\)"),
    (lambda: dtrain.linalg.matrix_norm(dtrain.ones(3, 3, dtype=dtrain.int64), ord=1),
     r"matrix_norm: Expected a floating point tensor as input. Got int64"),
    (lambda: dtrain.linalg.norm(dtrain.ones(3, 3), dim=(0, 1, 1)), r"If dim is specified, it must be of length 1 or 2"),
    (lambda: dtrain.linalg.norm(dtrain.ones(2, 2, 2), ord=1),
     r"If dim is not specified but ord is, the input must be 1D or 2D"),
    (lambda: dtrain.linalg.norm(dtrain.ones(3), ord="fro", dim=0), r"ord='fro' is a matrix norm"),
])
def test_norm_errors(call, message):
    """An integer input, an unknown ord, a bad dim or an empty input name the op and the value."""
    with pytest.raises((RuntimeError, IndexError), match=message):
        call()
