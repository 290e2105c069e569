"""Large CPU results (over 1 MiB) of conv2d, relu, max_pool2d, gelu and layer_norm, and their
gradients, come from the buffer pool of dtrain/tensor/ops/workspace.py (no fresh pages per step): a buffer is handed
out again only once nothing holds it, so results kept by the caller, saved for backward or
still in flight never change; a training loop reuses its buffers instead of allocating. Small
results are plain arrays."""
import importlib

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
import dtrain.nn.functional as F
from test_nn_layers import matches_torch

workspace = importlib.import_module("dtrain.tensor.ops.workspace")
rng = np.random.default_rng(0)

BIG = (8, 16, 48, 48)  # 1.2 MB of float32: above OUTPUT_BYTES (1 MiB)


def _pooled(array):
    """True when ``array`` is (a view of) one of the pool's buffers."""
    base = array if array.base is None else array.base
    return any(base is b for b in workspace.pooled())


def test_large_results_are_pooled_small_ones_are_not():
    x = dtrain.tensor(rng.standard_normal(BIG).astype(np.float32))
    assert np.prod(BIG) * 4 > workspace.OUTPUT_BYTES
    assert _pooled(F.relu(x).numpy())
    assert _pooled(F.max_pool2d(x, 1).numpy())  # a 1x1 window: the output is input-sized
    assert _pooled(F.conv2d(x, dtrain.ones(16, 16, 1, 1)).numpy())
    small = dtrain.tensor(rng.standard_normal((4, 8)).astype(np.float32))
    assert not _pooled(F.relu(small).numpy())
    ints = dtrain.tensor(rng.integers(-3, 3, BIG))  # integer relu keeps NumPy's own result
    assert np.array_equal(F.relu(ints).numpy(), np.maximum(ints.numpy(), 0))


def test_held_results_are_never_handed_out_again():
    """Results the caller holds (and their views) keep their values while later calls of
    the same shape run; once dropped, their buffer serves the next call."""
    xs = [rng.standard_normal(BIG).astype(np.float32) for _ in range(3)]
    ys = [F.relu(dtrain.tensor(a)) for a in xs]
    view = F.relu(dtrain.tensor(xs[0]))[1:3]
    for _ in range(3):
        F.relu(dtrain.tensor(xs[2]))
    for a, y in zip(xs, ys):
        np.testing.assert_array_equal(y.numpy(), np.maximum(a, 0))
    np.testing.assert_array_equal(view.numpy(), np.maximum(xs[0][1:3], 0))
    buffer = ys[1].numpy()
    buffer = buffer if buffer.base is None else buffer.base
    held = id(buffer)
    del ys[1], buffer
    again = F.relu(dtrain.tensor(xs[1])).numpy()
    assert id(again if again.base is None else again.base) == held


