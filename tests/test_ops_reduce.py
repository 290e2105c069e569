"""Reductions: values against NumPy and PyTorch and gradients by finite differences and
against PyTorch (through helpers.check_op), over dim / keepdim variants, one row each."""
import numpy as np
import pytest

import dtrain
from helpers import check_op, compare, lib, rand

X = (2, 3, 4)

# (id, fn, input, NumPy reference); fn uses Tensor methods so it also runs on torch tensors.
CASES = [
    ("sum_all", lambda a: a.sum(), X, np.sum),
    ("sum_dim", lambda a: a.sum(1), X, lambda a: a.sum(1)),
    ("sum_neg_dim_keepdim", lambda a: a.sum(-1, keepdim=True), X, lambda a: a.sum(-1, keepdims=True)),
    ("sum_tuple_dims", lambda a: a.sum((0, 2)), X, lambda a: a.sum((0, 2))),
    ("sum_tuple_keepdim", lambda a: a.sum(dim=(-1, 0), keepdim=True), X, lambda a: a.sum((0, 2), keepdims=True)),
    ("sum_transposed", lambda a: a.sum(0), rand(4, 3).T, lambda a: a.sum(0)),
    ("mean_all", lambda a: a.mean(), X, np.mean),
    ("mean_dim_keepdim", lambda a: a.mean(1, keepdim=True), X, lambda a: a.mean(1, keepdims=True)),
    ("mean_tuple", lambda a: a.mean((0, -1)), X, lambda a: a.mean((0, 2))),
    ("var_all", lambda a: a.var(), X, lambda a: a.var(ddof=1)),
    ("var_dim_biased", lambda a: a.var(1, unbiased=False), X, lambda a: a.var(1)),
    ("var_correction", lambda a: a.var(dim=(0, 2), correction=2, keepdim=True), X,
     lambda a: a.var((0, 2), ddof=2, keepdims=True)),
    ("std_all", lambda a: a.std(), X, lambda a: a.std(ddof=1)),
    ("std_dim_keepdim", lambda a: a.std(-1, keepdim=True), X, lambda a: a.std(-1, ddof=1, keepdims=True)),
    ("std_correction0", lambda a: a.std(0, correction=0), X, lambda a: a.std(0)),
    ("prod_all", lambda a: a.prod(), (2, 3), np.prod),
    ("prod_dim", lambda a: a.prod(1), X, lambda a: a.prod(1)),
    ("prod_dim_keepdim", lambda a: a.prod(-1, keepdim=True), X, lambda a: a.prod(-1, keepdims=True)),
    ("prod_one_zero", lambda a: a.prod(1), np.array([[1.5, 0.0, 2.0], [0.5, -1.0, 3.0]]), lambda a: a.prod(1)),
    ("prod_two_zeros", lambda a: a.prod(), np.array([0.0, 2.0, 0.0, 3.0]), np.prod),
    ("max_all", lambda a: a.max(), X, np.max),
    ("min_all", lambda a: a.min(), X, np.min),
    ("max_dim", lambda a: a.max(1), X, lambda a: (a.max(1), a.argmax(1))),
    ("max_dim_keepdim", lambda a: a.max(-1, keepdim=True), X,
     lambda a: (a.max(-1, keepdims=True), a.argmax(-1, keepdims=True))),
    ("min_dim", lambda a: a.min(dim=0), X, lambda a: (a.min(0), a.argmin(0))),
    ("max_elementwise", lambda a, b: a.max(b), [(2, 3), (3,)], np.maximum),
    ("amax_all", lambda a: a.amax(), X, np.max),
    ("amax_tuple", lambda a: a.amax((0, 2)), X, lambda a: a.max((0, 2))),
    ("amin_keepdim", lambda a: a.amin(-1, keepdim=True), X, lambda a: a.min(-1, keepdims=True)),
    ("logsumexp_dim", lambda a: a.logsumexp(1), X, lambda a: np.log(np.exp(a).sum(1))),
    ("logsumexp_tuple_keepdim", lambda a: a.logsumexp((0, 2), keepdim=True), X,
     lambda a: np.log(np.exp(a).sum((0, 2), keepdims=True))),
    ("logsumexp_large", lambda a: a.logsumexp(0), np.array([1000.0, 1001.0]),
     lambda a: 1001.0 + np.log1p(np.exp(-1.0))),
    ("cumsum", lambda a: a.cumsum(1), X, lambda a: a.cumsum(1)),
    ("cumsum_neg", lambda a: a.cumsum(-1), X, lambda a: a.cumsum(-1)),
    ("sum_0d_dim", lambda a: a.sum(0), np.array(1.5), lambda a: a),
    ("max_dim_0d", lambda a: a.max(-1), np.array(1.5), lambda a: (a, np.array(0))),
    ("used_twice", lambda a: a.sum(0) * a.mean(0) + a.amax(0), (3, 4),
     lambda a: a.sum(0) * a.mean(0) + a.max(0)),
]


