"""nn.RNN, nn.LSTM, nn.GRU and their cells against PyTorch: the same weights (through
state_dict) give the same outputs, final states and gradients (input, initial states,
every parameter) in float64; gradcheck of whole layers; AdamW trajectories in float32;
constructor and forward errors; inter-layer dropout."""
import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from helpers import check_op, compare

rng = np.random.default_rng(0)
KINDS = ["RNN", "LSTM", "GRU"]
# Adam's first step is lr * g / (|g| + eps): for a gradient element that is rounding noise
# (|g| ~ 1e-9 in float32), eps=1e-8 turns that noise into an lr-sized difference from torch
EPS = 1e-4


def _torch():
    return pytest.importorskip("torch")


def _flat(out):
    """The tensors of a recurrent module's result, in order: (out, h) / (out, (h, c)) / h / (h, c)."""
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _state(kind, shape):
    """Initial-state data of ``shape`` for ``kind``: two arrays (h, c) for LSTM, else one."""
    return [rng.standard_normal(shape) for _ in range(2 if "LSTM" in kind else 1)]


def _wrap(arrays, lib):
    """The state Tensors (requiring grad) and the hx argument built from them."""
    ts = [lib.tensor(a, requires_grad=True) for a in arrays]
    return ts, (tuple(ts) if len(ts) == 2 else ts[0])


