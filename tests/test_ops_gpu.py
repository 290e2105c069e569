"""The ops of test_ops_{index,sort,einsum,diag,norm,sampling,...} on 'cuda' (CuPy) give
the CPU's values and gradients (skipped without a GPU)."""
import numpy as np
import pytest

import dtrain
from test_xp_audit import _floats, _forward_backward, _ints

FUNCTIONS = [
    ("triangles_diagonals", lambda a: a.tril() + a.triu(1) * 2 + a.diagonal(1).sum() + a.diag().sum()
     + dtrain.diag(a[0]).sum(0) + a.trace(), [_floats(4, 4)]),
    ("masked_fill_scatter", lambda a, s: a.masked_fill(a > 0, -1.5)
     + a.masked_fill(a[0] < 0, float("-inf")).clamp(-3)
     + a.scatter(0, dtrain.tensor([[1, 0, 3, 2]], device=a.device), s[:1])
     + a.scatter_add(1, dtrain.tensor(_ints(4, 4, high=4), device=a.device), s), [_floats(4, 4), _floats(4, 4)]),
    ("einsum", lambda a, b, c: dtrain.einsum("bij,bjk->bik", a, b).sum(0) + dtrain.einsum("ii->i", c)
     + dtrain.einsum("...j,jk", a[0], b[0]).sum(1) + dtrain.einsum("ij,ij->", c, c),
     [_floats(2, 4, 3), _floats(2, 3, 4), _floats(4, 4)]),
    ("products", lambda c, a, b: dtrain.baddbmm(c, a, b, beta=0.5, alpha=2.0).sum(0)
     + dtrain.addmm(c[0, 0], a[0], b[0]) + dtrain.kron(a[0, :2, :2], b[0, :2, :2]).sum(),
     [_floats(2, 3, 4), _floats(2, 3, 5), _floats(2, 5, 4)]),
    ("sort_topk_cumulative", lambda a: a.sort(1).values + a.sort(0, descending=True).values
     + a.topk(4).values.sum(1, True) + a.cumprod(1) + a.cumsum(0), [_floats(3, 5)]),
    ("norms_unary", lambda a: a.norm(dim=1) + a.norm(1, dim=1) + a.norm(float("inf"), dim=1) + a.norm(0.5, dim=1)
     + dtrain.linalg.matrix_norm(a[:, :3]) + a.erf().sum(1) + a.sinh().sum(1) + a.cosh().sum(1)
     + a.lerp(a * 2, 0.3).sum(1), [_floats(3, 5)]),
    ("shape", lambda a: a.roll(1, 0).narrow(1, 1, 3).repeat_interleave(2, dim=1)
     + a.repeat_interleave(dtrain.tensor([1, 2, 0, 1, 2], device=a.device), dim=1)[:, :6], [_floats(3, 5)]),
]


@pytest.mark.gpu
@pytest.mark.parametrize("name,fn,arrays", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_gpu_ops_match_cpu(name, fn, arrays):
    """Each group of ops, forward and backward in float64 on 'cuda', gives the CPU's values
    and gradients."""
    cpu, gpu = _forward_backward(fn, arrays, "cpu"), _forward_backward(fn, arrays, "cuda")
    for c, g in zip(cpu, gpu):
        np.testing.assert_allclose(g, c, rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.gpu
def test_gpu_unique_multinomial_inplace():
    """unique (flat and by dim), multinomial, masked_fill_ and scatter_ run on 'cuda' and stay there."""
    x = dtrain.tensor([[3, 1, 2], [1, 3, 3], [3, 1, 2]], device="cuda")
    v, inv, cnt = x.unique(return_inverse=True, return_counts=True)
    assert v.device == "cuda:0" and v.tolist() == [1, 2, 3] and cnt.tolist() == [3, 2, 4]
    assert x.unique(dim=0).tolist() == [[1, 3, 3], [3, 1, 2]]
    dtrain.manual_seed(0)
    draws = dtrain.multinomial(dtrain.tensor([[0.0, 1.0, 3.0]], device="cuda"), 2)
    assert draws.device == "cuda:0" and sorted(draws.tolist()[0]) == [1, 2]
    assert dtrain.multinomial(dtrain.tensor([0.0, 1.0], device="cuda"), 5, True).tolist() == [1] * 5
    y = dtrain.zeros(3, device="cuda")
    y.masked_fill_(dtrain.tensor([True, False, True], device="cuda"), 2.0)
    y.scatter_(0, dtrain.tensor([1], device="cuda"), value=5.0)
    assert y.tolist() == [2.0, 5.0, 2.0]
