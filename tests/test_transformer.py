"""Transformer, TransformerEncoder/Decoder and their layers against PyTorch: from torch's weights
(float64 outputs, input and parameter gradients), state dicts both ways, 20-step AdamW
trajectories in float32, and the error messages."""
import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from helpers import compare
from test_attention import from_torch, module_matches_torch

rng = np.random.default_rng(2)
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched", "ignore:enable_nested_tensor is True",
                                        "ignore:The PyTorch API of nested tensors")
D, H, FF = 8, 2, 16


def _torch():
    return pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """torch's small ops spin-wait on a loaded machine with more than one thread (the
    trajectories take 6 s instead of 0.2 s); the thread count is restored afterwards."""
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def both(build):
    """``build(nn, F)`` run with dtrain's and torch's nn: the same model in each framework."""
    torch = _torch()
    return build(nn, nn.functional), build(torch.nn, torch.nn.functional)


def _seq(length, n=3, batch_first=False, batched=True, d=D):
    shape = ((n, length, d) if batch_first else (length, n, d)) if batched else (length, d)
    return rng.standard_normal(shape)


def _padding(n=3, s=5):
    m = rng.random((n, s)) < 0.3
    m[:, 0] = False
    return m


def _causal(n):
    return np.triu(np.full((n, n), -np.inf), 1)


def encoder_layer(**kw):
    return lambda nn_, F_: nn_.TransformerEncoderLayer(D, H, FF, dropout=0.0, **kw)


def decoder_layer(**kw):
    return lambda nn_, F_: nn_.TransformerDecoderLayer(D, H, FF, dropout=0.0, **kw)


ENCODER_LAYER_CASES = {
    "post-norm relu": (encoder_layer(), {}, {}),
    "pre-norm gelu batch_first": (encoder_layer(norm_first=True, activation="gelu", batch_first=True),
                                  {"batch_first": True}, {}),
    "callable activation": (lambda nn_, F_: nn_.TransformerEncoderLayer(D, H, FF, 0.0, activation=F_.silu), {}, {}),
    "module activation": (lambda nn_, F_: nn_.TransformerEncoderLayer(D, H, FF, 0.0, activation=nn_.GELU()), {}, {}),
    "no bias": (encoder_layer(bias=False, layer_norm_eps=1e-3), {}, {}),
    "masks": (encoder_layer(), {}, {"src_mask": _causal(5), "src_key_padding_mask": _padding()}),
    "bool masks": (encoder_layer(batch_first=True), {"batch_first": True},
                   {"src_mask": np.triu(np.ones((5, 5), bool), 1), "src_key_padding_mask": _padding()}),
    "is_causal": (encoder_layer(), {}, {"src_mask": _causal(5), "is_causal": True}),
    "unbatched": (encoder_layer(), {"batched": False}, {"src_key_padding_mask": _padding(1)[0]}),
}


@pytest.mark.parametrize("case", list(ENCODER_LAYER_CASES))
def test_encoder_layer_matches_torch(case):
    """TransformerEncoderLayer from torch's weights: output, input and parameter gradients
    equal torch's (post/pre-norm, each kind of activation, bias=False, masks, is_causal,
    unbatched input)."""
    build, shape, kwargs = ENCODER_LAYER_CASES[case]
    ours, theirs = from_torch(*both(build))
    module_matches_torch(ours, theirs, [_seq(5, **shape)], kwargs)


DECODER_LAYER_CASES = {
    "post-norm relu": (decoder_layer(), {}, {}),
    "pre-norm gelu batch_first": (decoder_layer(norm_first=True, activation="gelu", batch_first=True),
                                  {"batch_first": True}, {}),
    "masks": (decoder_layer(), {}, {"tgt_mask": _causal(4), "tgt_key_padding_mask": _padding(s=4),
                                    "memory_mask": rng.standard_normal((4, 5)), "memory_key_padding_mask": _padding()}),
    "is_causal": (decoder_layer(), {}, {"tgt_mask": _causal(4), "tgt_is_causal": True}),
}


@pytest.mark.parametrize("case", list(DECODER_LAYER_CASES))
def test_decoder_layer_matches_torch(case):
    """TransformerDecoderLayer from torch's weights: output, gradients of tgt, memory and
    every parameter equal torch's, with and without masks."""
    build, shape, kwargs = DECODER_LAYER_CASES[case]
    ours, theirs = from_torch(*both(build))
    module_matches_torch(ours, theirs, [_seq(4, **shape), _seq(5, **shape)], kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"mask": _causal(5)}, {"mask": _causal(5), "src_key_padding_mask": _padding()},
                                    {"mask": _causal(5), "is_causal": True}])
def test_encoder_matches_torch(kwargs):
    """TransformerEncoder (2 layers + final LayerNorm) from torch's weights equals torch,
    including the causal-mask detection (is_causal=None) and key padding."""
    ours, theirs = from_torch(*both(lambda nn_, F_: nn_.TransformerEncoder(
        nn_.TransformerEncoderLayer(D, H, FF, 0.0), 2, norm=nn_.LayerNorm(D), enable_nested_tensor=False)))
    module_matches_torch(ours, theirs, [_seq(5)], kwargs)


