"""Matrix products: matmul for 1-D, 2-D, batched and broadcast batch dims, mm/bmm/dot/outer,
and the fused linear; values against NumPy and PyTorch, gradients by finite differences."""
import numpy as np
import pytest

import dtrain
from helpers import check_op, lib, rand

MATMUL = [
    ("vec_vec", (3,), (3,)),
    ("vec_mat", (3,), (3, 2)),
    ("mat_vec", (2, 3), (3,)),
    ("mat_mat", (2, 3), (3, 4)),
    ("batched", (2, 2, 3), (2, 3, 4)),
    ("broadcast_batch_left", (2, 3), (4, 3, 2)),
    ("broadcast_batch_both", (2, 1, 2, 3), (3, 3, 2)),
    ("vec_batched", (3,), (2, 3, 4)),
    ("batched_vec", (2, 4, 3), (3,)),
    ("transposed_leaves", rand(3, 2).T, rand(4, 3).T),
]


@pytest.mark.parametrize("a, b", [c[1:] for c in MATMUL], ids=[c[0] for c in MATMUL])
def test_matmul(a, b):
    """a @ b follows NumPy's matmul rules; gradients sum over broadcast batch dims."""
    check_op(lambda x, y: x @ y, a, b, ref=np.matmul)


def test_matmul_used_twice():
    """x @ x.T @ x: the same leaf three times in one product chain."""
    check_op(lambda x: x @ x.t() @ x, (3, 2), ref=lambda x: x @ x.T @ x)


NAMED = [
    ("mm", lambda a, b: a.mm(b), (2, 3), (3, 4), np.matmul),
    ("bmm", lambda a, b: a.bmm(b), (2, 2, 3), (2, 3, 4), np.matmul),
    ("dot", lambda a, b: a.dot(b), (4,), (4,), np.dot),
    ("outer", lambda a, b: a.outer(b), (3,), (2,), np.outer),
]


@pytest.mark.parametrize("fn, a, b, ref", [c[1:] for c in NAMED], ids=[c[0] for c in NAMED])
def test_named_products(fn, a, b, ref):
    """mm / bmm / dot / outer agree with NumPy and PyTorch, values and gradients."""
    check_op(fn, a, b, ref=ref)


LINEAR = [
    ("2d_bias", (4, 3), (2, 3), (2,)),
    ("3d_input", (2, 4, 3), (5, 3), (5,)),
    ("1d_input", (3,), (2, 3), (2,)),
    ("transposed_weight", (4, 3), rand(3, 2).T, (2,)),
]


@pytest.mark.parametrize("x, w, b", [c[1:] for c in LINEAR], ids=[c[0] for c in LINEAR])
def test_linear(x, w, b):
    """linear(x, W, b) = x @ W.T + b, with gradients for x, W and b."""
    torch = pytest.importorskip("torch")
    check_op(dtrain.nn.functional.linear, x, w, b, ref=lambda x, w, b: x @ w.T + b,
             torch_fn=torch.nn.functional.linear)


def test_linear_no_bias():
    """linear without a bias is x @ W.T."""
    check_op(lambda x, w: dtrain.nn.functional.linear(x, w), (4, 3), (2, 3), ref=lambda x, w: x @ w.T, no_torch=True)


def test_matmul_promotes_and_keeps_float32():
    """float32 @ float32 stays float32 in forward and backward; int64 @ float32 gives float32."""
    a = dtrain.rand(2, 3, requires_grad=True)
    b = dtrain.rand(3, 2, requires_grad=True)
    out = a @ b
    assert out.dtype == dtrain.float32
    out.sum().backward()
    assert a.grad.dtype == b.grad.dtype == dtrain.float32
    assert (dtrain.ones(2, 3, dtype=dtrain.int64) @ b).dtype == dtrain.float32


def test_linalg_errors():
    """Shape mismatches name the op and both shapes (matmul's inner-size case is in test_errors)."""
    with pytest.raises(RuntimeError, match=r"matmul: batch dimensions of \[2, 2, 3\] and \[3, 3, 4\] do not broadcast"):
        dtrain.zeros(2, 2, 3) @ dtrain.zeros(3, 3, 4)
    with pytest.raises(RuntimeError, match=r"matmul: both arguments need at least 1 dimension"):
        dtrain.zeros(()) @ dtrain.zeros(3)
    with pytest.raises(RuntimeError, match=r"mm: expected 2-D tensors, got shapes \[3\] and \[3, 2\]"):
        dtrain.zeros(3).mm(dtrain.zeros(3, 2))
    with pytest.raises(RuntimeError, match=r"bmm: expected 3-D tensors with equal batch size"):
        dtrain.zeros(2, 2, 3).bmm(dtrain.zeros(3, 3, 2))
    with pytest.raises(RuntimeError, match=r"linear: input shape \[4, 3\] and weight shape \[2, 5\] do not match"):
        dtrain.nn.functional.linear(dtrain.zeros(4, 3), dtrain.zeros(2, 5))
    with pytest.raises(RuntimeError, match=r"linear: bias shape \[3\] must be \(out_features,\) = \(2,\)"):
        dtrain.nn.functional.linear(dtrain.zeros(4, 3), dtrain.zeros(2, 3), dtrain.zeros(3))
    with pytest.raises(RuntimeError, match=r"linear: dtypes differ \(input float32, weight float32, bias float64\)"):
        dtrain.nn.functional.linear(dtrain.zeros(4, 3), dtrain.zeros(2, 3), dtrain.zeros(2, dtype=dtrain.float64))


