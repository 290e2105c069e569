"""Diagonals and triangles: tril/triu, diagonal, diag, trace; values against NumPy and
PyTorch, gradients by finite differences and against PyTorch; the error paths."""
import numpy as np
import pytest

import dtrain
from helpers import check_op

DIAG = [
    ("tril", lambda a: a.tril(), (4, 4), np.tril),
    ("tril_offset", lambda a: a.tril(1), (3, 5), lambda a: np.tril(a, 1)),
    ("tril_negative", lambda a: a.tril(diagonal=-1), (4, 3), lambda a: np.tril(a, -1)),
    ("tril_batched", lambda a: a.tril(), (2, 3, 4, 4), np.tril),
    ("triu", lambda a: a.triu(), (4, 4), np.triu),
    ("triu_offset", lambda a: a.triu(2), (3, 5), lambda a: np.triu(a, 2)),
    ("triu_batched", lambda a: a.triu(-1), (2, 4, 3), lambda a: np.triu(a, -1)),
    ("diagonal", lambda a: a.diagonal(), (3, 4), np.diagonal),
    ("diagonal_offset", lambda a: a.diagonal(1), (3, 4), lambda a: np.diagonal(a, 1)),
    ("diagonal_below", lambda a: a.diagonal(-2), (4, 3), lambda a: np.diagonal(a, -2)),
    ("diagonal_dims", lambda a: a.diagonal(0, 1, 2), (2, 3, 3), lambda a: np.diagonal(a, 0, 1, 2)),
    ("diagonal_neg_dims", lambda a: a.diagonal(1, -1, 0), (3, 2, 4), lambda a: np.diagonal(a, 1, 2, 0)),
    ("diagonal_empty", lambda a: a.diagonal(5), (3, 4), lambda a: np.diagonal(a, 5)),
    ("diag_of_matrix", lambda a: a.diag(), (3, 4), np.diag),
    ("diag_of_matrix_offset", lambda a: a.diag(-1), (3, 4), lambda a: np.diag(a, -1)),
    ("diag_of_vector", lambda a: a.diag(), (3,), np.diag),
    ("diag_of_vector_offset", lambda a: a.diag(2), (3,), lambda a: np.diag(a, 2)),
    ("diag_of_vector_below", lambda a: a.diag(-1), (3,), lambda a: np.diag(a, -1)),
    ("trace", lambda a: a.trace(), (3, 3), np.trace),
    ("trace_rectangular", lambda a: a.trace(), (2, 4), np.trace),
]


@pytest.mark.parametrize("fn, x, ref", [c[1:] for c in DIAG], ids=[c[0] for c in DIAG])
def test_diag_op(fn, x, ref):
    """Value and gradient of one diagonal / triangle op."""
    check_op(fn, x, ref=ref)


def test_functions_match_methods():
    """dtrain.tril/triu/diag/diagonal/trace are the Tensor methods as functions."""
    a = dtrain.randn(3, 3)
    for name in ("tril", "triu", "diag", "diagonal", "trace"):
        assert dtrain.equal(getattr(dtrain, name)(a), getattr(a, name)())


def test_diagonal_is_a_view():
    """Writing into x.diagonal() (outside autograd) changes x, as PyTorch's view does."""
    x = dtrain.zeros(3, 3)
    x.diagonal().fill_(2.0)
    x.diagonal(1).add_(1.0)
    assert x.tolist() == [[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 2.0]]


def test_tril_keeps_dtype_and_integers():
    """tril of an int tensor stays int; a causal mask compares as PyTorch's does."""
    m = dtrain.tril(dtrain.ones(3, 3, dtype=dtrain.int64))
    assert m.dtype == dtrain.int64 and m.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


@pytest.mark.parametrize("call, message", [
    (lambda: dtrain.tril(dtrain.ones(3)), r"tril: input tensor must have at least 2 dimensions, got shape \[3\]"),
    (lambda: dtrain.triu(dtrain.ones(())), r"triu: input tensor must have at least 2 dimensions"),
    (lambda: dtrain.diagonal(dtrain.ones(3, 3), 0, 1, 1), r"diagonal: dimensions cannot be identical 1, 1"),
    (lambda: dtrain.diagonal(dtrain.ones(3, 3), 0, 0, 2), r"diagonal: dimension out of range"),
    (lambda: dtrain.diagonal(dtrain.ones(3)), r"diagonal: input must have at least 2 dimensions"),
    (lambda: dtrain.diag(dtrain.ones(2, 2, 2)), r"diag\(\): Supports 1D or 2D tensors. Got 3D"),
    (lambda: dtrain.trace(dtrain.ones(3)), r"trace: expected a matrix, but got tensor with dim 1"),
])
def test_diag_errors(call, message):
    """Bad dims raise an error naming the op and the bad value."""
    with pytest.raises((RuntimeError, IndexError), match=message):
        call()


def test_triangle_of_a_non_tensor():
    """tril of a list is a TypeError naming the op."""
    with pytest.raises(TypeError, match="tril: expected a Tensor, got list"):
        dtrain.tril([[1.0]])