def matches_torch(kind, args, kwargs, x_shape, hx_shape=None, atol=1e-10, rtol=1e-8):
    """Build ``nn.<kind>(*args, **kwargs)`` in both frameworks with torch's weights (float64),
    run both on the same input (and initial state when ``hx_shape`` is given), and compare
    every returned tensor, then the gradients of the input, the state and every parameter
    for the same random output seeds."""
    torch = _torch()
    theirs = getattr(torch.nn, kind)(*args, **kwargs).double()
    ours = getattr(nn, kind)(*args, **kwargs).double()
    ours.load_state_dict({k: dtrain.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    x = rng.standard_normal(x_shape)
    xs, ts = [dtrain.tensor(x, requires_grad=True)], [torch.tensor(x, requires_grad=True)]
    h_arrays = _state(kind, hx_shape) if hx_shape else []
    ours_h, ours_hx = _wrap(h_arrays, dtrain) if hx_shape else ([], None)
    theirs_h, theirs_hx = _wrap(h_arrays, torch) if hx_shape else ([], None)
    outs = _flat(ours(xs[0], ours_hx) if hx_shape else ours(xs[0]))
    touts = _flat(theirs(ts[0], theirs_hx) if hx_shape else theirs(ts[0]))
    assert len(outs) == len(touts)
    for o, t in zip(outs, touts):
        compare(o, t.detach().numpy(), atol, rtol, "torch")
    seeds = [rng.standard_normal(tuple(o.shape)) for o in outs]
    sum((o * dtrain.tensor(s)).sum() for o, s in zip(outs, seeds)).backward()
    sum((t * torch.tensor(s)).sum() for t, s in zip(touts, seeds)).backward()
    for o, t in zip(xs + ours_h, ts + theirs_h):
        compare(o.grad, t.grad.numpy(), atol, rtol, "torch input/state gradient")
    tparams = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(tparams)
    for name, p in ours.named_parameters():
        compare(p.grad, tparams[name].grad.numpy(), atol, rtol, f"torch gradient of {name}")
    return outs


def gradcheck_module(module, x_shape, hx_shape=None):
    """Finite differences agree with backward for the input, the initial state and every
    parameter of a whole (float64) layer, through all of its outputs."""
    module.double()
    kind = type(module).__name__
    x = dtrain.tensor(rng.standard_normal(x_shape), requires_grad=True)
    hs, hx = _wrap(_state(kind, hx_shape), dtrain) if hx_shape else ([], None)
    params = list(module.parameters())
    fn = (lambda x, *rest: tuple(_flat(module(x, hx)))) if hx_shape else (lambda x, *rest: tuple(_flat(module(x))))
    assert dtrain.autograd.gradcheck(fn, [x, *hs, *params], atol=1e-6, rtol=1e-4)


# ---- values and gradients against PyTorch ----------------------------------------------------

LAYER_CASES = [
    ({}, (5, 3, 4), None),
    (dict(num_layers=2), (5, 3, 4), (2, 3, 6)),
    (dict(bidirectional=True), (4, 2, 4), (2, 2, 6)),
    (dict(num_layers=2, bidirectional=True, batch_first=True), (3, 5, 4), (4, 3, 6)),
    (dict(bias=False, batch_first=True), (2, 4, 4), None),
    ({}, (5, 4), (1, 6)),                                          # unbatched
    (dict(num_layers=2, bidirectional=True), (3, 4), (4, 6)),      # unbatched
    (dict(num_layers=2, bidirectional=True), (1, 1, 4), None),     # one step, batch one
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kwargs,x_shape,hx_shape", LAYER_CASES)
def test_layer_matches_torch(kind, kwargs, x_shape, hx_shape):
    """Outputs, final states and all gradients equal torch's (1-2 layers, bidirectional,
    batch_first, no bias, given or zero initial states, unbatched input)."""
    matches_torch(kind, (4, 6), kwargs, x_shape, hx_shape)


@pytest.mark.parametrize("kwargs,x_shape,hx_shapes", [
    (dict(proj_size=3), (5, 2, 4), None),
    (dict(proj_size=2, num_layers=2, bidirectional=True, batch_first=True, bias=False), (2, 5, 4),
     ((4, 2, 2), (4, 2, 6))),
    (dict(proj_size=3, num_layers=2), (5, 4), ((2, 3), (2, 6)))])
def test_lstm_projection_matches_torch(kwargs, x_shape, hx_shapes):
    """LSTM with proj_size (h of proj_size features, c of hidden_size) equals torch's, with
    and without initial states, batched and unbatched; and passes gradcheck."""
    torch = _torch()
    theirs = torch.nn.LSTM(4, 6, **kwargs).double()
    ours = nn.LSTM(4, 6, **kwargs).double()
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    ours.load_state_dict({k: dtrain.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    x = rng.standard_normal(x_shape)
    hx = [rng.standard_normal(s) for s in hx_shapes] if hx_shapes else None
    xs, ts = dtrain.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    hs = [dtrain.tensor(h, requires_grad=True) for h in hx] if hx else []
    ths = [torch.tensor(h, requires_grad=True) for h in hx] if hx else []
    outs = _flat(ours(xs, tuple(hs)) if hx else ours(xs))
    touts = _flat(theirs(ts, tuple(ths)) if hx else theirs(ts))
    seeds = [rng.standard_normal(tuple(o.shape)) for o in outs]
    for o, t in zip(outs, touts):
        compare(o, t.detach().numpy(), 1e-10, 1e-8, "torch")
    sum((o * dtrain.tensor(s)).sum() for o, s in zip(outs, seeds)).backward()
    sum((t * torch.tensor(s)).sum() for t, s in zip(touts, seeds)).backward()
    for o, t in zip([xs, *hs], [ts, *ths]):
        compare(o.grad, t.grad.numpy(), 1e-10, 1e-8, "torch input/state gradient")
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        compare(p.grad, tparams[name].grad.numpy(), 1e-10, 1e-8, f"torch gradient of {name}")
    params = list(ours.parameters())
    assert dtrain.autograd.gradcheck(lambda x, *rest: tuple(_flat(ours(x, tuple(hs) if hx else None))),
                                     [xs, *hs, *params], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kwargs,hx_shape", [(dict(nonlinearity="relu", num_layers=2, bidirectional=True), (4, 3, 6)),
                                             (dict(nonlinearity="relu", batch_first=True), (1, 5, 6))])
def test_relu_rnn_matches_torch(kwargs, hx_shape):
    """RNN with nonlinearity='relu' equals torch's."""
    matches_torch("RNN", (4, 6), kwargs, (5, 3, 4), hx_shape)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("x_shape,hx_shape", [((3, 4), (3, 6)), ((3, 4), None), ((4,), (6,))])
def test_cell_matches_torch(kind, x_shape, hx_shape):
    """Each cell's step equals torch's: batched and unbatched, with and without a state."""
    matches_torch(kind, (4, 6), {}, x_shape, hx_shape)


def test_cell_options_match_torch():
    """RNNCell with relu and cells without bias equal torch's."""
    matches_torch("RNNCell", (4, 6), dict(nonlinearity="relu"), (3, 4), (3, 6))
    matches_torch("LSTMCell", (4, 6), dict(bias=False), (3, 4), (3, 6))
    matches_torch("GRUCell", (4, 6), dict(bias=False), (3, 4), (3, 6))


# ---- gradcheck ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_layer_gradcheck(kind):
    """A 2-layer bidirectional layer with a given initial state passes gradcheck (float64),
    through output and final states, for the input, the state and every parameter."""
    gradcheck_module(getattr(nn, kind)(3, 2, num_layers=2, bidirectional=True), (3, 2, 3), (4, 2, 2))


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_gradcheck(kind):
    """Each cell passes gradcheck for input, state and parameters (float64)."""
    gradcheck_module(getattr(nn, kind)(3, 2), (2, 3), (2, 2))


def test_relu_rnn_gradcheck():
    """The relu RNN passes gradcheck, batch-first and without bias."""
    gradcheck_module(nn.RNN(3, 2, nonlinearity="relu", batch_first=True, bias=False), (2, 4, 3))


# ---- training trajectories ---------------------------------------------------------------------

def _trajectory(lib, model, x, target, steps):
    opt = lib.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, eps=EPS)
    for _ in range(steps):
        opt.zero_grad()
        out, state = model(lib.tensor(x))
        h_n = state[0] if isinstance(state, tuple) else state
        loss = ((out - lib.tensor(target)) ** 2).mean() + (h_n ** 2).mean()
        loss.backward()
        opt.step()
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_adamw_trajectory_matches_torch_float32(kind):
    """20 AdamW steps of a 2-layer bidirectional batch-first layer in float32 end at torch's
    parameters to 1e-5 relative."""
    torch = _torch()
    torch.manual_seed(0)
    kwargs = dict(num_layers=2, bidirectional=True, batch_first=True)
    theirs = getattr(torch.nn, kind)(5, 8, **kwargs)
    ours = getattr(nn, kind)(5, 8, **kwargs)
    start = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    ours.load_state_dict({k: dtrain.tensor(v) for k, v in start.items()})
    data = np.random.default_rng(1)
    x = data.standard_normal((4, 7, 5)).astype(np.float32)
    target = data.standard_normal((4, 7, 16)).astype(np.float32)
    expected = _trajectory(torch, theirs, x, target, 20)
    got = _trajectory(dtrain, ours, x, target, 20)
    for name, value in got.items():
        assert value.dtype == np.float32, f"{name} is {value.dtype}"
        assert np.abs(value - start[name]).mean() > 1e-2, f"{name} did not train"
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


# ---- structure: names, init, repr, dropout ------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_parameter_names_shapes_and_init(kind):
    """Parameter names, order and shapes equal torch's; every value is within
    1/sqrt(hidden_size) and the values are spread over that range."""
    torch = _torch()
    kwargs = dict(num_layers=2, bidirectional=True)
    ours, theirs = getattr(nn, kind)(3, 16, **kwargs), getattr(torch.nn, kind)(3, 16, **kwargs)
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [[tuple(p.shape) for p in ws] for ws in ours.all_weights] == \
        [[tuple(p.shape) for p in ws] for ws in theirs.all_weights]
    values = np.concatenate([p.detach().numpy().ravel() for p in ours.parameters()])
    assert np.abs(values).max() <= 0.25 and np.abs(values).max() > 0.24 and abs(values.mean()) < 0.01


@pytest.mark.parametrize("kind,kwargs", [
    ("RNN", dict(num_layers=2, nonlinearity="relu", bias=False, batch_first=True, dropout=0.5, bidirectional=True)),
    ("LSTM", dict(proj_size=2)), ("GRU", dict(num_layers=3)), ("RNNCell", dict(nonlinearity="relu")),
    ("LSTMCell", dict(bias=False)), ("GRUCell", {})])
def test_repr_matches_torch(kind, kwargs):
    """repr (extra_repr) reads as torch's."""
    torch = _torch()
    assert repr(getattr(nn, kind)(3, 4, **kwargs)) == repr(getattr(torch.nn, kind)(3, 4, **kwargs))


def test_dropout_between_layers_only():
    """With dropout=1 in training, the second layer sees zeros (so the output is what a
    1-layer LSTM with the second layer's weights gives on zero input), the last layer's
    output is not dropped, and eval mode ignores dropout; the mask follows dtrain's seed."""
    lstm = nn.LSTM(3, 4, num_layers=2, dropout=1.0).double()
    second = nn.LSTM(4, 4).double()
    second.load_state_dict({k.replace("_l1", "_l0"): v for k, v in lstm.state_dict().items() if "_l1" in k})
    x = dtrain.tensor(rng.standard_normal((5, 2, 3)))
    out, (h, c) = lstm(x)
    expected, _ = second(dtrain.zeros(5, 2, 4, dtype=dtrain.float64))
    compare(out, expected.detach().numpy(), 1e-12, 1e-12)
    assert np.abs(out.detach().numpy()).min() > 0
    lstm.eval()
    assert not np.allclose(lstm(x)[0].detach().numpy(), out.detach().numpy())
    half = nn.GRU(3, 4, num_layers=2, dropout=0.5)
    x32 = dtrain.randn(5, 2, 3)
    dtrain.manual_seed(7)
    a = half(x32)[0].detach().numpy()
    dtrain.manual_seed(7)
    b = half(x32)[0].detach().numpy()
    c_ = half(x32)[0].detach().numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c_)


def test_shapes_flatten_parameters_and_no_grad():
    """Output and state shapes follow batch_first and bidirectional; flatten_parameters is
    a no-op; forward under no_grad builds no graph."""
    lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    assert lstm.flatten_parameters() is None
    with dtrain.no_grad():
        out, (h, c) = lstm(dtrain.randn(4, 7, 3))
    assert tuple(out.shape) == (4, 7, 10) and tuple(h.shape) == tuple(c.shape) == (4, 4, 5)
    assert not out.requires_grad and out.grad_fn is None
    out, h = nn.GRU(3, 5)(dtrain.randn(7, 3))
    assert tuple(out.shape) == (7, 5) and tuple(h.shape) == (1, 5)


def test_exported_under_torch_names():
    """The layers are reachable as dtrain.nn.<name>, as torch.nn's."""
    for name in ["RNNBase", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]:
        assert getattr(dtrain.nn, name).__name__ == name


# ---- errors ---------------------------------------------------------------------------------------

def test_forward_errors_name_the_sizes():
    """A wrong input size names both sizes; a wrong state shape names expected and got;
    wrong ranks and dtypes say what was expected."""
    lstm, gru = nn.LSTM(4, 6, num_layers=2), nn.GRU(4, 6, bidirectional=True)
    with pytest.raises(RuntimeError, match=r"LSTM: input.size\(-1\) must be equal to input_size. Expected 4, got 3"):
        lstm(dtrain.randn(5, 2, 3))
    with pytest.raises(RuntimeError, match=r"GRU: Expected hidden size \(2, 2, 6\), got \(1, 2, 6\)"):
        gru(dtrain.randn(5, 2, 4), dtrain.zeros(1, 2, 6))
    with pytest.raises(RuntimeError, match=r"LSTM: Expected hidden\[1\] size \(2, 3, 6\), got \(2, 3, 5\)"):
        lstm(dtrain.randn(5, 3, 4), (dtrain.zeros(2, 3, 6), dtrain.zeros(2, 3, 5)))
    with pytest.raises(RuntimeError, match=r"LSTM: Expected hidden\[0\] size \(1, 3, 2\), got \(1, 3, 6\)"):
        nn.LSTM(4, 6, proj_size=2)(dtrain.randn(5, 3, 4), (dtrain.zeros(1, 3, 6), dtrain.zeros(1, 3, 6)))
    with pytest.raises(RuntimeError, match="For unbatched 2-D input, hidden should also be 2-D but got 3-D"):
        gru(dtrain.randn(5, 4), dtrain.zeros(2, 1, 6))
    with pytest.raises(ValueError, match="LSTM: Expected input to be 2D or 3D, got 4D instead"):
        lstm(dtrain.randn(1, 5, 2, 4))
    with pytest.raises(ValueError, match="GRU: input must have the type float32, got type float64"):
        gru(dtrain.zeros(5, 2, 4, dtype=dtrain.float64))
    with pytest.raises(TypeError, match=r"LSTM: hx must be a tuple \(h_0, c_0\), got Tensor"):
        lstm(dtrain.randn(5, 2, 4), dtrain.zeros(2, 2, 6))
    with pytest.raises(RuntimeError, match="GRU: Expected sequence length to be larger than 0"):
        gru(dtrain.randn(0, 2, 4))
    with pytest.raises(RuntimeError, match="GRU: Input and hidden tensors are not the same dtype, found input "
                                           "tensor with float32 and hidden tensor with float64"):
        gru(dtrain.randn(5, 2, 4), dtrain.zeros(2, 2, 6, dtype=dtrain.float64))


def test_cell_errors_name_the_sizes():
    """Cells: wrong input size, hidden size or batch size name both values."""
    cell = nn.LSTMCell(4, 6)
    with pytest.raises(RuntimeError, match="LSTMCell: input has inconsistent input_size: got 3, expected 4"):
        cell(dtrain.randn(2, 3))
    with pytest.raises(RuntimeError, match="LSTMCell: hidden1 has inconsistent hidden_size: got 5, expected 6"):
        cell(dtrain.randn(2, 4), (dtrain.zeros(2, 6), dtrain.zeros(2, 5)))
    with pytest.raises(RuntimeError, match="GRUCell: Input batch size 2 doesn't match hidden batch size 3"):
        nn.GRUCell(4, 6)(dtrain.randn(2, 4), dtrain.zeros(3, 6))
    with pytest.raises(ValueError, match="RNNCell: Expected input to be 1D or 2D, got 3D instead"):
        nn.RNNCell(4, 6)(dtrain.randn(1, 2, 4))
    with pytest.raises(RuntimeError, match="RNNCell: Input and hidden tensors are not the same dtype"):
        nn.RNNCell(4, 6)(dtrain.randn(2, 4), dtrain.zeros(2, 6, dtype=dtrain.float64))
    with pytest.raises(RuntimeError, match=r"GRUCell: hidden must be 1-D like the input, got 2-D \(shape \[1, 6\]\)"):
        nn.GRUCell(4, 6)(dtrain.randn(4), dtrain.zeros(1, 6))


def test_constructor_errors():
    """Bad nonlinearity, sizes, dropout and proj_size are rejected naming the value."""
    with pytest.raises(ValueError, match="RNN: Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="RNNCell: Unknown nonlinearity 'gelu'"):
        nn.RNNCell(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="LSTM: hidden_size must be an integer >= 1, got 0"):
        nn.LSTM(3, 0)
    with pytest.raises(ValueError, match="GRU: num_layers must be an integer >= 1, got 0"):
        nn.GRU(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"GRU: dropout should be a number in range \[0, 1\].*got 1.5"):
        nn.GRU(3, 4, num_layers=2, dropout=1.5)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        nn.LSTM(3, 4, dropout=0.2)
    with pytest.raises(ValueError, match="LSTM: proj_size has to be smaller than hidden_size"):
        nn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="GRU: proj_size argument is only supported for LSTM"):
        nn.RNNBase("GRU", 3, 4, proj_size=2)


# ---- nn.utils.rnn: padding --------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{}, dict(batch_first=True, padding_value=-2.0),
                                    dict(padding_side="left", padding_value=0.5)])
