"""Every layer and loss of dtrain.nn against PyTorch (same weights through state_dict,
float64: outputs, input and parameter gradients, buffers), plus a torch-free check of each
(shape and a NumPy formula, or gradcheck) and its constructor errors."""
import math

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from helpers import compare

rng = np.random.default_rng(0)


def _torch():
    return pytest.importorskip("torch")


def matches_torch(ours, theirs, *inputs, train=True, atol=1e-9, rtol=1e-7, steps=1):
    """Copy ours' state into theirs, run both in float64 ``steps`` times on ``inputs``
    (arrays: float ones get gradients), and compare outputs, input and parameter grads,
    and the state (running statistics) afterwards."""
    torch = _torch()
    ours.double().train(train)
    theirs.double().train(train)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    for _ in range(steps):
        xs = [dtrain.tensor(a, requires_grad=a.dtype.kind == "f") for a in inputs]
        ts = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in inputs]
        out, tout = ours(*xs), theirs(*ts)
        compare(out, tout.detach().numpy(), atol, rtol, "torch")
        seed = rng.standard_normal(tuple(out.shape))
        (out * dtrain.tensor(seed)).sum().backward()
        (tout * torch.tensor(seed)).sum().backward()
        for x, t in zip(xs, ts):
            if x.requires_grad:
                compare(x.grad, t.grad.numpy(), atol, rtol, "torch input gradient")
        tparams = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            compare(p.grad, tparams[name].grad.numpy(), atol, rtol, f"torch gradient of {name}")
        ours.zero_grad()
        theirs.zero_grad()
    tstate = theirs.state_dict()
    for name, v in ours.state_dict().items():
        compare(v, tstate[name].numpy(), atol, rtol, f"torch state {name}")
    return out


def gradcheck_layer(layer, *shape):
    """Finite differences agree with backward for the input and every parameter (float64)."""
    layer.double()
    x = dtrain.tensor(rng.standard_normal(shape), requires_grad=True)
    params = [p for p in layer.parameters() if p.requires_grad]
    assert dtrain.autograd.gradcheck(lambda x, *ps: layer(x), [x, *params], atol=1e-6, rtol=1e-4)


def _np(t):
    return t.detach().numpy()


# ---- Linear ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)])
def test_linear_matches_torch(shape, bias):
    """Linear: output and grads equal torch's for 2-D and 3-D input, with and without bias."""
    torch = _torch()
    matches_torch(nn.Linear(4, 3, bias=bias), torch.nn.Linear(4, 3, bias=bias), rng.standard_normal(shape))


def test_linear_formula_and_gradcheck():
    """Linear computes x @ W.T + b, has (out, in) weight shape; gradients pass gradcheck."""
    lin = nn.Linear(4, 3).double()
    assert tuple(lin.weight.shape) == (3, 4) and tuple(lin.bias.shape) == (3,)
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(_np(lin(dtrain.tensor(x))), x @ _np(lin.weight).T + _np(lin.bias), rtol=1e-12)
    gradcheck_layer(nn.Linear(3, 2), 2, 3)
    assert nn.Linear(4, 3, bias=False).bias is None


def test_linear_errors():
    """Bad sizes in the constructor, and a mis-shaped input, name the values."""
    with pytest.raises(ValueError, match="in_features must be an integer >= 0, got -1"):
        nn.Linear(-1, 3)
    with pytest.raises(ValueError, match="out_features must be an integer >= 0, got 2.5"):
        nn.Linear(3, 2.5)
    with pytest.raises(RuntimeError, match=r"linear: input shape \[2, 5\]"):
        nn.Linear(4, 3)(dtrain.randn(2, 5))


def test_identity_and_flatten():
    """Identity returns its input object; Flatten merges start_dim..end_dim like numpy reshape."""
    x = dtrain.randn(2, 3, 4, 5)
    assert nn.Identity(54, unused=1)(x) is x
    assert tuple(nn.Flatten()(x).shape) == (2, 60)
    assert tuple(nn.Flatten(0, 2)(x).shape) == (24, 5)
    np.testing.assert_array_equal(_np(nn.Flatten(1, 2)(x)), x.numpy().reshape(2, 12, 5))


# ---- Conv2d ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs", [
    ((3, 4, 3), {}),
    ((4, 6, (3, 2)), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, bias=False)),
    ((3, 4, 3), dict(padding="same", dilation=2)),
    ((3, 2, (2, 3)), dict(padding="valid", stride=2)),
    ((2, 3, 3), dict(padding=1, padding_mode="reflect")),
    ((2, 3, 3), dict(padding=(2, 1), padding_mode="circular")),
    ((2, 3, (2, 4)), dict(padding="same", padding_mode="replicate")),
])
def test_conv2d_matches_torch(args, kwargs):
    """Conv2d (stride, padding incl. 'same'/'valid', dilation, groups, padding modes) equals torch."""
    torch = _torch()
    matches_torch(nn.Conv2d(*args, **kwargs), torch.nn.Conv2d(*args, **kwargs),
                  rng.standard_normal((2, args[0], 7, 6)))


