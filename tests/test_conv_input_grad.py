"""conv2d's input gradient at stride 1 and dilation 1 on the CPU runs _input_grad_flat (each
kernel offset's scatter one add of contiguous rows over a zero-widened output gradient): its
gradients equal PyTorch's for odd and even kernels, asymmetric ('same') and no padding,
groups, several chunks of samples, conv1d and conv_transpose2d (whose forward is this
gradient), and equal the general strided path's bit for bit."""
import importlib

import numpy as np
import pytest

import dtrain
import dtrain.nn.functional as F

conv_ops = importlib.import_module("dtrain.tensor.ops.conv")
rng = np.random.default_rng(0)


def _grads(lib, x, w, fn, **kw):
    xt, wt = lib.tensor(x, requires_grad=True), lib.tensor(w, requires_grad=True)
    y = getattr(lib.nn.functional, fn)(xt, wt, **kw)
    y.backward(lib.tensor(np.linspace(-1, 1, y.numel()).reshape(tuple(y.shape))))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


@pytest.mark.parametrize("fn, x_shape, w_shape, kw", [
    ("conv2d", (3, 4, 7, 9), (6, 4, 3, 3), dict(padding=1)),
    ("conv2d", (2, 4, 6, 5), (6, 2, 3, 3), dict(padding=0, groups=2)),
    pytest.param("conv2d", (2, 3, 6, 7), (4, 3, 4, 2), dict(padding="same"),  # asymmetric padding
                 marks=pytest.mark.filterwarnings("ignore:Using padding='same'")),
    ("conv2d", (2, 3, 5, 5), (4, 3, 5, 5), dict(padding=2)),
    ("conv2d", (2, 3, 5, 6), (4, 3, 1, 3), dict(padding=(0, 1))),
    ("conv1d", (2, 3, 11), (5, 3, 3), dict(padding=1)),
    ("conv_transpose2d", (2, 4, 5, 6), (4, 3, 3, 3), dict(padding=1)),
])
def test_stride_one_input_gradient_matches_torch(fn, x_shape, w_shape, kw):
    torch = pytest.importorskip("torch")
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    for ours, theirs in zip(_grads(dtrain, x, w, fn, **kw), _grads(torch, x, w, fn, **kw)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * 9 * 7 * 9 * 8, 1 << 30])
def test_flat_scatter_equals_the_general_path(monkeypatch, chunk_bytes):
    """One sample per chunk, an uneven last chunk, one chunk: the same bits as the general
    path (forced by having the device check report a GPU array, where the flat path never runs)."""
    monkeypatch.setattr(conv_ops, "_CHUNK_BYTES", chunk_bytes)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    gm = rng.standard_normal((7, 1, 5, 7 * 9)).astype(np.float32)
    args = (w, gm, (7, 4, 7, 9), (1, 1), (1, 1), ((1, 1), (1, 1)), (7, 9), 1)
    calls, real = [], conv_ops._input_grad_flat
    monkeypatch.setattr(conv_ops, "_input_grad_flat", lambda *a: calls.append(1) or real(*a))
    flat = conv_ops._input_grad(*args)
    assert calls == [1]
    monkeypatch.setattr(conv_ops, "is_cuda_array", lambda a: True)
    general = conv_ops._input_grad(*args)
    assert calls == [1]
    np.testing.assert_array_equal(flat, general)
