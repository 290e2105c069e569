"""The fast paths behind the GPT and LSTM training steps (benchmarks/step.py) give PyTorch's
values and gradients in float32, the dtype they serve: GELU's chunked float32 erf, the row
normalization of layer_norm/rms_norm, the sort-based embedding backward, the sparse
cross-entropy/NLL backward and Linear's one GEMM over all leading dims. (float64, with
gradcheck, goes through the same code in test_functional.py and test_nn_layers.py.)"""
import importlib

import numpy as np
import pytest

import dtrain
import dtrain.nn.functional as F
from helpers import check_op, compare, lib

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)


def float32_vs_torch(fn, *arrays, atol=2e-6, rtol=1e-5):
    """``fn`` (spelled for both frameworks through its first argument, the framework) on
    float32 copies of ``arrays``: outputs, then gradients for one random output seed, equal
    PyTorch's. Integer arrays go in as indices, without gradient."""
    def inputs(lib):
        return [lib.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    ours, theirs = inputs(dtrain), inputs(torch)
    out, tout = fn(dtrain, *ours), fn(torch, *theirs)
    compare(out, tout.detach().numpy(), atol, rtol, "torch")
    seed = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    (out * dtrain.tensor(seed)).sum().backward()
    (tout * torch.tensor(seed)).sum().backward()
    for x, t in zip(ours, theirs):
        if t.requires_grad:
            compare(x.grad, t.grad.numpy(), atol, rtol, "torch gradient")


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("x", [f32(3, 5), f32(2, 40_001, scale=3.0), f32(64, 700).T,
                               np.array([0.0, -0.0, 1e-30, -9.0, 9.0, 40.0, -40.0], dtype=np.float32)],
                         ids=["small", "several-chunks", "transposed", "edges"])
def test_gelu_float32(x):
    """float32 gelu (Abramowitz-Stegun erf, chunked) within 2e-6 of PyTorch's, values and
    gradients, across chunk boundaries, for a non-contiguous input and at the extremes."""
    float32_vs_torch(lambda lib, a: lib.nn.functional.gelu(a), x)


def test_gelu_float32_without_grad_is_the_same():
    """Without a gradient to compute (no_grad) the float32 gelu gives the same values."""
    x = dtrain.tensor(f32(5, 7000), requires_grad=True)
    with dtrain.no_grad():
        plain = F.gelu(x)
    np.testing.assert_array_equal(plain.numpy(), F.gelu(x).detach().numpy())


@pytest.mark.parametrize("shape,normalized", [((16, 64, 128), (128,)), ((4, 3, 5), (3, 5)), ((0, 8), (8,))])
def test_layer_norm_and_rms_norm_float32(shape, normalized):
    """layer_norm (weight, bias) and rms_norm (weight) over one or two trailing dims, and
    over zero rows, equal PyTorch's in float32 (weight and bias gradients sum 1024 rows:
    float32 rounding reaches 1e-5 of their size)."""
    w, b = f32(*normalized) + 1, f32(*normalized)
    float32_vs_torch(lambda lib, x, w, b: lib.nn.functional.layer_norm(x, normalized, w, b), f32(*shape), w, b,
                     atol=1e-4, rtol=1e-4)
    float32_vs_torch(lambda lib, x, w: lib.nn.functional.rms_norm(x, normalized, w, 1e-6), f32(*shape), w,
                     atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n,idx", [(160, rng.integers(0, 160, (16, 64))), (10, np.zeros((3, 4), dtype=np.int64)),
                                   (7, np.zeros((0,), dtype=np.int64))], ids=["gpt", "one-row", "empty"])
def test_embedding_backward_float32(n, idx):
    """The embedding gradient sums the output gradient of every repeat of an index, as
    PyTorch's, for a GPT-sized batch, all indices equal, and no indices."""
    float32_vs_torch(lambda lib, w, i: lib.nn.functional.embedding(i, w), f32(n, 8), idx, atol=1e-5)


def test_embedding_backward_padding_row_float32():
    """With padding_idx the padding row's gradient stays 0 among repeated indices."""
    idx = rng.integers(0, 6, (5, 9))
    float32_vs_torch(lambda lib, w, i: lib.nn.functional.embedding(i, w, padding_idx=2), f32(6, 4), idx,
                     atol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"ignore_index": 3}, {"label_smoothing": 0.1}, {"reduction": "sum"}])