def test_pad_sequence_matches_torch(kwargs):
    """pad_sequence's values and gradients equal torch's (time- or batch-first, either side,
    any fill value); every sequence gets its gradient."""
    from dtrain.nn.utils.rnn import pad_sequence
    torch = pytest.importorskip("torch")
    check_op(lambda *s: pad_sequence(list(s), **kwargs), (3, 2), (1, 2), (4, 2),
             torch_fn=lambda *s: torch.nn.utils.rnn.pad_sequence(list(s), **kwargs))


def test_unpad_sequence_inverts_pad_sequence_and_errors():
    """unpad_sequence(pad_sequence(seqs), lengths) gives the sequences back; bad lengths,
    empty lists, mismatched trailing dims and a bad padding_side are errors naming them."""
    from dtrain.nn.utils.rnn import pad_sequence, unpad_sequence
    seqs = [dtrain.tensor(rng.standard_normal((n, 3))) for n in (2, 5, 1)]
    for batch_first in (False, True):
        back = unpad_sequence(pad_sequence(seqs, batch_first), dtrain.tensor([2, 5, 1]), batch_first)
        for a, b in zip(back, seqs):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert dtrain.nn.utils.rnn.pad_sequence is pad_sequence
    with pytest.raises(RuntimeError, match="received an empty list of sequences"):
        pad_sequence([])
    with pytest.raises(RuntimeError, match=r"sequence 0 has shape \[2, 3\], sequence 1 has \[2, 4\]"):
        pad_sequence([dtrain.ones(2, 3), dtrain.ones(2, 4)])
    with pytest.raises(ValueError, match="Expected padding_side to be one of left or right, but got top"):
        pad_sequence(seqs, padding_side="top")
    with pytest.raises(ValueError, match=r"length 6 is outside \[0, 5\]"):
        unpad_sequence(pad_sequence(seqs), [2, 6, 1])
    with pytest.raises(ValueError, match="got 2 lengths for a batch of 3 sequences"):
        unpad_sequence(pad_sequence(seqs), [2, 5])


