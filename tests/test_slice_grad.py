"""The backward walk's sparse gradients of basic-indexed views (SliceGrad): split, chunk,
unbind and x[i] pieces sum into one array, and every path that needs a dense gradient
(hooks, anomaly mode, leaves, a second backward) gets the same numbers as dense gradients."""
import numpy as np
import pytest

import dtrain
from dtrain.tensor.function import SliceGrad

torch = pytest.importorskip("torch")


def _both(fn, *arrays):
    """fn run on dtrain and torch leaves (float64) from the same arrays: the leaves' grads."""
    grads = []
    for lib in (dtrain, torch):
        leaves = [lib.tensor(a, requires_grad=True) for a in arrays]
        fn(lib, *leaves).backward()
        grads.append([t.grad.numpy() if lib is torch else t.grad.numpy() for t in leaves])
    return grads


def _check(fn, *arrays):
    ours, theirs = _both(fn, *arrays)
    assert len(ours) == len(theirs) == len(arrays)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 6, 9))
W = RNG.standard_normal((9, 9))


def test_split_pieces_sum_into_one_gradient():
    def fn(lib, x, w):
        q, k, v = (x @ w).split(3, dim=2)
        return (q * k + v.sin()).sum()
    _check(fn, X, W)


def test_overlapping_views_and_a_piece_used_twice():
    def fn(lib, x):
        a, b = x[:, :4], x[:, 2:]  # overlapping slices of one tensor
        c = x[1]
        return (a * a).sum() + (b * 3).sum() + (c * c * c).sum() + (a * 2).sum()
    _check(fn, X)


def test_slices_mixed_with_dense_and_advanced_gradients():
    def fn(lib, x):
        rows = lib.tensor(np.array([0, 2, 2]))
        return (x.exp()).sum() + (x[rows] ** 2).sum() + x[..., 1:5].sum() + x.chunk(3, dim=1)[2].tanh().sum()
    _check(fn, X)


def test_leaf_slices_accumulate_into_grad_over_two_backwards():
    for lib in (dtrain, torch):
        w = lib.tensor(W, requires_grad=True)
        for _ in range(2):
            rows = w.unbind(0)
            sum(r.sum() * (i + 1) for i, r in enumerate(rows)).backward()
        if lib is dtrain:
            ours = w.grad.numpy()
        else:
            theirs = w.grad.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=0)
    np.testing.assert_allclose(ours[:, 0], 2 * np.arange(1, 10), rtol=0, atol=0)


def test_hook_on_a_split_input_sees_a_dense_gradient():
    seen = []
    x = dtrain.tensor(X, requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    a, b, c = y.split(3, dim=2)
    (a.sum() + 2 * c.sum()).backward()
    assert len(seen) == 1 and seen[0].shape == X.shape
    expected = np.zeros_like(X)
    expected[..., :3], expected[..., 6:] = 1, 2
    np.testing.assert_array_equal(seen[0], expected)
    np.testing.assert_array_equal(x.grad.numpy(), 2 * expected)


def test_anomaly_mode_checks_a_slice_gradient():
    x = dtrain.tensor(X, requires_grad=True)
    with dtrain.autograd.detect_anomaly():
        a, b = x.split([4, 5], dim=2)
        (a.sum() + (b * 1.0).sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones_like(X))


def test_retain_graph_runs_a_second_backward_with_the_same_numbers():
    x = dtrain.tensor(X, requires_grad=True)
    q, k, v = (x * 1.5).split(3, dim=2)
    loss = (q * k).sum() + v.sum()
    loss.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-15)


def test_an_index_backward_returns_a_slice_gradient_only_for_basic_indices():
    x = dtrain.tensor(X, requires_grad=True)
    basic = x[1:3].grad_fn.backward(np.ones((2, 6, 9)))
    assert type(basic) is SliceGrad and basic.shape == X.shape
    np.testing.assert_array_equal(basic.dense()[1:3], 1)
    assert basic.dense().sum() == 2 * 6 * 9
    advanced = x[dtrain.tensor(np.array([0, 0]))].grad_fn.backward(np.ones((2, 6, 9)))
    assert type(advanced) is np.ndarray and advanced[0].sum() == 2 * 6 * 9