def test_decoder_matches_torch():
    """TransformerDecoder (2 layers + final LayerNorm) from torch's weights equals torch."""
    ours, theirs = from_torch(*both(lambda nn_, F_: nn_.TransformerDecoder(
        nn_.TransformerDecoderLayer(D, H, FF, 0.0, batch_first=True), 2, norm=nn_.LayerNorm(D))))
    module_matches_torch(ours, theirs, [_seq(4, batch_first=True), _seq(5, batch_first=True)],
                         {"tgt_mask": _causal(4), "memory_key_padding_mask": _padding()})


def transformer(**kw):
    return lambda nn_, F_: nn_.Transformer(D, H, 2, 2, FF, dropout=0.0, **kw)


@pytest.mark.parametrize("kw, kwargs", [
    ({}, {}),
    ({"norm_first": True, "activation": "gelu"}, {"tgt_mask": _causal(4), "src_key_padding_mask": _padding(),
                                                  "memory_key_padding_mask": _padding()}),
    ({"batch_first": True}, {"src_mask": _causal(5), "tgt_mask": _causal(4), "tgt_is_causal": True}),
])
def test_transformer_matches_torch(kw, kwargs):
    """nn.Transformer from torch's weights: output and all gradients equal torch's."""
    ours, theirs = from_torch(*both(transformer(**kw)))
    bf = kw.get("batch_first", False)
    module_matches_torch(ours, theirs, [_seq(5, batch_first=bf), _seq(4, batch_first=bf)], kwargs)


def test_encoder_layer_eval_matches_torch_fast_path():
    """In eval mode without grad (torch's fused fast path), the encoder layer's output still
    equals torch's."""
    torch = _torch()
    ours, theirs = from_torch(*both(lambda nn_, F_: nn_.TransformerEncoderLayer(D, H, FF, batch_first=True)))
    ours.eval(), theirs.eval()
    x, pad = _seq(5, batch_first=True), _padding()
    with dtrain.no_grad():
        out = ours(dtrain.tensor(x), src_key_padding_mask=dtrain.tensor(pad))
    with torch.no_grad():
        tout = theirs(torch.tensor(x), src_key_padding_mask=torch.tensor(pad))
    compare(out, tout.numpy(), 1e-10, 1e-8, "torch")


@pytest.mark.parametrize("pad_rows", [[3, 0, 5], [0, 2, 0]])
@pytest.mark.parametrize("left_padded", [False, True])
def test_encoder_eval_nested_tensor_path_matches_torch(pad_rows, left_padded):
    """In eval mode without grad, with a padding mask and enable_nested_tensor, torch's
    encoder runs on nested tensors and outputs zeros (then the final norm) at right-padded
    positions; a left-padded mask takes the plain path. Both equal torch's."""
    torch = _torch()
    ours, theirs = from_torch(*both(lambda nn_, F_: nn_.TransformerEncoder(
        nn_.TransformerEncoderLayer(D, H, FF, batch_first=True), 2, norm=nn_.LayerNorm(D))))
    ours.eval(), theirs.eval()
    assert ours.use_nested_tensor
    x = _seq(6, batch_first=True)
    pad = np.arange(6) >= 6 - np.array(pad_rows)[:, None]
    pad = pad[:, ::-1].copy() if left_padded else pad
    with dtrain.no_grad():
        out = ours(dtrain.tensor(x), src_key_padding_mask=dtrain.tensor(pad))
    with torch.no_grad():
        tout = theirs(torch.tensor(x), src_key_padding_mask=torch.tensor(pad))
    compare(out, tout.numpy(), 1e-10, 1e-8, "torch")
    with_grad = ours(dtrain.tensor(x), src_key_padding_mask=dtrain.tensor(pad))
    assert np.allclose(out.numpy(), with_grad.detach().numpy()) == (left_padded or not pad.any())


def test_encoder_nested_tensor_warning():
    """As torch, TransformerEncoder warns when enable_nested_tensor cannot be honoured, with
    torch's reason."""
    with pytest.warns(UserWarning, match="self.use_nested_tensor is False because encoder_layer.norm_first was True"):
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF, norm_first=True), 1)
    assert not enc.use_nested_tensor


def test_state_dict_round_trip_and_names():
    """nn.Transformer has torch's state-dict keys and shapes; dtrain's weights load into torch
    (strict) and give dtrain's output."""
    torch = _torch()
    ours, theirs = both(transformer())
    ours.double(), theirs.double()
    keys = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert keys == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert "decoder.layers.1.multihead_attn.in_proj_weight" in keys and "encoder.norm.weight" in keys
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    src, tgt = _seq(5), _seq(4)
    compare(ours(dtrain.tensor(src), dtrain.tensor(tgt)),
            theirs(torch.tensor(src), torch.tensor(tgt)).detach().numpy(), 1e-10, 1e-8, "torch")


