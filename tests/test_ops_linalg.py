"""Matrix products: matmul for 1-D, 2-D, batched and broadcast batch dims, mm/bmm/dot/outer,
and the fused linear; values against NumPy and PyTorch, gradients by finite differences."""
import numpy as np
import pytest

import dtrain
from helpers import check_op, rand

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