def test_cross_entropy_float32(kwargs):
    """cross_entropy over a GPT step's logits (1024 x 160) equals PyTorch's, loss and
    gradient, with ignore_index, label smoothing and the sum."""
    y = rng.integers(0, 160, 1024)
    float32_vs_torch(lambda lib, x, t: lib.nn.functional.cross_entropy(x, t, **kwargs), f32(1024, 160, scale=3.0),
                     y, atol=1e-5)


def test_nll_after_log_softmax_float32():
    """log_softmax then nll_loss (word_language_model's decoder output) equals PyTorch's, for
    (N, C) and (N, C, d) inputs of one and of several blocks of rows."""
    for shape, tshape in (((300, 1000), (300,)), ((6, 11, 4), (6, 4)), ((40, 50, 100), (40, 100))):
        y = rng.integers(0, shape[1], tshape)
        float32_vs_torch(lambda lib, x, t: lib.nn.functional.nll_loss(lib.nn.functional.log_softmax(x, 1), t),
                         f32(*shape, scale=3.0), y, atol=1e-5)


def test_log_softmax_in_small_blocks_float64(monkeypatch):
    """With blocks of two rows, log_softmax (along dims 1 and 2, and dim 0: one block) and
    cross_entropy pass gradcheck and match PyTorch in float64."""
    monkeypatch.setattr(importlib.import_module("dtrain.tensor.ops.activation"), "_SOFTMAX_BLOCK", 8)
    for dim in (0, 1, 2):
        check_op(lambda x: lib(x).nn.functional.log_softmax(x, dim), (5, 4, 3))
    check_op(lambda x, t: lib(x).nn.functional.cross_entropy(x, t, label_smoothing=0.1), (7, 4),
             rng.integers(0, 4, 7))


@pytest.mark.parametrize("shape,prep", [((2, 3, 4, 6), lambda a: a), ((5, 3, 6), lambda a: a.transpose(0, 1))],
                         ids=["4-d", "non-contiguous"])
def test_linear_module_over_leading_dims(shape, prep):
    """nn.Linear on a 4-D input and on a non-contiguous (transposed) 3-D one equals torch's,
    output and the gradients of input, weight and bias."""
    w, b = f32(7, 6), f32(7)
    ours = dtrain.nn.Linear(6, 7)
    theirs = torch.nn.Linear(6, 7)
    for layer, fw in ((ours, dtrain), (theirs, torch)):
        with fw.no_grad():
            layer.weight.copy_(fw.tensor(w))
            layer.bias.copy_(fw.tensor(b))
    float32_vs_torch(lambda fw, a: (ours if fw is dtrain else theirs)(prep(a)), f32(*shape), atol=1e-5)
    compare(ours.weight.grad, theirs.weight.grad.numpy(), 1e-5, 1e-5, "torch weight gradient")
    compare(ours.bias.grad, theirs.bias.grad.numpy(), 1e-5, 1e-5, "torch bias gradient")


@pytest.mark.gpu
def test_gpu_float32_step_ops_match_cpu_fast_paths():
    """On 'cuda' (CuPy: exact erf, scatter-add embedding gradient) the float32 gelu,
    layer_norm, embedding and cross_entropy agree with the CPU's fast paths, values and
    gradients, to float32 rounding."""
    from test_xp_audit import _forward_backward

    def fn(x, w, b, emb, i, t):
        h = F.layer_norm(F.gelu(x) + F.embedding(i, emb), (16,), w, b)
        return F.cross_entropy(h, t, reduction="none")
    arrays = [f32(40, 16, scale=3.0), f32(16) + 1, f32(16), f32(9, 16), rng.integers(0, 9, 40),
              rng.integers(0, 16, 40)]
    cpu, gpu = _forward_backward(fn, arrays, "cpu"), _forward_backward(fn, arrays, "cuda")
    for c, g in zip(cpu, gpu):
        np.testing.assert_allclose(g, c, rtol=1e-4, atol=1e-5)
