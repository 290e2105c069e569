"""Ordering: sort, argsort, topk (values carry gradients through their indices) and
unique; values against NumPy and PyTorch, gradients against PyTorch; the error paths."""
import numpy as np
import pytest

import dtrain
from helpers import check_op, compare, lib

TIES = np.array([[3.0, 1.0, 3.0, 2.0, 1.0], [0.5, 0.5, 0.5, -1.0, 2.0]])


def _sort(a, axis=-1, descending=False):
    idx = np.argsort(-a if descending else a, axis=axis, kind="stable")
    return np.take_along_axis(a, idx, axis), idx


SORT = [
    ("sort", lambda a: a.sort(), (3, 5), lambda a: _sort(a)),
    ("sort_dim0", lambda a: a.sort(0), (4, 3), lambda a: _sort(a, 0)),
    ("sort_descending", lambda a: a.sort(descending=True), (3, 5), lambda a: _sort(a, -1, True)),
    ("sort_1d", lambda a: lib(a).sort(a, dim=0), (6,), lambda a: _sort(a, 0)),
    ("topk", lambda a: a.topk(2), (3, 5), lambda a: tuple(x[:, :2] for x in _sort(a, -1, True))),
    ("topk_smallest", lambda a: a.topk(3, largest=False), (3, 5), lambda a: tuple(x[:, :3] for x in _sort(a))),
    ("topk_dim0", lambda a: a.topk(2, dim=0), (4, 3), lambda a: tuple(x[:2] for x in _sort(a, 0, True))),
    ("topk_all", lambda a: a.topk(4, dim=-1), (2, 4), lambda a: _sort(a, -1, True)),
]


@pytest.mark.parametrize("fn, x, ref", [c[1:] for c in SORT], ids=[c[0] for c in SORT])
def test_sort_like(fn, x, ref):
    """Values and indices of sort/topk, and the gradient routed back to the chosen elements."""
    check_op(fn, x, ref=ref)


def test_stable_sort_keeps_equal_elements_in_order():
    """Ties keep their original order, ascending and descending (PyTorch's stable=True)."""
    torch = pytest.importorskip("torch")
    x, t = dtrain.tensor(TIES), torch.tensor(TIES)
    for descending in (False, True):
        got = x.sort(descending=descending)
        want = t.sort(descending=descending, stable=True)
        compare(got.values, want.values.numpy())
        compare(got.indices, want.indices.numpy())
        compare(x.argsort(descending=descending), want.indices.numpy())


def test_sort_returns_named_fields():
    """sort and topk return (values, indices) with .values / .indices of dtype int64."""
    x = dtrain.tensor([1.0, 5.0, 3.0])
    v, i = dtrain.topk(x, 2)
    res = x.sort(descending=True)
    assert v.tolist() == [5.0, 3.0] and i.tolist() == [1, 2] and i.dtype == dtrain.int64
    assert res.values.tolist() == [5.0, 3.0, 1.0] and res.indices.tolist() == [1, 2, 0]
    assert type(dtrain.topk(x, 1)).__name__ == "topk"


def test_topk_ties_and_integers():
    """topk on an int tensor keeps the dtype; equal values come lower index first."""
    v, i = dtrain.tensor([2, 7, 7, 1]).topk(2)
    assert v.tolist() == [7, 7] and i.tolist() == [1, 2] and v.dtype == dtrain.int64


@pytest.mark.parametrize("call, message", [
    (lambda: dtrain.ones(3).topk(4), r"topk\(\): selected index k out of range: k = 4 for dimension 0 of size 3"),
    (lambda: dtrain.ones(3).topk(-1), r"selected index k out of range: k = -1"),
    (lambda: dtrain.ones(2, 3).sort(dim=2), r"sort: dimension out of range"),
    (lambda: dtrain.ones(2, 3).topk(1, dim=-3), r"topk: dimension out of range"),
    (lambda: dtrain.unique(dtrain.ones(2, 3), dim=2), r"unique: dimension out of range"),
])
def test_sort_errors(call, message):
    """A bad k or dim names the op and the bad value."""
    with pytest.raises((RuntimeError, IndexError), match=message):
        call()


def test_sort_of_a_non_tensor():
    """sort/topk/unique of a list is a TypeError naming the op."""
    for fn, op in ((dtrain.sort, "sort"), (dtrain.argsort, "sort"), (dtrain.unique, "unique")):
        with pytest.raises(TypeError, match=f"{op}: expected a Tensor, got list"):
            fn([3, 1])
    with pytest.raises(TypeError, match="topk: expected a Tensor, got list"):
        dtrain.topk([3, 1], 1)


U = np.array([[3, 1, 2], [1, 3, 3], [3, 1, 2]])


@pytest.mark.parametrize("kwargs", [{}, {"return_inverse": True}, {"return_counts": True},
                                    {"return_inverse": True, "return_counts": True}, {"dim": 0},
                                    {"dim": 1, "return_inverse": True, "return_counts": True},
                                    {"dim": 0, "return_inverse": True, "return_counts": True}])
def test_unique(kwargs):
    """unique's values, inverse indices and counts equal PyTorch's (flattened, or along a dim)."""
    torch = pytest.importorskip("torch")
    got = dtrain.unique(dtrain.tensor(U), **kwargs)
    want = torch.unique(torch.tensor(U), **kwargs)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        compare(g, w.numpy())


def test_unique_of_floats_against_numpy():
    """unique of a float tensor: sorted distinct values, inverse rebuilding the input."""
    x = np.array([[0.5, -1.0], [0.5, 2.0]])
    values, inverse, counts = dtrain.tensor(x).unique(return_inverse=True, return_counts=True)
    compare(values, np.unique(x))
    compare(values[inverse], x)
    assert counts.tolist() == [1, 2, 1]
