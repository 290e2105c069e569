"""nn.init and the layers' default initialization: distributions checked statistically
(fixed seed, large tensors) against the formulas PyTorch documents."""
import math

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from dtrain.nn import init


@pytest.fixture(autouse=True)
def _seed():
    dtrain.manual_seed(0)


def _values(t):
    return t.detach().numpy().astype(np.float64).ravel()


def _check_uniform(t, bound):
    """Within [-bound, bound], mean ~ 0 and std ~ bound / sqrt(3)."""
    v = _values(t)
    n = v.size
    assert v.min() >= -bound and v.max() <= bound
    assert v.min() < -0.95 * bound and v.max() > 0.95 * bound  # the whole range is used
    std = bound / math.sqrt(3)
    assert abs(v.mean()) < 5 * std / math.sqrt(n)
    assert abs(v.std() - std) < 0.03 * std


def _check_normal(t, mean, std):
    v = _values(t)
    assert abs(v.mean() - mean) < 5 * std / math.sqrt(v.size)
    assert abs(v.std() - std) < 0.03 * std
    assert abs(((v - mean) ** 4).mean() / std ** 4 - 3) < 0.3  # normal kurtosis, not uniform's 1.8


def test_uniform_and_normal():
    """uniform_(a, b) and normal_(mean, std) fill in place with those distributions."""
    t = dtrain.empty(200, 100)
    assert init.uniform_(t, -2.0, 2.0) is t
    _check_uniform(t, 2.0)
    assert init.normal_(t, 1.0, 0.5) is t
    _check_normal(t, 1.0, 0.5)


def test_constant_zeros_ones():
    """constant_/zeros_/ones_ fill every element."""
    t = dtrain.empty(3, 4)
    assert (init.constant_(t, 2.5).numpy() == 2.5).all()
    assert (init.zeros_(t).numpy() == 0).all()
    assert (init.ones_(t).numpy() == 1).all()


@pytest.mark.parametrize("nonlinearity,param,expected", [
    ("linear", None, 1.0), ("conv2d", None, 1.0), ("sigmoid", None, 1.0), ("tanh", None, 5 / 3),
    ("relu", None, math.sqrt(2)), ("leaky_relu", None, math.sqrt(2 / (1 + 0.01 ** 2))),
    ("leaky_relu", 0.2, math.sqrt(2 / 1.04)), ("selu", None, 0.75)])
def test_calculate_gain(nonlinearity, param, expected):
    """calculate_gain gives PyTorch's documented gains."""
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected)


def test_calculate_gain_matches_torch():
    """Every gain equals torch.nn.init.calculate_gain's."""
    torch = pytest.importorskip("torch")
    for name in ("linear", "conv1d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"):
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))


def test_bad_arguments():
    """Unknown nonlinearity / mode, and tensors with fewer than 2 dims, are clear errors."""
    with pytest.raises(ValueError, match="Unsupported nonlinearity swish"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(dtrain.empty(3, 3), mode="fan_avg")
    with pytest.raises(ValueError, match=r"fewer than 2 dimensions \(got shape \[5\]\)"):
        init.xavier_uniform_(dtrain.empty(5))


def test_xavier():
    """xavier_uniform_: bound gain*sqrt(6/(fan_in+fan_out)); xavier_normal_: std gain*sqrt(2/(fan_in+fan_out));
    fans of a conv weight include the receptive field."""
    t = dtrain.empty(64, 32, 3, 3)  # fan_in 288, fan_out 576
    init.xavier_uniform_(t, gain=2.0)
    _check_uniform(t, 2.0 * math.sqrt(6 / (288 + 576)))
    init.xavier_normal_(t)
    _check_normal(t, 0.0, math.sqrt(2 / (288 + 576)))


def test_kaiming():
    """kaiming_uniform_: bound gain*sqrt(3/fan); kaiming_normal_: std gain/sqrt(fan), fan by mode."""
    t = dtrain.empty(300, 100)  # fan_in 100, fan_out 300
    init.kaiming_uniform_(t, nonlinearity="relu")
    _check_uniform(t, math.sqrt(2) * math.sqrt(3 / 100))
    init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
    _check_normal(t, 0.0, math.sqrt(2) / math.sqrt(300))
    init.kaiming_uniform_(t, a=math.sqrt(5))  # PyTorch's default for Linear: U(+-1/sqrt(fan_in))
    _check_uniform(t, 1 / math.sqrt(100))


def test_init_records_no_graph_on_parameters():
    """Init works on a Parameter (a leaf requiring grad) and leaves it a leaf."""
    p = nn.Parameter(dtrain.empty(4, 4))
    init.kaiming_normal_(p)
    init.zeros_(p)
    assert p.is_leaf and p.requires_grad and p.grad_fn is None


def test_seeded_init_is_reproducible():
    """The same seed gives the same initial weights."""
    dtrain.manual_seed(7)
    a = nn.Linear(5, 4).weight.detach().numpy().copy()
    dtrain.manual_seed(7)
    np.testing.assert_array_equal(a, nn.Linear(5, 4).weight.detach().numpy())


def test_generator_argument():
    """An explicit Generator drives the draws."""
    g1, g2 = dtrain.Generator().manual_seed(3), dtrain.Generator().manual_seed(3)
    a, b = dtrain.empty(10), dtrain.empty(10)
    init.normal_(a, generator=g1)
    init.normal_(b, generator=g2)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_linear_and_conv_default_init():
    """Linear/Conv2d weight and bias are U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PyTorch."""
    lin = nn.Linear(256, 400)
    _check_uniform(lin.weight, 1 / math.sqrt(256))
    assert np.abs(_values(lin.bias)).max() <= 1 / 16
    conv = nn.Conv2d(8, 200, 3, groups=2)  # fan_in = 8/2 * 9 = 36
    assert tuple(conv.weight.shape) == (200, 4, 3, 3)
    _check_uniform(conv.weight, 1 / 6)
    assert np.abs(_values(conv.bias)).max() <= 1 / 6 and np.abs(_values(conv.bias)).max() > 0.8 / 6


def test_embedding_and_norm_default_init():
    """Embedding is N(0, 1) with the padding row zero; BatchNorm/LayerNorm weight 1, bias 0,
    running_mean 0, running_var 1, num_batches_tracked 0."""
    emb = nn.Embedding(500, 64, padding_idx=3)
    assert (emb.weight.detach().numpy()[3] == 0).all()
    _check_normal(dtrain.tensor(np.delete(emb.weight.detach().numpy(), 3, axis=0)), 0.0, 1.0)
    bn = nn.BatchNorm2d(5)
    assert (bn.weight.detach().numpy() == 1).all() and (bn.bias.detach().numpy() == 0).all()
    assert (bn.running_mean.numpy() == 0).all() and (bn.running_var.numpy() == 1).all()
    assert int(bn.num_batches_tracked) == 0
    ln = nn.LayerNorm((2, 3))
    assert (ln.weight.detach().numpy() == 1).all() and (ln.bias.detach().numpy() == 0).all()


def test_zero_element_tensor_is_a_no_op():
    """kaiming on an empty tensor warns and returns it (as PyTorch); Linear(0, n) builds."""
    with pytest.warns(UserWarning, match="zero-element"):
        t = init.kaiming_uniform_(dtrain.empty(0, 3))
    assert tuple(t.shape) == (0, 3)
    with pytest.warns(UserWarning):
        assert tuple(nn.Linear(0, 3).weight.shape) == (3, 0)