def test_conv2d_shape_and_gradcheck():
    """Output size (H + 2p - d(k-1) - 1) // s + 1; a 1x1 conv is a per-pixel matmul; gradcheck."""
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    assert tuple(conv(dtrain.randn(2, 3, 9, 8)).shape) == (2, 5, 5, 4)
    one = nn.Conv2d(3, 2, 1).double()
    x = rng.standard_normal((2, 3, 4, 4))
    expected = np.einsum("oc,nchw->nohw", _np(one.weight)[:, :, 0, 0], x) + _np(one.bias)[None, :, None, None]
    np.testing.assert_allclose(_np(one(dtrain.tensor(x))), expected, rtol=1e-12)
    gradcheck_layer(nn.Conv2d(2, 2, 2, padding=1, groups=2), 1, 2, 3, 3)


def test_conv2d_constructor_errors():
    """Constructor validation quotes the bad values, as PyTorch's messages do."""
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        nn.Conv2d(4, 4, 3, groups=0)
    with pytest.raises(ValueError, match="padding_mode must be one of .* but got padding_mode='mirror'"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="kernel_size must be an integer >= 1, got 0"):
        nn.Conv2d(1, 1, 0)


# ---- pooling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,args,kwargs", [
    ("MaxPool2d", (2,), {}),
    ("MaxPool2d", (3,), dict(stride=2, padding=1, ceil_mode=True)),
    ("MaxPool2d", ((2, 3),), dict(stride=1, dilation=(2, 1))),
    ("AvgPool2d", (2,), {}),
    ("AvgPool2d", (3,), dict(stride=2, padding=1, count_include_pad=False)),
    ("AvgPool2d", (3,), dict(stride=2, padding=1, ceil_mode=True, divisor_override=4)),
    ("AdaptiveAvgPool2d", ((3, 2),), {}),
    ("AdaptiveAvgPool2d", ((None, 4),), {}),
])
def test_pooling_matches_torch(name, args, kwargs):
    """Pooling layers (strides, padding, dilation, ceil_mode, divisors) equal torch."""
    torch = _torch()
    matches_torch(getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs),
                  rng.standard_normal((2, 3, 7, 8)) + np.arange(56).reshape(7, 8) * 1e-3)


def test_pooling_formulas():
    """2x2 max/avg pooling equal a numpy reshape-reduce; global adaptive pooling is the mean."""
    x = rng.standard_normal((2, 3, 6, 4))
    blocks = x.reshape(2, 3, 3, 2, 2, 2)
    np.testing.assert_array_equal(_np(nn.MaxPool2d(2)(dtrain.tensor(x))), blocks.max(axis=(3, 5)))
    np.testing.assert_allclose(_np(nn.AvgPool2d(2)(dtrain.tensor(x))), blocks.mean(axis=(3, 5)), rtol=1e-12)
    np.testing.assert_allclose(_np(nn.AdaptiveAvgPool2d(1)(dtrain.tensor(x))), x.mean(axis=(2, 3), keepdims=True),
                               rtol=1e-12)
    x = dtrain.tensor(rng.standard_normal((1, 1, 4, 4)), requires_grad=True)
    dtrain.autograd.gradcheck(lambda t: nn.AvgPool2d(3, 1, 1)(t), [x])


def test_pooling_constructor_errors():
    """Bad windows are refused when the layer is built."""
    with pytest.raises(ValueError, match="pad should be at most half"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="kernel_size must be an integer >= 1, got 0"):
        nn.AvgPool2d(0)


# ---- normalization ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs,shape", [
    ("BatchNorm1d", {}, (6, 3)),
    ("BatchNorm1d", dict(momentum=None), (4, 3, 5)),
    ("BatchNorm1d", dict(affine=False, eps=1e-3), (5, 3)),
    ("BatchNorm2d", {}, (4, 3, 3, 2)),
    ("BatchNorm2d", dict(momentum=0.3, track_running_stats=False), (2, 3, 4, 4)),
])
def test_batchnorm_matches_torch(name, kwargs, shape):
    """BatchNorm: training steps (outputs, grads, running stats, num_batches_tracked incl.
    momentum=None's cumulative average) and then eval mode equal torch."""
    torch = _torch()
    ours, theirs = getattr(nn, name)(3, **kwargs), getattr(torch.nn, name)(3, **kwargs)
    with dtrain.no_grad():
        if ours.affine:
            ours.weight.uniform_(0.5, 1.5)
            ours.bias.normal_()
    x = rng.standard_normal(shape) * 2 + 1
    matches_torch(ours, theirs, x, steps=3)
    ours.eval()
    theirs.eval()
    compare(ours(dtrain.tensor(x)), theirs(torch.tensor(x)).detach().numpy(), 1e-9, 1e-7, "torch eval")