def test_layers_are_independent_deep_copies():
    """TransformerEncoder deep-copies its layer: equal initial values, separate Parameters,
    and training one layer leaves the others alone."""
    layer = nn.TransformerEncoderLayer(D, H, FF)
    enc = nn.TransformerEncoder(layer, 3)
    a, b = enc.layers[0].linear1.weight, enc.layers[2].linear1.weight
    assert a is not b and a is not layer.linear1.weight
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    with dtrain.no_grad():
        a.add_(1.0)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())
    assert len(list(enc.parameters())) == 3 * len(list(layer.parameters()))


def test_transformer_init_is_xavier():
    """nn.Transformer re-initializes every matrix with xavier_uniform_ (within its bound);
    LayerNorms stay ones/zeros."""
    model = nn.Transformer(16, 4, 1, 1, 32)
    w = model.encoder.layers[0].linear1.weight.detach().numpy()
    bound = np.sqrt(6 / (16 + 32))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert (model.decoder.norm.weight.detach().numpy() == 1).all()


def test_generate_square_subsequent_mask():
    """generate_square_subsequent_mask is torch's: -inf above the diagonal, 0 elsewhere, in
    the default dtype or the one asked for."""
    torch = _torch()
    m = nn.Transformer.generate_square_subsequent_mask(4)
    compare(m, torch.nn.Transformer.generate_square_subsequent_mask(4).numpy(), 0, 0, "torch")
    assert m.dtype == dtrain.float32
    assert nn.Transformer.generate_square_subsequent_mask(3, dtype=dtrain.float64).dtype == dtrain.float64


def run_adamw(model, lib, src, tgt, target, steps=20):
    """``steps`` AdamW steps on an MSE loss; the parameters after each step."""
    opt = lib.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    history = []
    for _ in range(steps):
        out = model(lib.tensor(src), lib.tensor(tgt)) if tgt is not None else model(lib.tensor(src))
        loss = ((out - lib.tensor(target)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({n: p.detach().numpy().copy() for n, p in model.named_parameters()})
    return history


@pytest.mark.parametrize("name", ["encoder", "transformer"])
def test_adamw_trajectory_matches_torch(name):
    """20 AdamW steps of a TransformerEncoder and of an nn.Transformer (float32, dropout 0,
    torch's initial weights, causal masks) follow torch's parameters within 1e-5 relative."""
    torch = _torch()
    if name == "encoder":
        ours, theirs = both(lambda nn_, F_: nn_.TransformerEncoder(nn_.TransformerEncoderLayer(
            D, H, FF, 0.0, batch_first=True), 2, norm=nn_.LayerNorm(D), enable_nested_tensor=False))
        src, tgt, target = _seq(6, batch_first=True), None, _seq(6, batch_first=True)
    else:
        ours, theirs = both(transformer(batch_first=True))
        src, tgt, target = _seq(6, batch_first=True), _seq(5, batch_first=True), _seq(5, batch_first=True)
    src, target = src.astype(np.float32), target.astype(np.float32)
    tgt = None if tgt is None else tgt.astype(np.float32)
    ours.load_state_dict({k: dtrain.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    expected = run_adamw(theirs, torch, src, tgt, target)
    got = run_adamw(ours, dtrain, src, tgt, target)
    for step, (g, e) in enumerate(zip(got, expected)):
        for n in e:
            # the key bias's gradient is exactly 0 in exact arithmetic (it shifts a query's scores
            # by one constant), so each framework's is rounding noise, and AdamW scales noise up
            # to +-lr: that slice follows no reference, torch's own devices disagree on it too
            keep = np.r_[0:D, 2 * D:3 * D] if n.endswith("in_proj_bias") else slice(None)
            np.testing.assert_allclose(g[n][keep], e[n][keep], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{n} after step {step + 1}")
    first = next(iter(expected[0]))
    assert not np.allclose(got[0][first], got[-1][first], rtol=1e-3)  # the parameters did move


def test_transformer_errors():
    """Bad arguments and mismatched inputs raise errors naming the layer and the shapes."""
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        nn.TransformerEncoderLayer(D, H, activation="tanh")
    with pytest.raises(ValueError, match="embed_dim must be divisible by num_heads, got embed_dim=8 and num_heads=3"):
        nn.TransformerDecoderLayer(D, 3)
    with pytest.raises(ValueError, match="TransformerEncoder: num_layers must be an integer >= 0, got -1"):
        nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF), -1)
    model = transformer()(nn, nn.functional)
    with pytest.raises(RuntimeError, match=r"batch number of src and tgt must be equal, got src of shape \[5, 3, 8\] "
                                           r"and tgt of shape \[4, 2, 8\]"):
        model(dtrain.randn(5, 3, D), dtrain.randn(4, 2, D))
    with pytest.raises(RuntimeError, match=r"must be equal to d_model \(8\), got src of shape \[5, 3, 6\]"):
        model(dtrain.randn(5, 3, 6), dtrain.randn(4, 3, D))
    with pytest.raises(RuntimeError, match=r"the shape of the 2D attn_mask is \[4, 4\], but should be \[5, 5\]"):
        model(dtrain.randn(5, 3, D), dtrain.randn(4, 3, D), src_mask=nn.Transformer.generate_square_subsequent_mask(4))
