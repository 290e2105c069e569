"""masked_fill, scatter / scatter_add (and their in-place forms), index_select, gather and
indexing with a range: values against NumPy and PyTorch, gradients by finite differences
and against PyTorch (helpers.check_op); each bad-input message."""
import numpy as np
import pytest

import dtrain
from helpers import check_op, compare, lib, rand

MASK = rand(3, 4) > 0
ROW_MASK = np.array([True, False, True, False])
IDX = np.array([[2, 0, 1, 2], [0, 1, 0, 1]])


def _fill(a, mask, value):
    out = a.copy()
    out[np.broadcast_to(mask, a.shape)] = value
    return out


MASKED_FILL = [
    ("full_mask", lambda a, m: a.masked_fill(m, -1.5), [(3, 4), MASK], lambda a, m: _fill(a, m, -1.5)),
    ("broadcast_mask", lambda a, m: a.masked_fill(m, 0.0), [(3, 4), ROW_MASK], lambda a, m: _fill(a, m, 0.0)),
    ("broadcast_4d", lambda a, m: a.masked_fill(m, 2.0), [(2, 2, 3, 3), np.tril(np.ones((3, 3), bool))[None, None]],
     lambda a, m: _fill(a, m, 2.0)),
    ("int_value", lambda a, m: a.masked_fill(m, 3), [(3, 4), MASK], lambda a, m: _fill(a, m, 3.0)),
    ("function", lambda a, m: lib(a).masked_fill(a, m, 1.0), [(3, 4), MASK], lambda a, m: _fill(a, m, 1.0)),
    ("tensor_value", lambda a, m, v: a.masked_fill(m, v), [(3, 4), MASK, np.array(0.7)],
     lambda a, m, v: _fill(a, m, v)),
]


@pytest.mark.parametrize("fn, inputs, ref", [c[1:] for c in MASKED_FILL], ids=[c[0] for c in MASKED_FILL])
def test_masked_fill(fn, inputs, ref):
    """masked_fill writes value where the (broadcast) mask holds; the gradient passes
    elsewhere, and a 0-d tensor value gets the sum of the filled positions' gradients."""
    check_op(fn, *inputs, ref=ref)


def test_masked_fill_inf_causal_softmax():
    """The GPT pattern: scores masked with -inf above the diagonal, then softmax; the rows
    and the gradient match PyTorch's."""
    scores, mask = rand(2, 4, 4), np.tril(np.ones((4, 4))) == 0
    check_op(lambda s, m: s.masked_fill(m, float("-inf")).softmax(-1), scores, mask,
             ref=lambda s, m: np.exp(_fill(s, m, -np.inf)) / np.exp(_fill(s, m, -np.inf)).sum(-1, keepdims=True))


def test_masked_fill_inplace():
    """masked_fill_ writes into the tensor itself (a view's base too) and returns it."""
    x = dtrain.zeros(2, 3)
    out = x.masked_fill_(dtrain.tensor([True, False, True]), 5.0)
    assert out is x and x.tolist() == [[5.0, 0.0, 5.0], [5.0, 0.0, 5.0]]


@pytest.mark.parametrize("call, error, message", [
    (lambda x: x.masked_fill(dtrain.ones(3, 4), 0.0), RuntimeError,
     r"masked_fill only supports boolean masks, but got mask with dtype float32"),
    (lambda x: x.masked_fill(dtrain.ones(5, dtype=dtrain.bool), 0.0), RuntimeError,
     r"masked_fill: the mask of shape \[5\] does not broadcast to the input's shape \[3, 4\]"),
    (lambda x: x.masked_fill(dtrain.ones(2, 3, 4, dtype=dtrain.bool), 0.0), RuntimeError,
     r"the mask of shape \[2, 3, 4\] does not broadcast to the input's shape \[3, 4\]"),
    (lambda x: x.masked_fill(dtrain.ones(4, dtype=dtrain.bool), dtrain.ones(2)), RuntimeError,
     r"masked_fill only supports a 0-dimensional value tensor, but got tensor with 1 dimension"),
    (lambda x: x.masked_fill(dtrain.ones(4, dtype=dtrain.bool), "a"), TypeError,
     r"masked_fill: value must be a number or a 0-d Tensor, got str"),
    (lambda x: x.long().masked_fill(dtrain.ones(4, dtype=dtrain.bool), 0.5), RuntimeError,
     r"masked_fill: value 0.5 cannot be converted to type int64"),
    (lambda x: x.masked_fill_(dtrain.ones(4), 0.0), RuntimeError, r"masked_fill_ only supports boolean masks"),
])
def test_masked_fill_errors(call, error, message):
    """A non-bool or non-broadcasting mask, or a bad value, is refused with the op's name."""
    with pytest.raises(error, match=message):
        call(dtrain.zeros(3, 4))