def test_batchnorm_formula_and_running_stats():
    """Training output has per-channel mean 0 / variance 1; running stats move by momentum
    toward the batch mean and unbiased variance; eval uses them; gradcheck passes."""
    bn = nn.BatchNorm2d(2).double()
    x = rng.standard_normal((4, 2, 3, 3)) * 3 + 2
    y = _np(bn(dtrain.tensor(x)))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    rm, rv = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
    expected = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(_np(bn(dtrain.tensor(x))), expected, rtol=1e-10)
    assert int(bn.num_batches_tracked) == 1  # eval does not count
    gradcheck_layer(nn.BatchNorm1d(2), 4, 2)


def test_batchnorm_errors():
    """Wrong input rank or channel count names the layer and the shape; bad arguments are refused."""
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input \(got 3D input"):
        nn.BatchNorm2d(3)(dtrain.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected 2D or 3D input \(got 4D input"):
        nn.BatchNorm1d(3)(dtrain.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"expected input with 3 channels .* shape \[2, 4\]"):
        nn.BatchNorm1d(3)(dtrain.randn(2, 4))
    with pytest.raises(ValueError, match="momentum must be in"):
        nn.BatchNorm1d(3, momentum=2.0)
    with pytest.raises(ValueError, match="num_features must be an integer >= 1, got 0"):
        nn.BatchNorm1d(0)


@pytest.mark.parametrize("shape,kwargs", [((4,), {}), ((3, 4), dict(eps=1e-3)),
                                          ((4,), dict(elementwise_affine=False)), ((4,), dict(bias=False))])
def test_layernorm_matches_torch(shape, kwargs):
    """LayerNorm over one or two trailing dims, with/without affine and bias, equals torch."""
    torch = _torch()
    ours = nn.LayerNorm(shape, **kwargs)
    if ours.elementwise_affine:
        with dtrain.no_grad():
            ours.weight.normal_()
    matches_torch(ours, torch.nn.LayerNorm(shape, **kwargs), rng.standard_normal((2, 3) + shape))


def test_layernorm_formula_and_gradcheck():
    """LayerNorm is (x - mean) / sqrt(var + eps) over the last dims, times weight plus bias."""
    ln = nn.LayerNorm(5).double()
    x = rng.standard_normal((3, 5))
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(_np(ln(dtrain.tensor(x))), expected, rtol=1e-10)
    gradcheck_layer(nn.LayerNorm(3), 2, 3)


# ---- dropout ---------------------------------------------------------------------------------

def test_dropout_statistics_and_gradient():
    """Training: about p of the elements are zero, the rest scaled by 1/(1-p), and the
    gradient uses the same mask; eval, p=0: identity; p=1: all zeros."""
    dtrain.manual_seed(0)
    drop = nn.Dropout(0.3)
    x = dtrain.ones(200, 100, requires_grad=True)
    y = drop(x)
    v = _np(y)
    assert abs((v == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(v[v != 0], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), v)
    drop.eval()
    assert (_np(drop(x)) == 1).all()
    assert (_np(nn.Dropout(0.0)(x)) == 1).all() and (_np(nn.Dropout(1.0)(x)) == 0).all()


def test_dropout_errors():
    """p outside [0, 1] is refused, quoting it."""
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="but got -0.1"):
        nn.Dropout(-0.1)


# ---- embedding -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{}, dict(padding_idx=1), dict(padding_idx=-1)])
def test_embedding_matches_torch(kwargs):
    """Embedding lookup and weight gradient (incl. repeated ids, padding_idx) equal torch."""
    torch = _torch()
    idx = np.array([[0, 1, 2, 1], [4, 4, 1, 3]])
    matches_torch(nn.Embedding(5, 3, **kwargs), torch.nn.Embedding(5, 3, **kwargs), idx)


def test_embedding_formula_and_errors():
    """Embedding returns weight[ids]; the padding row gets no gradient; from_pretrained
    freezes by default; a padding_idx out of range is refused."""
    emb = nn.Embedding(6, 2, padding_idx=0)
    ids = dtrain.tensor([[0, 5], [5, 2]])
    out = emb(ids)
    np.testing.assert_array_equal(_np(out), _np(emb.weight)[ids.numpy()])
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[:, 0], [0, 0, 1, 0, 0, 2])
    pre = nn.Embedding.from_pretrained(dtrain.ones(3, 4))
    assert not pre.weight.requires_grad and tuple(pre(dtrain.tensor([2])).shape) == (1, 4)
    with pytest.raises(ValueError, match="padding_idx must be within num_embeddings"):
        nn.Embedding(3, 2, padding_idx=3)
    with pytest.raises(ValueError, match="2-dimensional"):
        nn.Embedding.from_pretrained(dtrain.ones(3))


# ---- activations -----------------------------------------------------------------------------

_ACTIVATIONS = [
    ("ReLU", (), lambda x: np.maximum(x, 0)),
    ("LeakyReLU", (0.2,), lambda x: np.where(x > 0, x, 0.2 * x)),
    ("GELU", (), None),
    ("GELU", ("tanh",), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    ("SiLU", (), lambda x: x / (1 + np.exp(-x))),
    ("Softplus", (2.0, 1.0), None),
    ("Tanh", (), np.tanh),
    ("Sigmoid", (), lambda x: 1 / (1 + np.exp(-x))),
    ("Softmax", (1,), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    ("LogSoftmax", (-1,), lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))),
]


@pytest.mark.parametrize("name,args,formula", _ACTIVATIONS)
def test_activation_formula_and_gradcheck(name, args, formula):
    """Each activation module matches its NumPy formula (where simple) and passes gradcheck."""
    layer = getattr(nn, name)(*args)
    x = rng.standard_normal((3, 4)) + np.arange(12).reshape(3, 4) * 1e-3
    y = layer(dtrain.tensor(x))
    assert tuple(y.shape) == x.shape
    if formula is not None:
        np.testing.assert_allclose(_np(y), formula(x), rtol=1e-10, atol=1e-12)
    gradcheck_layer(layer, 2, 3)


@pytest.mark.parametrize("name,args,formula", _ACTIVATIONS)
def test_activation_matches_torch(name, args, formula):
    """Each activation module equals torch's, value and gradient."""
    torch = _torch()
    matches_torch(getattr(nn, name)(*args), getattr(torch.nn, name)(*args), rng.standard_normal((3, 5)) * 3)


def test_activation_argument_errors():
    """GELU's approximate must be 'none' or 'tanh'."""
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")


# ---- losses ----------------------------------------------------------------------------------

def _class_inputs():
    logits = rng.standard_normal((6, 4))
    target = np.array([0, 3, 1, 1, 2, 3])
    return logits, target


def _loss_cases():
    w = np.array([0.5, 1.0, 2.0, 1.5])
    logits, target = _class_inputs()
    ignored = np.array([0, 3, -100, 1, 2, -100])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    binary = (rng.random((6, 4)) > 0.5).astype(np.float64)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    return [
        ("MSELoss", {}, x, y), ("MSELoss", dict(reduction="sum"), x, y), ("L1Loss", {}, x, y),
        ("L1Loss", dict(reduction="none"), x, y),
        ("CrossEntropyLoss", {}, logits, target),
        ("CrossEntropyLoss", dict(weight=w, reduction="sum"), logits, target),
        ("CrossEntropyLoss", dict(weight=w, ignore_index=-100), logits, ignored),
        ("CrossEntropyLoss", dict(label_smoothing=0.1, weight=w), logits, target),
        ("CrossEntropyLoss", {}, logits, probs[::-1].copy()),
        ("NLLLoss", {}, logits, target), ("NLLLoss", dict(weight=w, reduction="none"), logits, ignored.clip(0)),
        ("BCEWithLogitsLoss", {}, logits, binary),
        ("BCEWithLogitsLoss", dict(pos_weight=w, weight=w[::-1].copy(), reduction="sum"), logits, binary),
    ]


@pytest.mark.parametrize("case", range(len(_loss_cases())))
def test_loss_matches_torch(case):
    """Every loss module (reductions, class weights, ignore_index, label_smoothing,
    probability targets, pos_weight) equals torch's value and input gradient."""
    torch = _torch()
    name, kwargs, inp, target = _loss_cases()[case]
    ours = getattr(nn, name)(**{k: dtrain.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
    theirs = getattr(torch.nn, name)(**{k: torch.tensor(v) if isinstance(v, np.ndarray) else v
                                        for k, v in kwargs.items()})
    x, tx = dtrain.tensor(inp, requires_grad=True), torch.tensor(inp, requires_grad=True)
    out, tout = ours(x, dtrain.tensor(target)), theirs(tx, torch.tensor(target))
    compare(out, tout.detach().numpy(), 1e-10, 1e-8, "torch")
    out.sum().backward()
    tout.sum().backward()
    compare(x.grad, tx.grad.numpy(), 1e-10, 1e-8, "torch gradient")


def test_loss_formulas():
    """MSE, L1 and cross entropy equal their NumPy formulas; cross entropy passes gradcheck."""
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(float(nn.MSELoss()(dtrain.tensor(x), dtrain.tensor(y))), ((x - y) ** 2).mean())
    np.testing.assert_allclose(float(nn.L1Loss(reduction="sum")(dtrain.tensor(x), dtrain.tensor(y))),
                               np.abs(x - y).sum())
    logits, target = _class_inputs()
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = nn.CrossEntropyLoss()
    np.testing.assert_allclose(float(ce(dtrain.tensor(logits), dtrain.tensor(target))),
                               -logp[np.arange(6), target].mean(), rtol=1e-12)
    xt = dtrain.tensor(logits, requires_grad=True)
    dtrain.autograd.gradcheck(lambda t: ce(t, dtrain.tensor(target)), [xt])


def test_loss_weights_are_buffers():
    """Class weights are buffers (in state_dict, moved by .to), as in PyTorch."""
    ce = nn.CrossEntropyLoss(weight=dtrain.ones(3))
    assert list(ce.state_dict()) == ["weight"]
    assert ce.double().weight.dtype == dtrain.float64
    assert list(nn.BCEWithLogitsLoss(pos_weight=dtrain.ones(2)).state_dict()) == ["pos_weight"]


def test_loss_constructor_errors():
    """Bad reduction or label_smoothing values are refused when the loss is built."""
    with pytest.raises(ValueError, match="elementwise_mean is not a valid value for reduction"):
        nn.MSELoss(reduction="elementwise_mean")
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0. Got: 1.5"):
        nn.CrossEntropyLoss(label_smoothing=1.5)


def test_legacy_reduction_flags():
    """size_average=False means sum and reduce=False means none, as PyTorch's legacy flags."""
    assert nn.MSELoss(size_average=False).reduction == "sum"
    assert nn.L1Loss(reduce=False).reduction == "none"


# ---- a whole model ---------------------------------------------------------------------------

def test_cnn_from_torch_state_dict_gives_same_outputs():
    """A CNN with Conv/BatchNorm/pooling/Linear loaded from torch's state dict (numpy arrays
    wrapped in dtrain tensors) gives torch's outputs in eval and train mode, and the same grads."""
    torch = _torch()

    def build(m):
        return m.Sequential(m.Conv2d(3, 4, 3, padding=1), m.BatchNorm2d(4), m.ReLU(), m.MaxPool2d(2),
                            m.Conv2d(4, 4, 3), m.ReLU(), m.AdaptiveAvgPool2d(1), m.Flatten(), m.Linear(4, 2))
    theirs = build(torch.nn).double()
    ours = build(nn).double()
    ours.load_state_dict({k: dtrain.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((3, 3, 8, 8))
    compare(ours.eval()(dtrain.tensor(x)), theirs.eval()(torch.tensor(x)).detach().numpy(), 1e-9, 1e-7, "torch")
    matches_torch(ours, theirs, x, train=True, steps=2)


# ---- more activations, GroupNorm, RMSNorm, Unflatten, channel dropout --------------------------

_MORE_LAYERS = [  # name, args, kwargs, input shape
    ("ReLU6", (), {}, (3, 5)), ("Hardtanh", (-2.0, 0.5), {}, (3, 5)), ("ELU", (0.5,), {}, (3, 5)),
    ("SELU", (), {}, (3, 5)), ("CELU", (1.5,), {}, (3, 5)), ("Mish", (), {}, (3, 5)),
    ("Hardswish", (), {}, (3, 5)), ("Hardsigmoid", (), {}, (3, 5)),
    ("PReLU", (), {}, (4, 3, 5)), ("PReLU", (3,), {"init": 0.1}, (4, 3, 5)), ("PReLU", (5,), {}, (4, 5)),
    ("GroupNorm", (2, 6), {}, (3, 6, 4, 2)), ("GroupNorm", (3, 6), {"eps": 1e-3, "affine": False}, (3, 6, 5)),
    ("GroupNorm", (6, 6), {"bias": False}, (2, 6)),
    ("RMSNorm", (5,), {}, (3, 4, 5)), ("RMSNorm", ((4, 5),), {"eps": 1e-3}, (3, 4, 5)),
    ("RMSNorm", ([5],), {"elementwise_affine": False}, (3, 5)),
    ("Unflatten", (1, (2, 3)), {}, (4, 6, 2)), ("Unflatten", (-1, (2, -1)), {}, (4, 6)),
]


@pytest.mark.parametrize("name,args,kwargs,shape", _MORE_LAYERS)
def test_more_layers_match_torch(name, args, kwargs, shape):
    """ReLU6, Hardtanh, ELU, SELU, CELU, Mish, Hardswish, Hardsigmoid, PReLU (shared and per
    channel), GroupNorm, RMSNorm, Unflatten: same parameters and state_dict keys as torch's,
    same outputs, input and parameter gradients, and the same repr."""
    torch = _torch()
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (n, p), (tn, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        compare(p, tp.detach().numpy(), what=f"torch's initial {tn}")
    assert repr(ours) == repr(theirs)
    matches_torch(ours, theirs, rng.standard_normal(shape) * 2)


@pytest.mark.parametrize("name,args,kwargs,shape", [c for c in _MORE_LAYERS if c[0] != "Unflatten"])
def test_more_layers_gradcheck(name, args, kwargs, shape):
    """Finite differences agree with backward for the input and every parameter (no torch needed)."""
    layer = getattr(nn, name)(*args, **kwargs)
    for p in layer.parameters():  # away from the initial ones and zeros, so weight and bias matter
        p.data = p.data + dtrain.tensor(rng.standard_normal(tuple(p.shape)) * 0.3).to(p.dtype)
    gradcheck_layer(layer, *shape)


def test_more_layer_constructor_errors():
    """Constructor validation quotes the bad values."""
    with pytest.raises(ValueError, match=r"GroupNorm: num_channels \(6\) must be divisible by num_groups \(4\)"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="num_groups must be an integer >= 1, got 0"):
        nn.GroupNorm(0, 6)
    with pytest.raises(ValueError, match="PReLU: num_parameters must be an integer >= 1, got 0"):
        nn.PReLU(0)
    with pytest.raises(ValueError, match=r"Hardtanh: max_val \(-1.0\) must be greater than min_val \(1.0\)"):
        nn.Hardtanh(1.0, -1.0)
    with pytest.raises(TypeError, match="unflattened_size must be tuple of ints, but found element of type float "
                                        "at pos 1"):
        nn.Unflatten(1, (2, 3.0))
    with pytest.raises(TypeError, match="unflattened_size must be a tuple of ints, but found type int"):
        nn.Unflatten(1, 6)
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        nn.Dropout2d(1.5)
    with pytest.raises(RuntimeError, match=r"the weight has 5 parameters but the input of shape \[2, 3\] has 3"):
        nn.PReLU(5)(dtrain.randn(2, 3))
    with pytest.warns(FutureWarning, match="`min_value` is deprecated"):
        assert nn.Hardtanh(min_value=-2.0).min_val == -2.0


@pytest.mark.parametrize("name,shape", [("Dropout1d", (40, 30, 4)), ("Dropout2d", (40, 30, 3, 3)),
                                        ("Dropout3d", (40, 30, 2, 2, 2)), ("Dropout3d", (300, 2, 2, 2))])
def test_channel_dropout_layers(name, shape):
    """In training whole channels are zeroed and the rest scaled by 1/(1-p); in eval the
    layer is the identity; the repr is torch's."""
    layer = getattr(nn, name)(0.4)
    out = _np(layer(dtrain.ones(*shape)))
    lead = 2 if len(shape) in (3, 4, 5) and not (name == "Dropout3d" and len(shape) == 4) else 1
    planes = out.reshape(shape[:lead] + (-1,))
    assert (planes == planes[..., :1]).all()
    assert abs((planes[..., 0] == 0).mean() - 0.4) < 0.06
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.6], rtol=1e-6)
    x = dtrain.randn(*shape)
    assert layer.eval()(x) is x
    assert repr(layer) == f"{name}(p=0.4, inplace=False)"


# ---- more losses and distances ---------------------------------------------------------------

def _more_loss_cases():
    g = np.random.default_rng(5)
    probs, target = g.uniform(0.05, 0.95, (4, 3)), g.uniform(0, 1, (4, 3))
    x, y = g.standard_normal((4, 3)) * 2, g.standard_normal((4, 3))
    logp, q = np.log(g.dirichlet(np.ones(3), 4)), g.dirichlet(np.ones(3), 4)
    sign = np.array([1, -1, -1, 1])
    a, p, n = g.standard_normal((4, 5)), g.standard_normal((4, 5)), g.standard_normal((4, 5))
    return [
        ("BCELoss", {}, probs, target), ("BCELoss", dict(weight=np.array([0.5, 1.0, 2.0]), reduction="sum"), probs,
                                         target),
        ("BCELoss", dict(reduction="none"), probs, target),
        ("SmoothL1Loss", {}, x, y), ("SmoothL1Loss", dict(beta=0.5, reduction="sum"), x, y),
        ("SmoothL1Loss", dict(beta=0.0), x, y),
        ("HuberLoss", {}, x, y), ("HuberLoss", dict(delta=0.5, reduction="none"), x, y),
        ("KLDivLoss", dict(reduction="batchmean"), logp, q), ("KLDivLoss", dict(reduction="sum", log_target=True),
                                                              logp, np.log(q)),
        ("KLDivLoss", dict(reduction="none"), logp, q),
        ("CosineEmbeddingLoss", {}, a, p, sign), ("CosineEmbeddingLoss", dict(margin=0.2, reduction="sum"), a, p,
                                                  sign),
        ("MarginRankingLoss", {}, x[:, 0], y[:, 0], sign), ("MarginRankingLoss", dict(margin=1.0, reduction="none"),
                                                            x[:, 0], y[:, 0], sign),
        ("TripletMarginLoss", {}, a, p, n), ("TripletMarginLoss", dict(margin=3.0, p=1.0, swap=True), a, p, n),
        ("TripletMarginLoss", dict(margin=0.5, reduction="none", eps=0.0), a, p, n),
        ("PairwiseDistance", {}, a, p), ("PairwiseDistance", dict(p=3.0, keepdim=True), a, p),
        ("CosineSimilarity", {}, a, p), ("CosineSimilarity", dict(dim=0, eps=1e-4), a, p),
    ]


@pytest.mark.parametrize("case", range(len(_more_loss_cases())))
def test_more_losses_match_torch(case):
    """BCELoss (weight buffer), SmoothL1Loss, HuberLoss, KLDivLoss ('batchmean', log_target),
    CosineEmbeddingLoss, MarginRankingLoss, TripletMarginLoss (p, swap), PairwiseDistance and
    CosineSimilarity equal torch's: value, gradients of every float input, state_dict."""
    torch = _torch()
    name, kwargs, *inputs = _more_loss_cases()[case]
    ours = getattr(nn, name)(**{k: dtrain.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
    theirs = getattr(torch.nn, name)(**{k: torch.tensor(v) if isinstance(v, np.ndarray) else v
                                        for k, v in kwargs.items()})
    matches_torch(ours, theirs, *inputs)


def test_more_loss_constructors():
    """KLDivLoss alone accepts 'batchmean'; TripletMarginLoss needs a positive margin; the
    settings are kept under torch's attribute names."""
    assert nn.KLDivLoss(reduction="batchmean").reduction == "batchmean"
    with pytest.raises(ValueError, match="batchmean is not a valid value for reduction"):
        nn.SmoothL1Loss(reduction="batchmean")
    with pytest.raises(ValueError, match="expected margin to be greater than 0, got 0"):
        nn.TripletMarginLoss(margin=0)
    assert nn.HuberLoss(delta=2.0).delta == 2.0 and nn.SmoothL1Loss(beta=0.5).beta == 0.5
    assert nn.PairwiseDistance(p=3.0).norm == 3.0 and nn.KLDivLoss(log_target=True).log_target
    assert list(nn.BCELoss(weight=dtrain.ones(3)).state_dict()) == ["weight"]


# ---- ParameterList, ParameterDict ------------------------------------------------------------

def _with_parameter_containers(m):
    """A module holding a ParameterList and a ParameterDict, built the same in dtrain and torch."""
    lib = dtrain if m is nn else __import__("torch")

    class Net(m.Module):
        def __init__(self):
            super().__init__()
            self.layers = m.ParameterList([m.Parameter(lib.ones(3, 3, dtype=lib.float64)), lib.zeros(3, dtype=lib.float64)])
            self.heads = m.ParameterDict({"scale": lib.ones(3, dtype=lib.float64),
                                          "bias": m.Parameter(lib.zeros(3, dtype=lib.float64))})

        def forward(self, x):
            for p in self.layers:
                x = x @ p if p.ndim == 2 else x + p
            return x * self.heads["scale"] + self.heads["bias"]
    return Net()


def test_parameter_containers_match_torch():
    """ParameterList/ParameterDict register their entries (tensors become Parameters) under
    torch's names ("layers.0", "heads.bias", ...): state dicts load both ways, outputs and
    gradients agree."""
    torch = _torch()
    ours, theirs = _with_parameter_containers(nn), _with_parameter_containers(torch.nn)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()] == \
        ["layers.0", "layers.1", "heads.bias", "heads.scale"]
    for p in theirs.parameters():
        p.data.normal_()
    matches_torch(ours, theirs, rng.standard_normal((2, 3)))
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())


def test_parameter_containers_are_trained():
    """An optimizer built from .parameters() updates the containers' entries."""
    net = _with_parameter_containers(nn)
    before = [_np(p).copy() for p in net.parameters()]
    opt = dtrain.optim.SGD(net.parameters(), lr=0.1)
    net(dtrain.ones(2, 3, dtype=dtrain.float64)).sum().backward()
    opt.step()
    assert all(not np.array_equal(b, _np(p)) for b, p in zip(before, net.parameters()))


def test_parameter_list_behaves_like_a_list():
    """Indexing (negative, slices), assignment, append/extend/+=, iteration, non-tensor
    entries, the repr, and the errors (out of range, extend with a tensor, calling it)."""
    pl = nn.ParameterList([dtrain.zeros(2), dtrain.ones(3)])
    assert len(pl) == 2 and tuple(pl[-1].shape) == (3,) and isinstance(pl[0], nn.Parameter)
    pl.append(dtrain.ones(4, 1)).extend([dtrain.zeros(1)])
    pl += ["a note"]
    assert len(pl) == 5 and pl[4] == "a note" and [n for n, _ in pl.named_parameters()] == ["0", "1", "2", "3"]
    part = pl[1:4:2]
    assert isinstance(part, nn.ParameterList) and [tuple(p.shape) for p in part] == [(3,), (1,)]
    assert part[0] is pl[1]
    pl[0] = dtrain.full((2,), 5.0)
    assert isinstance(pl[0], nn.Parameter) and _np(pl[0]).tolist() == [5.0, 5.0]
    assert [tuple(p.shape) for p in list(pl)[:4]] == [(2,), (3,), (4, 1), (1,)]
    assert repr(nn.ParameterList([dtrain.ones(2, 3)])) == "ParameterList(  (0): Parameter containing: [float32 of size 2x3])"
    assert "(4): Object of type: str" in repr(pl)
    with pytest.raises(IndexError, match="index 5 is out of range for ParameterList of length 5"):
        pl[5]
    with pytest.raises(TypeError, match="extend should be called with an iterable, but got Tensor"):
        pl.extend(dtrain.ones(2))
    with pytest.raises(RuntimeError, match="ParameterList should not be called"):
        pl(dtrain.ones(2))


def test_parameter_dict_behaves_like_a_dict():
    """Order (a plain dict sorted, as torch; an OrderedDict or pairs as given), get/pop/
    popitem/setdefault/fromkeys/copy/|/clear/in, and the errors (a non-string key)."""
    from collections import OrderedDict
    pd = nn.ParameterDict({"b": dtrain.ones(1), "a": dtrain.zeros(2)})
    assert list(pd) == ["a", "b"] and isinstance(pd["b"], nn.Parameter)
    pd.update(OrderedDict([("z", dtrain.ones(3)), ("c", dtrain.ones(4))]))
    pd.update([("y", "not a tensor")])
    assert list(pd.keys()) == ["a", "b", "z", "c", "y"] and list(reversed(pd))[0] == "y"
    assert [n for n, _ in pd.named_parameters()] == ["a", "b", "z", "c"]
    assert pd.get("nope", 7) == 7 and "z" in pd and len(pd) == 5
    assert pd.popitem()[0] == "y" and tuple(pd.pop("c").shape) == (4,) and list(pd) == ["a", "b", "z"]
    p = pd.setdefault("new", dtrain.ones(2))
    assert pd["new"] is p and pd.setdefault("new", dtrain.zeros(9)) is p
    both = pd | nn.ParameterDict(OrderedDict([("q", dtrain.ones(1))]))
    assert list(both) == ["a", "b", "z", "new", "q"] and both["a"] is pd["a"]
    assert list(pd.fromkeys(["u", "v"], dtrain.ones(1))) == ["u", "v"]
    copy = pd.copy()
    pd.clear()
    assert len(pd) == 0 and list(pd.state_dict()) == [] and len(copy) == 4
    with pytest.raises(TypeError, match="not a string \\(type is 'int'\\)"):
        pd[3] = dtrain.ones(1)
    with pytest.raises(KeyError, match=r"got: a\.b"):
        pd["a.b"] = dtrain.ones(1)
    assert "a.b" not in pd
    with pytest.raises(ValueError, match="element #0 should be a \\(key, value\\) pair"):
        pd.update(["abc"])


def test_container_and_norm_misuse_errors():
    """A bad RMSNorm shape, ParameterDict.update with a non-iterable, and calling a
    ParameterDict are refused with what was wrong."""
    with pytest.raises(ValueError, match="RMSNorm: normalized_shape must be an integer >= 0, got -3"):
        nn.RMSNorm((4, -3))
    with pytest.raises(TypeError, match="update should be called with an iterable of key/value pairs, but got int"):
        nn.ParameterDict().update(5)
    with pytest.raises(RuntimeError, match="ParameterDict should not be called"):
        nn.ParameterDict()(dtrain.ones(1))
    with pytest.raises(RuntimeError, match=r"rms_norm: input of shape \[2, 4\] does not end with normalized_shape "
                                           r"\[5\]"):
        nn.RMSNorm(5)(dtrain.randn(2, 4))