ADD_MATMUL = [
    ("addmm", lambda c, a, b: c.addmm(a, b), [(2, 4), (2, 3), (3, 4)], lambda c, a, b: c + a @ b),
    ("addmm_bias_broadcast", lambda c, a, b: lib(c).addmm(c, a, b), [(4,), (2, 3), (3, 4)],
     lambda c, a, b: c + a @ b),
    ("addmm_beta_alpha", lambda c, a, b: lib(c).addmm(c, a, b, beta=0.5, alpha=-2.0), [(2, 4), (2, 3), (3, 4)],
     lambda c, a, b: 0.5 * c - 2.0 * (a @ b)),
    ("baddbmm", lambda c, a, b: c.baddbmm(a, b), [(2, 3, 4), (2, 3, 5), (2, 5, 4)], lambda c, a, b: c + a @ b),
    ("baddbmm_broadcast_input", lambda c, a, b: lib(c).baddbmm(c, a, b, alpha=0.25), [(3, 1), (2, 3, 5), (2, 5, 4)],
     lambda c, a, b: c + 0.25 * (a @ b)),
    ("baddbmm_beta_zero", lambda c, a, b: lib(c).baddbmm(c, a, b, beta=0, alpha=0.5), [(2, 3, 4), (2, 3, 5), (2, 5, 4)],
     lambda c, a, b: 0.5 * (a @ b)),
    ("kron_2d", lambda a, b: lib(a).kron(a, b), [(2, 3), (3, 2)], np.kron),
    ("kron_1d", lambda a, b: a.kron(b), [(3,), (2,)], np.kron),
    ("kron_mixed_rank", lambda a, b: lib(a).kron(a, b), [(2,), (2, 3)], np.kron),
    ("kron_3d", lambda a, b: lib(a).kron(a, b), [(2, 1, 2), (1, 2, 2)], np.kron),
    ("outer_function", lambda a, b: lib(a).outer(a, b), [(3,), (4,)], np.outer),
    ("bmm_function", lambda a, b: lib(a).bmm(a, b), [(2, 3, 4), (2, 4, 2)], np.matmul),
]


@pytest.mark.parametrize("fn, inputs, ref", [c[1:] for c in ADD_MATMUL], ids=[c[0] for c in ADD_MATMUL])
def test_add_matmul_and_kron(fn, inputs, ref):
    """addmm/baddbmm (beta * input + alpha * product, input broadcast), kron, outer, bmm:
    values and gradients against NumPy, finite differences and PyTorch."""
    check_op(fn, *inputs, ref=ref)


def test_beta_zero_ignores_nan_input():
    """With beta=0 the input is ignored: its nan does not reach the result (as PyTorch)."""
    c = dtrain.full((1, 2, 2), float("nan"))
    out = dtrain.baddbmm(c, dtrain.ones(1, 2, 3), dtrain.ones(1, 3, 2), beta=0)
    assert out.tolist() == [[[3.0, 3.0], [3.0, 3.0]]]


def test_add_matmul_errors():
    """Wrong ranks, inner sizes, batch sizes, an input that does not broadcast, or mixed
    dtypes name the op and the shapes."""
    z = dtrain.zeros
    with pytest.raises(RuntimeError, match=r"addmm: expected 2-D tensors, got shapes \[2, 2, 3\] and \[3, 4\]"):
        dtrain.addmm(z(4), z(2, 2, 3), z(3, 4))
    with pytest.raises(RuntimeError, match=r"addmm: shapes \[2, 3\] and \[2, 4\] cannot be multiplied"):
        dtrain.addmm(z(4), z(2, 3), z(2, 4))
    with pytest.raises(RuntimeError, match=r"baddbmm: shapes \[2, 3, 5\] and \[3, 5, 4\] cannot be multiplied"):
        dtrain.baddbmm(z(2, 3, 4), z(2, 3, 5), z(3, 5, 4))
    with pytest.raises(RuntimeError, match=r"baddbmm: input of shape \[3, 3\] does not broadcast to the "
                                           r"product's shape \[2, 3, 4\]"):
        dtrain.baddbmm(z(3, 3), z(2, 3, 5), z(2, 5, 4))
    with pytest.raises(RuntimeError, match=r"addmm: expected tensors of one dtype, got float64, float32 and float32"):
        dtrain.addmm(z(4, dtype=dtrain.float64), z(2, 3), z(3, 4))
    with pytest.raises(TypeError, match=r"addmm: expected mat1 to be a Tensor, got list"):
        dtrain.addmm(z(4), [[1.0]], z(3, 4))