def _scatter_ref(a, dim, idx, src, add=False):
    out = a.copy()
    for pos in np.ndindex(*idx.shape):
        tgt = list(pos)
        tgt[dim] = idx[pos]
        v = src[pos] if isinstance(src, np.ndarray) else src
        out[tuple(tgt)] = out[tuple(tgt)] + v if add else v
    return out


UNIQUE_ROWS = np.array([[2, 0, 1], [0, 1, 2]])  # distinct targets per column: no write races
SCATTER = [
    ("scatter_dim0", lambda a, s: a.scatter(0, _ix(a, UNIQUE_ROWS), s), [(3, 3), (2, 3)],
     lambda a, s: _scatter_ref(a, 0, UNIQUE_ROWS, s)),
    ("scatter_value", lambda a: a.scatter(0, _ix(a, UNIQUE_ROWS), -2.0), [(3, 3)],
     lambda a: _scatter_ref(a, 0, UNIQUE_ROWS, -2.0)),
    ("scatter_value_keyword", lambda a: lib(a).scatter(a, 0, _ix(a, UNIQUE_ROWS), value=4.0), [(3, 3)],
     lambda a: _scatter_ref(a, 0, UNIQUE_ROWS, 4.0)),
    ("scatter_add_repeats", lambda a, s: a.scatter_add(1, _ix(a, IDX), s), [(2, 3), (2, 4)],
     lambda a, s: _scatter_ref(a, 1, IDX, s, add=True)),
    ("scatter_add_dim0", lambda a, s: lib(a).scatter_add(a, 0, _ix(a, IDX[:, :3] % 2), s), [(2, 3), (2, 3)],
     lambda a, s: _scatter_ref(a, 0, IDX[:, :3] % 2, s, add=True)),
]


def _ix(like, idx):
    """The index array as a tensor of like's framework (torch wants int64)."""
    return lib(like).tensor(idx)


@pytest.mark.parametrize("fn, inputs, ref", [c[1:] for c in SCATTER], ids=[c[0] for c in SCATTER])
def test_scatter(fn, inputs, ref):
    """scatter overwrites, scatter_add accumulates (repeats summing); gradients: to input
    where not overwritten, to src at the positions read."""
    check_op(fn, *inputs, ref=ref)


def test_scatter_src_larger_than_index():
    """src may be larger than index: only its leading window is read, and only that window
    gets a gradient. (PyTorch computes the same values, but its backward refuses the larger
    src, so the gradient is checked by finite differences alone.)"""
    fn = lambda a, s: a.scatter(1, _ix(a, UNIQUE_ROWS), s)  # noqa: E731
    ref = lambda a, s: _scatter_ref(a, 1, UNIQUE_ROWS, s)  # noqa: E731
    check_op(fn, (2, 4), (3, 5), ref=ref, grad=False)
    check_op(fn, (2, 4), (3, 5), ref=ref, no_torch=True)


def test_scatter_inplace_forms():
    """scatter_ and scatter_add_ (src or value) write into the tensor and return it."""
    x = dtrain.zeros(3)
    assert x.scatter_(0, dtrain.tensor([2, 0]), dtrain.tensor([5.0, 7.0])) is x
    assert x.tolist() == [7.0, 0.0, 5.0]
    x.scatter_(0, dtrain.tensor([1]), value=1.5)
    x.scatter_add_(0, dtrain.tensor([0, 0]), dtrain.ones(2))
    assert x.tolist() == [9.0, 1.5, 5.0]


