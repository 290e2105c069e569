"""F.scaled_dot_product_attention and nn.MultiheadAttention against PyTorch (float64 values and
gradients of every input and parameter, through tests/helpers.py), finite differences, dropout
statistics, and the error messages."""
import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.tensor.ops import attention as attention_ops
from helpers import check_op, compare, lib, rand

rng = np.random.default_rng(1)


def _torch():
    return pytest.importorskip("torch")


def sdpa(**kwargs):
    """SDPA on (q, k, v[, mask]) spelled for dtrain and torch alike."""
    def fn(q, k, v, mask=None):
        return lib(q).nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
    return fn


# ---- scaled_dot_product_attention -------------------------------------------------------------

def _bool_mask(shape, p_keep=0.7):
    m = rng.random(shape) < p_keep
    m[..., 0] = True  # every row keeps a key
    return m


SDPA_CASES = {
    "plain": ((2, 3, 4, 8), (2, 3, 4, 8), (2, 3, 4, 8), None, {}),
    "L != S, Ev != E": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), None, {}),
    "3-D": ((3, 5, 4), (3, 7, 4), (3, 7, 2), None, {}),
    "2-D": ((5, 4), (7, 4), (7, 3), None, {}),
    "scale": ((2, 2, 4, 8), (2, 2, 6, 8), (2, 2, 6, 8), None, {"scale": 0.37}),
    "causal L == S": ((2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 3), None, {"is_causal": True}),
    "causal L < S": ((2, 2, 3, 4), (2, 2, 6, 4), (2, 2, 6, 3), None, {"is_causal": True}),
    "causal L > S": ((2, 2, 6, 4), (2, 2, 3, 4), (2, 2, 3, 3), None, {"is_causal": True}),
    "bool mask (L, S)": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), _bool_mask((4, 6)), {}),
    "bool mask (B, 1, 1, S)": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), _bool_mask((2, 1, 1, 6)), {}),
    "bool mask full": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), _bool_mask((2, 3, 4, 6)), {}),
    "float mask (L, S)": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), (4, 6), {}),
    "float mask (B, 1, L, S)": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), (2, 1, 4, 6), {}),
    "key/value batch broadcast": ((2, 3, 4, 8), (1, 3, 6, 8), (2, 1, 6, 5), None, {}),
    "gqa": ((2, 6, 4, 8), (2, 3, 5, 8), (2, 3, 5, 4), None, {"enable_gqa": True}),
    "gqa causal": ((2, 4, 4, 8), (2, 2, 4, 8), (2, 2, 4, 4), None, {"enable_gqa": True, "is_causal": True}),
    "gqa float mask": ((2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 4), (1, 4, 3, 5), {"enable_gqa": True}),
}


@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_matches_torch(case):
    """SDPA: values and gradients of q, k, v (and of a float mask) equal torch's and pass
    gradcheck, for masks of each kind and broadcast, causal, scale, L != S, Ev != E, GQA."""
    q, k, v, mask, kwargs = SDPA_CASES[case]
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    check_op(sdpa(**kwargs), *inputs)


def test_sdpa_formula():
    """SDPA is softmax(q k^T / sqrt(E) + mask) v, written out in NumPy (no torch needed)."""
    q, k, v, m = rand(2, 4, 8), rand(2, 5, 8), rand(2, 5, 3), rand(4, 5)

    def ref(q, k, v, m):
        s = q @ k.swapaxes(-1, -2) / np.sqrt(8) + m
        e = np.exp(s - s.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)) @ v
    check_op(sdpa(), q, k, v, m, ref=ref, no_torch=True)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_rows_are_zero(kind):
    """A query row whose keys are all masked out gives zeros and passes no gradient, with a
    bool mask or a float -inf mask (torch 2.13's CPU result, checked by check_op)."""
    keep = _bool_mask((4, 6))
    keep[1] = False
    mask = keep if kind == "bool" else np.where(keep, 0.0, -np.inf)
    out = check_op(sdpa(), (2, 2, 4, 8), (2, 2, 6, 8), (2, 2, 6, 5), mask)
    assert np.all(out.detach().numpy()[:, :, 1] == 0)
    q = dtrain.tensor(rand(2, 2, 4, 8), requires_grad=True)
    F.scaled_dot_product_attention(q, q[:, :, :1].expand(2, 2, 6, 8), dtrain.randn(2, 2, 6, 5, dtype=q.dtype),
                                   attn_mask=dtrain.tensor(keep)).sum().backward()
    assert np.all(q.grad.numpy()[:, :, 1] == 0)


def test_sdpa_causal_mask_is_cached():
    """Repeated causal calls of one (L, S) build the mask once and reuse it."""
    attention_ops._causal_blocks.clear()
    q = dtrain.randn(2, 3, 7, 4)
    for _ in range(3):
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert len(attention_ops._causal_blocks) == 1
    (block,) = attention_ops._causal_blocks.values()
    np.testing.assert_array_equal(block.T, ~np.tril(np.ones((7, 7), dtype=bool)))  # held (S, L)