# ---- packed sequences -------------------------------------------------------------------------

def _run_packed(lib, module, x, hx, lengths, batch_first):
    """The module on pack_padded_sequence(x, lengths) (unsorted), unpacked again with padding."""
    utils = lib.nn.utils.rnn
    packed = utils.pack_padded_sequence(x, lib.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out, state = module(packed, hx)
    padded, out_lengths = utils.pad_packed_sequence(out, batch_first=batch_first, padding_value=0.5)
    assert out_lengths.tolist() == lengths
    return [padded, out.data, *_flat(state)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_sequence_matches_torch(kind, batch_first):
    """A PackedSequence of unsorted lengths through a 2-layer bidirectional layer (initial
    state given in the original batch order): packed output, padded output, final states
    and all gradients equal torch's; a packed LSTM with projections too."""
    torch = _torch()
    for kwargs in [dict(num_layers=2, bidirectional=True, batch_first=batch_first)] + \
            ([dict(proj_size=2, bidirectional=True, batch_first=batch_first)] if kind == "LSTM" else []):
        theirs = getattr(torch.nn, kind)(3, 4, **kwargs).double()
        ours = getattr(nn, kind)(3, 4, **kwargs).double()
        ours.load_state_dict({k: dtrain.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
        lengths = [3, 5, 1, 5]
        x = rng.standard_normal((4, 5, 3) if batch_first else (5, 4, 3))
        n = kwargs.get("num_layers", 1) * 2
        hx = [rng.standard_normal((n, 4, kwargs.get("proj_size") or 4))]
        if kind == "LSTM":
            hx.append(rng.standard_normal((n, 4, 4)))
        xs, ts = dtrain.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        hs = [dtrain.tensor(h, requires_grad=True) for h in hx]
        ths = [torch.tensor(h, requires_grad=True) for h in hx]
        outs = _run_packed(dtrain, ours, xs, tuple(hs) if kind == "LSTM" else hs[0], lengths, batch_first)
        touts = _run_packed(torch, theirs, ts, tuple(ths) if kind == "LSTM" else ths[0], lengths, batch_first)
        seeds = [rng.standard_normal(tuple(o.shape)) for o in outs]
        for o, t in zip(outs, touts):
            compare(o, t.detach().numpy(), 1e-10, 1e-8, "torch")
        sum((o * dtrain.tensor(s)).sum() for o, s in zip(outs, seeds)).backward()
        sum((t * torch.tensor(s)).sum() for t, s in zip(touts, seeds)).backward()
        for o, t in zip([xs, *hs], [ts, *ths]):
            compare(o.grad, t.grad.numpy(), 1e-10, 1e-8, "torch input/state gradient")
        tparams = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            compare(p.grad, tparams[name].grad.numpy(), 1e-10, 1e-8, f"torch gradient of {name}")


@pytest.mark.parametrize("kind", KINDS)
def test_packed_sequence_gradcheck(kind):
    """A packed bidirectional layer passes gradcheck for input, state and parameters."""
    layer = getattr(nn, kind)(2, 2, bidirectional=True).double()
    x = dtrain.tensor(rng.standard_normal((3, 3, 2)), requires_grad=True)
    hs = [dtrain.tensor(rng.standard_normal((2, 3, 2)), requires_grad=True) for _ in range(2 if kind == "LSTM" else 1)]
    hx = tuple(hs) if kind == "LSTM" else hs[0]

    def fn(x, *rest):
        return tuple(_run_packed(dtrain, layer, x, hx, [2, 3, 1], False)[1:])
    assert dtrain.autograd.gradcheck(fn, [x, *hs, *layer.parameters()], atol=1e-6, rtol=1e-4)


def test_pack_utilities_match_torch_and_errors():
    """pack_sequence / pack_padded_sequence / pad_packed_sequence give torch's data,
    batch_sizes, indices, padding and lengths; bad lengths are errors naming them."""
    torch = _torch()
    from dtrain.nn.utils import rnn as ours
    theirs = torch.nn.utils.rnn
    seqs = [rng.standard_normal((n, 2)) for n in (2, 4, 1)]
    a = ours.pack_sequence([dtrain.tensor(s) for s in seqs], enforce_sorted=False)
    b = theirs.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted=False)
    for x, y in zip(a, b):
        compare(x, y.numpy(), 0, 0, "torch")
    for kwargs in [{}, dict(batch_first=True, padding_value=-1.0, total_length=6)]:
        for x, y in zip(ours.pad_packed_sequence(a, **kwargs), theirs.pad_packed_sequence(b, **kwargs)):
            compare(x, y.numpy(), 0, 0, "torch")
    padded = dtrain.zeros(4, 3, 2)
    with pytest.raises(RuntimeError, match=r"`lengths` array must be sorted in decreasing order.*\[2, 4, 1\]"):
        ours.pack_padded_sequence(padded, [2, 4, 1])
    with pytest.raises(RuntimeError, match="Length of all samples has to be greater than 0"):
        ours.pack_padded_sequence(padded, [2, 0, 1], enforce_sorted=False)
    with pytest.raises(RuntimeError, match=r"a length of 5 is longer than the padded sequences \(4 steps\)"):
        ours.pack_padded_sequence(padded, [5, 2, 1])
    with pytest.raises(ValueError, match="got 2 lengths for a batch of 3 sequences"):
        ours.pack_padded_sequence(padded, [2, 1])
    with pytest.raises(ValueError, match="total_length=3 and max sequence length being 4"):
        ours.pad_packed_sequence(a, total_length=3)
    f32 = a.float()
    assert f32.data.dtype == dtrain.float32 and f32.batch_sizes is a.batch_sizes and not f32.is_cuda
    assert f32.double().data.dtype == dtrain.float64 and a.cpu() is a