@pytest.mark.parametrize("call, error, message", [
    (lambda x: x.scatter(0, dtrain.tensor([[0.0]]), dtrain.ones(1, 1)), RuntimeError,
     r"scatter\(\): Expected dtype int64 for index, got float32"),
    (lambda x: x.scatter(0, dtrain.tensor([0]), dtrain.ones(1)), RuntimeError,
     r"scatter\(\): Index tensor must have the same number of dimensions as self tensor \(2\)"),
    (lambda x: x.scatter(2, dtrain.tensor([[0]]), dtrain.ones(1, 1)), IndexError,
     r"scatter: dimension out of range"),
    (lambda x: x.scatter(0, dtrain.tensor([[3]]), dtrain.ones(1, 1)), IndexError,
     r"scatter\(\): index 3 is out of bounds for dimension 0 with size 3"),
    (lambda x: x.scatter(0, dtrain.tensor([[-1]]), dtrain.ones(1, 1)), IndexError,
     r"index -1 is out of bounds for dimension 0"),
    (lambda x: x.scatter(0, dtrain.tensor([[0, 1]]), dtrain.ones(1, 1)), RuntimeError,
     r"Expected index \[1, 2\] to be smaller than src \[1, 1\]"),
    (lambda x: x.scatter(0, dtrain.zeros(1, 5, dtype=dtrain.int64), dtrain.ones(1, 5)), RuntimeError,
     r"Expected index \[1, 5\] to be smaller than self \[3, 4\] apart from dimension 0"),
    (lambda x: x.scatter(0, dtrain.tensor([[0]]), dtrain.ones(1, 1, dtype=dtrain.float64)), RuntimeError,
     r"Expected self.dtype to be equal to src.dtype, got float32 and float64"),
    (lambda x: x.scatter(0, dtrain.tensor([[0]])), TypeError, r"give exactly one of src"),
    (lambda x: x.scatter(0, dtrain.tensor([[0]]), dtrain.ones(1)), RuntimeError,
     r"scatter\(\): Index tensor must have the same number of dimensions as src tensor \(1\)"),
    (lambda x: x.masked_fill([True], 0.0), RuntimeError, r"masked_fill only supports boolean masks, but got mask "
                                                         r"with dtype list"),
    (lambda x: x.scatter_add(0, dtrain.tensor([[0]]), 1.0), TypeError, r"scatter_add\(\): src must be a Tensor"),
    (lambda x: x.scatter_add_(0, dtrain.tensor([[0.5]]), dtrain.ones(1, 1)), RuntimeError,
     r"scatter_add_\(\): Expected dtype int64 for index"),
])
def test_scatter_errors(call, error, message):
    """Bad index dtype, rank, range or size, or a src of another dtype, is refused by name."""
    with pytest.raises(error, match=message):
        call(dtrain.zeros(3, 4))


def test_index_with_range():
    """x[range(...)] indexes like a list of ints (advanced indexing), as PyTorch does."""
    check_op(lambda a: a[range(1, 3)], (4, 3), ref=lambda a: a[[1, 2]])
    check_op(lambda a: a[:, range(0, 3, 2)], (2, 3), ref=lambda a: a[:, [0, 2]])


def test_index_select_with_tensor_index():
    """index_select picks rows/columns by an int index (repeats summing in the gradient)."""
    check_op(lambda a: a.index_select(1, _ix(a, np.array([2, 0, 2]))), (2, 3), ref=lambda a: a[:, [2, 0, 2]])


@pytest.mark.parametrize("call, error, message", [
    (lambda x: x.index_select(0, dtrain.tensor([0.0])), RuntimeError,
     r"index_select\(\): Expected dtype int32/int64 for index, got float32"),
    (lambda x: x.index_select(0, [0, 1]), RuntimeError,
     r"index_select\(\): Expected dtype int32/int64 for index, got list"),
    (lambda x: x.index_select(0, dtrain.tensor([[0]])), IndexError,
     r"index_select\(\): Index is supposed to be a vector, got shape \[1, 1\]"),
    (lambda x: x.index_select(2, dtrain.tensor([0])), IndexError, r"index_select: dimension out of range"),
    (lambda x: x.gather(0, dtrain.tensor([[0.0]])), RuntimeError, r"gather\(\): expected an int64 index tensor"),
    (lambda x: x.gather(0, dtrain.tensor([[5]])), IndexError, r"gather\(\): index out of range for dimension 0"),
])
def test_index_select_and_gather_errors(call, error, message):
    """A float, list or 2-D index, or a bad dim, names the op and the bad value."""
    with pytest.raises(error, match=message):
        call(dtrain.zeros(3, 4))


def test_inplace_ops_refuse_graph_tensors():
    """masked_fill_ / scatter_ on a leaf that requires grad say how to do it instead."""
    x = dtrain.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="masked_fill_: a leaf Tensor that requires grad"):
        x.masked_fill_(dtrain.tensor([True, False, True]), 1.0)
    with pytest.raises(RuntimeError, match="scatter_: a leaf Tensor that requires grad"):
        x.scatter_(0, dtrain.tensor([0]), value=1.0)
    compare(x, np.zeros(3))