def _uniform_attention(p, seed, b=64, s=16):
    """q = k = 0 makes every weight 1/S; value = identity makes the output the weights."""
    dtrain.manual_seed(seed)
    q = dtrain.zeros(b, s, 4)
    return F.scaled_dot_product_attention(q, q, dtrain.eye(s).expand(b, s, s), dropout_p=p).numpy()


def test_sdpa_dropout_statistics_and_seed():
    """dropout_p drops about p of the attention weights and scales the rest by 1 / (1 - p),
    so the mean is unchanged; dtrain.manual_seed reproduces the mask; p = 1 drops all."""
    p, s = 0.3, 16
    w = _uniform_attention(p, 0, s=s)
    kept = w[w != 0]
    np.testing.assert_allclose(kept, 1 / (s * (1 - p)), rtol=1e-6)
    assert abs((w == 0).mean() - p) < 0.02, (w == 0).mean()
    assert abs(w.mean() - 1 / s) < 0.05 / s
    np.testing.assert_array_equal(w, _uniform_attention(p, 0, s=s))
    assert not np.array_equal(w, _uniform_attention(p, 1, s=s))
    assert np.all(_uniform_attention(1.0, 0, s=s) == 0)


def test_sdpa_dropout_gradcheck():
    """With the dropout mask fixed (same seed before each call), backward agrees with finite
    differences for q, k and v."""
    q, k, v = (dtrain.tensor(rand(*shape), requires_grad=True) for shape in ((2, 3, 4), (2, 5, 4), (2, 5, 3)))

    def fn(q, k, v):
        dtrain.manual_seed(3)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    out = fn(q, k, v)
    assert (out.detach().numpy() != F.scaled_dot_product_attention(q, k, v).detach().numpy()).any()
    assert dtrain.autograd.gradcheck(fn, [q, k, v], atol=1e-6, rtol=1e-4)


SDPA_ERRORS = [
    (((2, 4, 8), (2, 5, 7), (2, 5, 3)), {}, "query's and key's last dims (E) must be equal, 8 != 7"),
    (((2, 4, 8), (2, 5, 8), (2, 6, 3)), {}, "key and value must have the same length S (dim -2), 5 != 6"),
    (((2, 4, 8), (3, 5, 8), (3, 5, 3)), {}, "the batch dims (all but the last two) do not broadcast"),
    (((8,), (5, 8), (5, 3)), {}, "at least 2-D"),
    (((2, 4, 8), (2, 5, 8), (2, 5, 3)), {"attn_mask": np.zeros((3, 5), bool)},
     "attn_mask of shape [3, 5] does not broadcast to the attention scores' shape [2, 4, 5]"),
    (((2, 4, 8), (2, 5, 8), (2, 5, 3)), {"attn_mask": np.zeros((7, 2, 4, 5), bool)},
     "attn_mask of shape [7, 2, 4, 5] does not broadcast to the attention scores' shape [2, 4, 5]"),
    (((2, 4, 8), (2, 5, 8), (2, 5, 3)), {"attn_mask": np.zeros((4, 5), np.float32)},
     "float Tensor of query's dtype float64, got float32"),
    (((2, 4, 8), (2, 5, 8), (2, 5, 3)), {"attn_mask": np.zeros((4, 5), np.int64)}, "got int64"),
    (((2, 4, 8), (2, 5, 8), (2, 5, 3)), {"attn_mask": np.zeros((4, 5), bool), "is_causal": True},
     "explicit attn_mask should not be set when is_causal=True"),
    (((2, 6, 4, 8), (2, 4, 5, 8), (2, 4, 5, 3)), {"enable_gqa": True}, "it must divide query's (6), got 4 and 4"),
]


@pytest.mark.parametrize("shapes, kwargs, message", SDPA_ERRORS)
def test_sdpa_errors(shapes, kwargs, message):
    """Bad shapes, masks and flags raise an error naming the op and the bad shapes or values."""
    q, k, v = (dtrain.tensor(rand(*s)) for s in shapes)
    kwargs = {n: dtrain.tensor(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()}
    with pytest.raises(RuntimeError, match="scaled_dot_product_attention") as e:
        F.scaled_dot_product_attention(q, k, v, **kwargs)
    assert message in str(e.value)


def test_sdpa_argument_errors():
    """dtype mismatches, a bad dropout_p and non-Tensor inputs are refused by name."""
    q = dtrain.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="query.dtype float32, key.dtype float64"):
        F.scaled_dot_product_attention(q, q.double(), q)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=1.5)
    with pytest.raises(TypeError, match="key must be a Tensor, got list"):
        F.scaled_dot_product_attention(q, [1.0], q)
