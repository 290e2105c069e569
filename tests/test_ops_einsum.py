"""einsum: values against NumPy's einsum and PyTorch's, gradients by finite differences
and against PyTorch (helpers.check_op), for every kind of equation; the bad-equation errors."""
import numpy as np
import pytest

import dtrain
from helpers import check_op, lib

EINSUM = [
    ("matmul", "ij,jk->ik", [(2, 3), (3, 4)]),
    ("batched_attention_scores", "bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("batched_attention_values", "bhqk,bhkd->bhqd", [(2, 2, 3, 5), (2, 2, 5, 4)]),
    ("implicit_output", "ij,jk", [(2, 3), (3, 4)]),
    ("implicit_sorted", "ba,cb", [(2, 3), (4, 2)]),
    ("transpose", "ij->ji", [(2, 3)]),
    ("sum_all", "ij->", [(2, 3)]),
    ("sum_rows", "ij->j", [(2, 3)]),
    ("trace", "ii->", [(3, 3)]),
    ("diag", "ii->i", [(3, 3)]),
    ("batch_diag", "bii->bi", [(2, 3, 3)]),
    ("outer", "i,j->ij", [(3,), (4,)]),
    ("dot", "i,i->", [(4,), (4,)]),
    ("hadamard", "ij,ij->ij", [(2, 3), (2, 3)]),
    ("bilinear", "bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("three_chain", "ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ellipsis_left", "...ij,...jk->...ik", [(2, 2, 3), (2, 3, 4)]),
    ("ellipsis_broadcast", "...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 4)]),
    ("ellipsis_implicit", "...ij,jk", [(2, 2, 3), (3, 4)]),
    ("ellipsis_middle", "b...d,d->b...", [(2, 3, 4, 5), (5,)]),
    ("size_one_broadcast", "ij,ij->i", [(2, 1), (2, 3)]),
    ("sum_only_in_one", "ij,k->i", [(2, 3), (4,)]),
    ("uppercase", "iJ,Jk->ik", [(2, 3), (3, 2)]),
    ("spaces", "i j , j k -> i k", [(2, 3), (3, 2)]),
]


@pytest.mark.parametrize("eq, shapes", [c[1:] for c in EINSUM], ids=[c[0] for c in EINSUM])
def test_einsum(eq, shapes):
    """einsum(eq, *operands) equals NumPy's and PyTorch's, with PyTorch's gradients."""
    check_op(lambda *xs: lib(xs[0]).einsum(eq, *xs), *shapes, ref=lambda *xs: np.einsum(eq, *xs))


def test_einsum_operands_as_a_list():
    """einsum(eq, [a, b]) is einsum(eq, a, b), as in PyTorch."""
    a, b = dtrain.randn(2, 3), dtrain.randn(3, 4)
    assert dtrain.allclose(dtrain.einsum("ij,jk->ik", [a, b]), a @ b, atol=1e-6)


def test_einsum_float32_stays_float32():
    """A float32 contraction gives float32 values and float32 gradients."""
    a = dtrain.randn(2, 3, requires_grad=True)
    b = dtrain.randn(3, 4, requires_grad=True)
    out = dtrain.einsum("ij,jk->ik", a, b)
    out.sum().backward()
    assert out.dtype == dtrain.float32 and a.grad.dtype == dtrain.float32 and b.grad.dtype == dtrain.float32


@pytest.mark.parametrize("eq, shapes, message", [
    ("ij,jk->ik", [(2, 3)], r"fewer operands were provided"),
    ("ij->ij", [(2, 3), (3,)], r"more operands were provided"),
    ("ijk->i", [(2, 3)], r"number of subscripts in the equation \(3\) does not match the number of "
                         r"dimensions \(2\) for operand 0"),
    ("ij,jk->ik", [(2, 3), (4, 5)], r"subscript j has size 4 for operand 1"),
    ("ij->k", [(2, 3)], r"output subscript k does not appear"),
    ("ij->ii", [(2, 3)], r"output subscript i appears more than once"),
    ("i1->i", [(2, 3)], r"invalid subscript given at index 1"),
    ("ii->i", [(2, 3)], r"subscript i has size 3 for operand 0 which does not broadcast with previously "
                        r"seen size 2"),
    ("i.j->ij", [(2, 3)], r"found '\.' for operand 0 that is not part of any ellipsis"),
])
def test_einsum_errors(eq, shapes, message):
    """A bad equation or mismatched operands raise a RuntimeError naming the problem."""
    with pytest.raises(RuntimeError, match=message):
        dtrain.einsum(eq, *[dtrain.randn(*s) for s in shapes])


def test_einsum_operand_type_error():
    """A non-Tensor operand is a TypeError naming its position."""
    with pytest.raises(TypeError, match="operand 1 must be a Tensor, got list"):
        dtrain.einsum("i,i->", dtrain.ones(2), [1.0, 2.0])


def test_einsum_call_errors():
    """A non-string equation is a TypeError; no operands at all is a RuntimeError."""
    with pytest.raises(TypeError, match=r"einsum\(\): the equation must be a string, got Tensor"):
        dtrain.einsum(dtrain.ones(2), "i->i")
    with pytest.raises(RuntimeError, match=r"einsum\(\): must provide at least one operand"):
        dtrain.einsum("i->i")