def test_gradients_kept_across_steps_and_pool_stays_bounded():
    """A conv -> relu -> pool net, float32 and large enough to pool: each step's input
    gradient (kept by the caller) is unchanged by later steps, equals PyTorch's, and after
    the first step no new buffer enters the pool."""
    torch = pytest.importorskip("torch")

    def build(m):
        return m.Sequential(m.Conv2d(4, 16, 3, padding=1), m.ReLU(), m.MaxPool2d(2), m.Conv2d(16, 8, 3, padding=1),
                            m.ReLU())
    ours, theirs = build(nn), build(torch.nn)
    ours.load_state_dict({k: dtrain.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    batches = [rng.standard_normal((8, 4, 48, 48)).astype(np.float32) for _ in range(3)]
    kept, sizes = [], []
    for a in batches:
        x = dtrain.tensor(a, requires_grad=True)
        ours(x).sum().backward()
        kept.append(x.grad)
        sizes.append(len(workspace.pooled()))
        xt = torch.tensor(a, requires_grad=True)
        theirs(xt).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    snapshot = [g.numpy().copy() for g in kept]
    for a in batches:
        ours(dtrain.tensor(a, requires_grad=True)).sum().backward()
    for g, s in zip(kept, snapshot):
        np.testing.assert_array_equal(g.numpy(), s)
    assert sizes[1] == sizes[2] <= workspace.POOL_SIZE + len(kept), sizes


def test_float64_modules_still_match_torch():
    """The pooled paths at float64 (check_op's dtype elsewhere is small and unpooled)."""
    torch = pytest.importorskip("torch")

    def build(m):
        return m.Sequential(m.Conv2d(3, 8, 3, padding=1), m.ReLU(), m.MaxPool2d(2))
    matches_torch(build(nn), build(torch.nn), rng.standard_normal((4, 3, 64, 64)), steps=2)


@pytest.mark.parametrize("op", ["gelu", "layer_norm"])
def test_gelu_and_layer_norm_results_kept_while_later_calls_run(op):
    """float32 gelu (its output, derivative and gradient) and layer_norm (xhat, output and
    gradients) pool their large arrays: results and gradients of earlier calls, kept by the
    caller, are unchanged by later calls and equal PyTorch's."""
    torch = pytest.importorskip("torch")
    shape = (10, 128, 256)  # 1.25 MiB of float32

    def run(lib, a, w):
        x = lib.tensor(a, requires_grad=True)
        if op == "gelu":
            y = lib.nn.functional.gelu(x)
        else:
            y = lib.nn.functional.layer_norm(x, (shape[-1],), lib.tensor(w), None)
        y.backward(lib.ones(*shape))
        return y, x.grad

    w = rng.standard_normal(shape[-1]).astype(np.float32)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    ours = [run(dtrain, a, w) for a in arrays]
    for y, g in ours:
        assert _pooled(y.detach().numpy())
    for a, (y, g) in zip(arrays, ours):
        ty, tg = run(torch, a, w)
        np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(g.numpy(), tg.numpy(), rtol=1e-4, atol=2e-5)


def test_relu_of_a_transposed_input_keeps_its_layout():
    """A non-contiguous input is not pooled: the result keeps the input's strides (as
    PyTorch's), so ``.t()`` of it is contiguous again and ``view`` works as there."""
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((1024, 512)).astype(np.float32)  # 2 MiB
    y = F.relu(dtrain.tensor(a).t())
    ty = torch.relu(torch.from_numpy(a).t())
    assert y.is_contiguous() == ty.is_contiguous() is False
    np.testing.assert_array_equal(y.t().contiguous().view(-1).numpy(), ty.t().contiguous().view(-1).numpy())
    assert y.t().is_contiguous() and not _pooled(y.numpy())


def test_linear_weight_gradient_reuses_its_buffer_unless_held():
    """Linear's weight gradient (1024 x 784 float32, 3.1 MiB) comes from the pool: after
    zero_grad(set_to_none=True) the next backward's .grad is the same buffer; a .grad still
    held is never handed out again (the next one is another buffer, the held values stay).
    Each equals g2.T @ x."""
    layer = nn.Linear(784, 1024)

    def backward(seed):
        r = np.random.default_rng(seed)
        x, g2 = r.standard_normal((32, 784)).astype(np.float32), r.standard_normal((32, 1024)).astype(np.float32)
        layer(dtrain.tensor(x)).backward(dtrain.tensor(g2))
        np.testing.assert_allclose(layer.weight.grad.numpy(), g2.T @ x, rtol=1e-5, atol=1e-5)
        return g2.T @ x

    assert 1024 * 784 * 4 > workspace.OUTPUT_BYTES
    backward(1)
    assert _pooled(layer.weight.grad.numpy())
    first = layer.weight.grad.numpy().ctypes.data
    layer.zero_grad(set_to_none=True)
    expected = backward(2)
    assert layer.weight.grad.numpy().ctypes.data == first
    g = layer.weight.grad
    kept = g.numpy().copy()
    layer.zero_grad(set_to_none=True)
    backward(3)
    assert layer.weight.grad.numpy().ctypes.data != first
    np.testing.assert_array_equal(g.numpy(), kept)
    np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-5)
