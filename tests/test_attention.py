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
    "no keys (S = 0)": ((2, 3, 4), (2, 0, 4), (2, 0, 5), None, {}),
    "no queries (L = 0)": ((2, 0, 4), (2, 3, 4), (2, 3, 5), None, {}),
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


# ---- nn.MultiheadAttention ---------------------------------------------------------------------

def from_torch(ours, theirs):
    """Load torch's state dict (its random init) into ours; both in float64."""
    theirs.double()
    ours.double().load_state_dict({k: dtrain.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    return ours, theirs


def module_matches_torch(ours, theirs, inputs, kwargs=None, atol=1e-10, rtol=1e-8):
    """Run both modules on the same inputs (float arrays get gradients, bool/float masks in
    ``kwargs`` are copied into each framework) and compare every output, the input gradients
    and the gradient of every parameter, after a random weighting of the outputs."""
    torch = _torch()
    kwargs = kwargs or {}
    xs = [dtrain.tensor(a, requires_grad=True) for a in inputs]
    ts = [torch.tensor(a, requires_grad=True) for a in inputs]
    outs = ours(*xs, **{n: dtrain.tensor(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()})
    touts = theirs(*ts, **{n: torch.tensor(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()})
    outs, touts = (outs, touts) if isinstance(outs, tuple) else ((outs,), (touts,))
    pairs = [(o, t) for o, t in zip(outs, touts) if o is not None or t is not None]
    total, ttotal = 0, 0
    for o, t in pairs:
        assert o is not None and t is not None, "one framework returned None"
        compare(o, t.detach().numpy(), atol, rtol, "torch")
        seed = rng.standard_normal(tuple(o.shape))
        keep = np.isfinite(t.detach().numpy())  # nan rows (fully masked weights) get no gradient seed
        total = total + (o.masked_fill(dtrain.tensor(~keep), 0) * dtrain.tensor(seed)).sum()
        ttotal = ttotal + (t.masked_fill(torch.tensor(~keep), 0) * torch.tensor(seed)).sum()
    total.backward()
    ttotal.backward()
    for i, (x, t) in enumerate(zip(xs, ts)):
        compare(x.grad, t.grad.numpy(), atol, rtol, f"torch gradient of input {i}")
    tparams = dict(theirs.named_parameters())
    assert sorted(tparams) == sorted(n for n, _ in ours.named_parameters())
    for name, p in ours.named_parameters():
        compare(p.grad, tparams[name].grad.numpy(), atol, rtol, f"torch gradient of {name}")
    return outs


def _mha_inputs(n=3, l=4, s=6, e=8, kdim=None, vdim=None, batch_first=False, batched=True, self_attention=False):
    def shape(length, dim):
        return ((n, length, dim) if batch_first else (length, n, dim)) if batched else (length, dim)
    q = rng.standard_normal(shape(l, e))
    if self_attention:
        return [q, q, q]
    return [q, rng.standard_normal(shape(s, kdim or e)), rng.standard_normal(shape(s, vdim or e))]


def _padding(n=3, s=6):
    m = rng.random((n, s)) < 0.3
    m[:, 0] = False
    return m


MHA_CASES = {
    "default": ({}, {}, {}),
    "batch_first": ({"batch_first": True}, {"batch_first": True}, {}),
    "kdim, vdim": ({"kdim": 5, "vdim": 7}, {}, {}),
    "no bias": ({"bias": False}, {}, {}),
    "add_bias_kv": ({"add_bias_kv": True}, {}, {"key_padding_mask": _padding(), "attn_mask": rng.random((4, 6)) < 0.3}),
    "add_zero_attn": ({"add_zero_attn": True}, {}, {"key_padding_mask": _padding()}),
    "bias_kv and zero_attn, no weights": ({"add_bias_kv": True, "add_zero_attn": True}, {},
                                          {"need_weights": False, "attn_mask": rng.standard_normal((6, 4, 6))}),
    "per-head weights": ({}, {}, {"average_attn_weights": False}),
    "bool masks": ({}, {}, {"key_padding_mask": _padding(), "attn_mask": rng.random((4, 6)) < 0.3}),
    "bool masks, no weights": ({}, {}, {"key_padding_mask": _padding(), "attn_mask": rng.random((4, 6)) < 0.3,
                                        "need_weights": False}),
    "float masks": ({"batch_first": True}, {"batch_first": True},
                    {"key_padding_mask": rng.standard_normal((3, 6)), "attn_mask": rng.standard_normal((4, 6))}),
    "3-D float mask, no weights": ({}, {}, {"attn_mask": rng.standard_normal((6, 4, 6)), "need_weights": False}),
    "is_causal hint": ({"batch_first": True}, {"batch_first": True, "s": 4},
                       {"attn_mask": np.triu(np.ones((4, 4), bool), 1), "is_causal": True, "need_weights": False}),
    "is_causal hint with padding": ({}, {"s": 4}, {"attn_mask": np.triu(np.ones((4, 4), bool), 1), "is_causal": True,
                                                    "need_weights": False, "key_padding_mask": _padding(s=4)}),
    "self-attention": ({"batch_first": True}, {"batch_first": True, "self_attention": True}, {}),
    "unbatched": ({}, {"batched": False}, {"key_padding_mask": _padding(1, 6)[0]}),
    "unbatched, batch_first ignored": ({"batch_first": True}, {"batched": False}, {}),
    "unbatched, 3-D mask, no weights": ({}, {"batched": False},
                                        {"attn_mask": rng.random((2, 4, 6)) < 0.3, "need_weights": False}),
    "dropout in eval": ({"dropout": 0.5}, {}, {}),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multihead_attention_matches_torch(case):
    """MultiheadAttention from torch's weights: output, attention weights, input gradients
    and every parameter's gradient equal torch's, for each constructor option, mask kind
    and shape, the is_causal hint, self-attention and unbatched input."""
    torch = _torch()
    ctor, shape, kwargs = MHA_CASES[case]
    ours, theirs = from_torch(nn.MultiheadAttention(8, 2, **ctor), torch.nn.MultiheadAttention(8, 2, **ctor))
    if "dropout" in ctor:
        ours.eval(), theirs.eval()
    inputs = _mha_inputs(kdim=ctor.get("kdim"), vdim=ctor.get("vdim"), **shape)
    if shape.get("self_attention"):  # one tensor passed three times, as a self-attention layer does
        module_matches_torch(_self_attention(ours), _self_attention(theirs), inputs[:1], kwargs)
    else:
        module_matches_torch(ours, theirs, inputs, kwargs)


def _self_attention(mha):
    def call(x, **kwargs):
        return mha(x, x, x, **kwargs)
    call.named_parameters = mha.named_parameters
    return call


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_fully_padded_sequence(need_weights):
    """A batch element whose keys are all padded: torch gives nan weights and outputs on the
    weights path and zero attention (output = out_proj's bias) on the fused path; so do we."""
    torch = _torch()
    ours, theirs = from_torch(nn.MultiheadAttention(8, 2), torch.nn.MultiheadAttention(8, 2))
    pad = _padding()
    pad[1] = True
    outs = module_matches_torch(ours, theirs, _mha_inputs(), {"key_padding_mask": pad, "need_weights": need_weights})
    assert np.isnan(outs[0].detach().numpy()[:, 1]).all() == need_weights


def test_multihead_attention_gradcheck():
    """Finite differences agree with backward for the inputs and every parameter (float64),
    with masks and separate key/value dims."""
    mha = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, add_bias_kv=True).double()
    q, k, v = (dtrain.tensor(a, requires_grad=True) for a in _mha_inputs(n=2, l=3, s=4, e=4, kdim=3, vdim=5))
    mask = dtrain.tensor(rng.standard_normal((3, 4)))
    params = list(mha.parameters())
    assert dtrain.autograd.gradcheck(lambda q, k, v, *ps: mha(q, k, v, attn_mask=mask, need_weights=False)[0],
                                     [q, k, v, *params], atol=1e-6, rtol=1e-4)


def test_multihead_attention_parameters_and_init():
    """torch's parameter names and shapes (packed in_proj_weight, or q/k/v_proj_weight with
    kdim/vdim); xavier-uniform projections within the bound, zero biases."""
    mha = nn.MultiheadAttention(16, 4)
    shapes = {n: tuple(p.shape) for n, p in mha.named_parameters()}
    assert shapes == {"in_proj_weight": (48, 16), "in_proj_bias": (48,), "out_proj.weight": (16, 16),
                      "out_proj.bias": (16,)}
    bound = np.sqrt(6 / (48 + 16))
    w = mha.in_proj_weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert not mha.in_proj_bias.detach().numpy().any() and not mha.out_proj.bias.detach().numpy().any()
    sep = nn.MultiheadAttention(16, 4, kdim=6, vdim=7, bias=False, add_bias_kv=True)
    shapes = {n: tuple(p.shape) for n, p in sep.named_parameters()}
    assert shapes == {"q_proj_weight": (16, 16), "k_proj_weight": (16, 6), "v_proj_weight": (16, 7),
                      "bias_k": (1, 1, 16), "bias_v": (1, 1, 16), "out_proj.weight": (16, 16)}
    assert sep.in_proj_weight is None and sep.in_proj_bias is None


def test_multihead_attention_state_dict_round_trip():
    """dtrain's state dict loads into torch (strict) and gives torch's outputs."""
    torch = _torch()
    ours = nn.MultiheadAttention(8, 2, kdim=5, vdim=7).double()
    theirs = torch.nn.MultiheadAttention(8, 2, kdim=5, vdim=7).double()
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    q, k, v = _mha_inputs(kdim=5, vdim=7)
    out, _ = ours(dtrain.tensor(q), dtrain.tensor(k), dtrain.tensor(v))
    tout, _ = theirs(torch.tensor(q), torch.tensor(k), torch.tensor(v))
    compare(out, tout.detach().numpy(), 1e-10, 1e-8, "torch")


def test_multihead_attention_dropout():
    """In training, dropout drops attention weights (reproducibly under manual_seed, the
    returned weights are the dropped ones); in eval mode it does nothing."""
    mha = nn.MultiheadAttention(8, 2, dropout=0.5).double()
    q, k, v = (dtrain.tensor(a) for a in _mha_inputs())
    dtrain.manual_seed(0)
    out1, w1 = mha(q, k, v, average_attn_weights=False)
    dtrain.manual_seed(0)
    out2, _ = mha(q, k, v, average_attn_weights=False)
    np.testing.assert_array_equal(out1.detach().numpy(), out2.detach().numpy())
    assert 0.3 < (w1.detach().numpy() == 0).mean() < 0.7
    mha.eval()
    out3, w3 = mha(q, k, v, average_attn_weights=False)
    np.testing.assert_allclose(w3.detach().numpy().sum(-1), 1.0, rtol=1e-12)
    assert not np.allclose(out1.detach().numpy(), out3.detach().numpy())


def test_multihead_attention_errors():
    """Bad constructor arguments and bad mask or input shapes raise errors naming the layer
    and the shapes (given and expected)."""
    with pytest.raises(ValueError, match="MultiheadAttention: embed_dim must be divisible by num_heads, got "
                                         "embed_dim=10 and num_heads=3"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="MultiheadAttention: num_heads must be an integer >= 1, got 0"):
        nn.MultiheadAttention(8, 0)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 2"):
        nn.MultiheadAttention(8, 2, dropout=2)
    mha = nn.MultiheadAttention(8, 2).double()
    q, k, v = (dtrain.tensor(a) for a in _mha_inputs())
    with pytest.raises(RuntimeError, match=r"the shape of the 2D attn_mask is \[4, 5\], but should be \[4, 6\]"):
        mha(q, k, v, attn_mask=dtrain.zeros(4, 5, dtype=dtrain.bool))
    with pytest.raises(RuntimeError, match=r"the shape of the 3D attn_mask is \[2, 4, 6\], but should be \[6, 4, 6\]"):
        mha(q, k, v, attn_mask=dtrain.zeros(2, 4, 6, dtype=dtrain.bool))
    with pytest.raises(AssertionError, match=r"expected key_padding_mask of shape \[3, 6\] .* but got \[3, 5\]"):
        mha(q, k, v, key_padding_mask=dtrain.zeros(3, 5, dtype=dtrain.bool))
    with pytest.raises(AssertionError, match="only bool and floating types of attn_mask are supported, got int64"):
        mha(q, k, v, attn_mask=dtrain.zeros(4, 6, dtype=dtrain.int64))
    with pytest.raises(AssertionError, match="query should be unbatched 2D or batched 3D tensor but received 4-D"):
        mha(q[None], k[None], v[None])
    with pytest.raises(AssertionError, match="expected `key` and `value` to be 3-D but found 2-D and 3-D"):
        mha(q, k[0], v)
    with pytest.raises(AssertionError, match=r"key shape \[6, 3, 8\] does not match value shape \[5, 3, 8\]"):
        mha(q, k, v[:5])
    with pytest.raises(AssertionError, match="was expecting embedding dimension of 8, but got 4"):
        mha(q[..., :4], k, v)
    with pytest.raises(RuntimeError, match="need attn_mask if specifying the is_causal hint"):
        mha(q, k, v, is_causal=True)


def test_mismatched_mask_types_warn():
    """A bool key_padding_mask with a float attn_mask warns, as torch does."""
    mha = nn.MultiheadAttention(8, 2).double()
    q, k, v = (dtrain.tensor(a) for a in _mha_inputs())
    with pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask is deprecated"):
        mha(q, k, v, key_padding_mask=dtrain.tensor(_padding()), attn_mask=dtrain.zeros(4, 6, dtype=dtrain.float64))