@pytest.mark.parametrize("fn, x, ref", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reduction(fn, x, ref):
    """Value, shape, dtype and gradient of one reduction."""
    inputs = x if isinstance(x, list) else [x]
    check_op(fn, *inputs, ref=ref)


def test_dtrain_max_dim_returns_values_indices():
    """dtrain.max(x, dim) returns a (values, indices) named tuple, as torch.max."""
    x = dtrain.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    out = dtrain.max(x, 1)
    values, indices = out
    compare(out.values, [5.0, 7.0])
    compare(indices, [1, 0])
    assert indices.dtype == dtrain.int64 and values is out[0]
    compare(dtrain.min(x, dim=0, keepdim=True).indices, [[0, 1, 0]])


def test_amax_ties_share_gradient():
    """amax/amin split the gradient evenly between tied extremes (as torch.amax); max(dim)
    sends it to the one returned index."""
    x = dtrain.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], requires_grad=True)
    x.amax(1).sum().backward()
    compare(x.grad, [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    x.grad = None
    x.amin().backward()
    compare(x.grad, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    x.grad = None
    values, indices = x.max(1)
    values.sum().backward()
    assert x.grad.sum().item() == 2.0 and x.grad[0, indices[0]].item() == 1.0


ARG = [
    ("argmax_all", lambda a: a.argmax(), np.argmax),
    ("argmax_dim", lambda a: a.argmax(1), lambda a: a.argmax(1)),
    ("argmax_keepdim", lambda a: a.argmax(-1, keepdim=True), lambda a: a.argmax(-1, keepdims=True)),
    ("argmin_dim", lambda a: a.argmin(0), lambda a: a.argmin(0)),
    ("argmin_all_keepdim", lambda a: a.argmin(keepdim=True), None),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in ARG], ids=[c[0] for c in ARG])
def test_argmax_argmin(fn, ref):
    """argmax/argmin give int64 indices, over all elements or along a dim."""
    out = check_op(fn, X, ref=ref, grad=False)
    assert out.dtype == dtrain.int64


LOGIC = [
    ("all", lambda a: a.all(), np.all),
    ("all_dim", lambda a: a.all(1), lambda a: a.all(1)),
    ("any_dim_keepdim", lambda a: a.any(0, keepdim=True), lambda a: a.any(0, keepdims=True)),
    ("count_nonzero", lambda a: a.count_nonzero(), np.count_nonzero),
    ("count_nonzero_dim", lambda a: a.count_nonzero(1), lambda a: np.count_nonzero(a, 1)),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in LOGIC], ids=[c[0] for c in LOGIC])
def test_logical_reductions(fn, ref):
    """all/any/count_nonzero on a tensor with zeros."""
    check_op(fn, np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]), ref=ref, grad=False)


def test_integer_sum_and_prod_give_int64():
    """Sums/products of bool and int32 tensors are int64 (as in PyTorch); mean of ints refuses."""
    b = dtrain.tensor([True, True, False])
    assert b.sum().dtype == dtrain.int64 and b.sum().item() == 2
    i = dtrain.tensor(np.array([2, 3], dtype=np.int32))
    assert i.prod().dtype == dtrain.int64 and i.prod().item() == 6
    with pytest.raises(RuntimeError, match="mean.*floating point"):
        i.mean()


def test_float32_reductions_keep_dtype():
    """float32 reductions stay float32 in forward and backward."""
    x = dtrain.rand(3, 4, requires_grad=True)
    out = x.sum() + x.mean(0).sum() + x.var(1).sum() + x.std() + x.prod(1).sum() + x.amax(1).sum() \
        + x.max(0).values.sum() + x.logsumexp(1).sum() + x.cumsum(0).sum()
    assert out.dtype == dtrain.float32
    out.backward()
    assert x.grad.dtype == dtrain.float32


def test_reduce_bad_dim():
    """An out-of-range or repeated dim names the op and the allowed range."""
    x = dtrain.zeros(2, 3)
    with pytest.raises(IndexError, match=r"sum: dimension out of range .*\[-2, 1\].* got 2"):
        x.sum(2)
    with pytest.raises(RuntimeError, match="amax: dim 1 appears multiple times"):
        x.amax((1, -1))
    with pytest.raises(IndexError, match="argmax"):
        x.argmax(5)


def _cumprod_zeros():
    a = rand(3, 5)
    a[0, 1] = 0.0               # one zero
    a[1, 0] = a[1, 3] = 0.0     # two zeros, the first at the start
    a[2, 4] = 0.0               # a zero at the end
    return a


CUMULATIVE = [
    ("cumsum", lambda a: a.cumsum(1), (3, 4), lambda a: np.cumsum(a, 1)),
    ("cumsum_neg_dim", lambda a: lib(a).cumsum(a, dim=-2), (3, 4), lambda a: np.cumsum(a, 0)),
    ("cumprod", lambda a: a.cumprod(1), (3, 4), lambda a: np.cumprod(a, 1)),
    ("cumprod_dim0", lambda a: lib(a).cumprod(a, 0), (4, 2, 3), lambda a: np.cumprod(a, 0)),
    ("cumprod_with_zeros", lambda a: a.cumprod(-1), _cumprod_zeros(), lambda a: np.cumprod(a, -1)),
    ("cumprod_0d", lambda a: a.cumprod(0), np.array(1.5), lambda a: a),
]


@pytest.mark.parametrize("fn, x, ref", [c[1:] for c in CUMULATIVE], ids=[c[0] for c in CUMULATIVE])
def test_cumulative(fn, x, ref):
    """Running sums and products, their gradients exact also where the input has zeros."""
    check_op(fn, x, ref=ref)


def test_cumulative_dtypes():
    """Integer inputs accumulate in int64 (as PyTorch); dtype= converts first."""
    x = dtrain.tensor([1, 2, 3], dtype=dtrain.int32)
    assert x.cumsum(0).dtype == dtrain.int64 and x.cumprod(0).tolist() == [1, 2, 6]
    assert x.cumprod(0, dtype=dtrain.float64).dtype == dtrain.float64
    with pytest.raises(IndexError, match=r"cumprod: dimension out of range"):
        x.cumprod(1)
