"""dtrain.nn.functional against torch.nn.functional, NumPy references and finite differences."""
import math

import numpy as np
import pytest

import dtrain
import dtrain.nn.functional as F
from helpers import check_op, rand

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the NumPy references and gradcheck still run
    torch = TF = None


def _as(v, module):
    """kwargs given as NumPy arrays become each framework's own (constant) tensors."""
    return module.tensor(v.copy()) if isinstance(v, np.ndarray) else v


def check_f(name, *inputs, ref=None, atol=1e-6, rtol=1e-5, **kw):
    """check_op of ``F.<name>(*inputs, **kw)``, with torch.nn.functional.<name> as the oracle."""
    def fn(*xs):
        return getattr(F, name)(*xs, **{k: _as(v, dtrain) for k, v in kw.items()})

    def torch_fn(*xs):
        return getattr(TF, name)(*xs, **{k: _as(v, torch) for k, v in kw.items()})
    return check_op(fn, *inputs, ref=ref, torch_fn=torch_fn if torch else None, atol=atol, rtol=rtol)


def check_call(call, *inputs, ref=None):
    """check_op of ``call(F, tensor, *inputs)`` against ``call(torch.nn.functional, torch.tensor, *inputs)``:
    for calls whose constant tensors (``tensor(array)``) come before the differentiable ones."""
    torch_fn = (lambda *xs: call(TF, torch.tensor, *xs)) if torch else None
    return check_op(lambda *xs: call(F, dtrain.tensor, *xs), *inputs, ref=ref, torch_fn=torch_fn)


def ints(*shape, high, low=0, seed=0):
    return np.random.default_rng(seed).integers(low, high, shape)


# ---- activations ------------------------------------------------------------------------

def test_relu():
    """relu is max(0, x), its gradient is 1 above 0 and 0 at and below 0."""
    check_f("relu", (3, 4), ref=lambda a: np.maximum(a, 0))
    x = dtrain.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    x.relu().sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu(slope):
    """leaky_relu scales x <= 0 by negative_slope."""
    check_f("leaky_relu", (3, 4), negative_slope=slope, ref=lambda a: np.where(a > 0, a, slope * a))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    """gelu (exact erf form and tanh approximation) matches the formula and PyTorch."""
    erf = np.vectorize(math.erf)

    def ref(a):
        if approximate == "tanh":
            return 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))
        return 0.5 * a * (1 + erf(a / math.sqrt(2)))
    check_f("gelu", (3, 4), approximate=approximate, ref=ref)


def test_silu_softplus_tanh_sigmoid():
    """silu, softplus (both sides of its threshold) and the re-exported tanh and sigmoid."""
    check_f("silu", (3, 4), ref=lambda a: a / (1 + np.exp(-a)))
    check_f("softplus", (3, 4), ref=lambda a: np.log1p(np.exp(a)))
    check_f("softplus", (3, 4), beta=2.0, threshold=1.0,
            ref=lambda a: np.where(2 * a > 1, a, np.log1p(np.exp(2 * a)) / 2))
    check_f("tanh", (3, 4), ref=np.tanh)
    check_f("sigmoid", (3, 4), ref=lambda a: 1 / (1 + np.exp(-a)))


def _np_log_softmax(a, axis):
    z = a - a.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_log_softmax(dim):
    """softmax / log_softmax along each dim: values and gradients."""
    check_f("softmax", (3, 4, 2), dim=dim, ref=lambda a: np.exp(_np_log_softmax(a, dim)))
    check_f("log_softmax", (3, 4, 2), dim=dim, ref=lambda a: _np_log_softmax(a, dim))


def test_softmax_is_stable_and_bound_as_methods():
    """Huge logits give finite results; x.softmax(dim) and x.log_softmax(dim) are the same ops."""
    a = np.array([[1000.0, 0.0, -1000.0], [3.0, 3.0, 3.0]])
    x = dtrain.tensor(a)
    np.testing.assert_allclose(x.log_softmax(1).numpy(), _np_log_softmax(a, 1))
    np.testing.assert_allclose(x.softmax(1).numpy(), np.exp(_np_log_softmax(a, 1)))
    with pytest.warns(UserWarning, match="dim=1"):
        F.softmax(x)


# ---- classification losses --------------------------------------------------------------

def _np_cross_entropy(x, y, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0, logits=True):
    """PyTorch's documented formula, written out in NumPy (class dim 1)."""
    logp = _np_log_softmax(x, 1) if logits else x
    c = x.shape[1]
    w = np.ones(c) if weight is None else weight
    keep = y != ignore_index
    yc = np.where(keep, y, 0)
    picked = np.take_along_axis(logp, yc[:, None], 1)[:, 0]
    wb = w.reshape((c,) + (1,) * (x.ndim - 2))
    loss = -(1 - smoothing) * w[yc] * picked - smoothing / c * (wb * logp).sum(1)
    loss = loss * keep
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / (w[yc] * keep).sum()


CLASS_CASES = [  # shape, weight?, ignore_index, label_smoothing
    ((5, 4), False, -100, 0.0),
    ((5, 4), True, -100, 0.0),
    ((5, 4), True, 2, 0.0),
    ((5, 4), False, 1, 0.2),
    ((5, 4), True, 0, 0.1),
    ((3, 4, 2, 2), True, 1, 0.0),
    ((3, 4, 2, 2), True, -100, 0.3),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape,weighted,ignore_index,smoothing", CLASS_CASES)
def test_cross_entropy(reduction, shape, weighted, ignore_index, smoothing):
    """cross_entropy with class weights, ignore_index (incl. a real class), label smoothing and
    each reduction: PyTorch's weighted-mean and smoothing formulas, values and gradients."""
    y = ints(shape[0], *shape[2:], high=shape[1])
    if ignore_index == -100:
        y.flat[1] = -100
    w = rand(shape[1], positive=True) if weighted else None
    check_f("cross_entropy", shape, y, weight=w, ignore_index=ignore_index, reduction=reduction,
            label_smoothing=smoothing,
            ref=lambda x, t: _np_cross_entropy(x, t, w, ignore_index, reduction, smoothing))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape,weighted,ignore_index", [((5, 4), True, 2), ((3, 4, 2), False, -100)])
def test_nll_loss(reduction, shape, weighted, ignore_index):
    """nll_loss on log-probabilities: weights, ignore_index and reductions."""
    y = ints(shape[0], *shape[2:], high=shape[1], seed=1)
    y.flat[0] = ignore_index
    w = rand(shape[1], positive=True) if weighted else None
    check_f("nll_loss", shape, y, weight=w, ignore_index=ignore_index, reduction=reduction,
            ref=lambda x, t: _np_cross_entropy(x, t, w, ignore_index, reduction, logits=False))


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_cross_entropy_probability_targets_and_unbatched(smoothing):
    """Class-probability targets (with weight and smoothing), and an unbatched (C,) input."""
    p = np.exp(_np_log_softmax(rand(4, 3, 2), 1))
    check_f("cross_entropy", (4, 3, 2), p, weight=rand(3, positive=True), label_smoothing=smoothing)
    check_f("cross_entropy", (5,), np.array(3), label_smoothing=smoothing, reduction="none",
            ref=lambda x, t: _np_cross_entropy(x[None], t[None], smoothing=smoothing, reduction="none")[0])


def test_cross_entropy_errors():
    """Bad targets and reductions are refused with messages that name the problem."""
    x = dtrain.randn(4, 3)
    with pytest.raises(ValueError, match=r"expected target of shape \[4\].*input of shape \[4, 3\].*\[5\]"):
        F.cross_entropy(x, dtrain.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(RuntimeError, match="class indices.*got target of dtype float32"):
        F.cross_entropy(x, dtrain.zeros(4))
    with pytest.raises(IndexError, match="target 3 is out of bounds"):
        F.cross_entropy(x, dtrain.tensor([0, 3, 1, 1]))
    with pytest.raises(IndexError, match="target -1 is out of bounds"):
        F.nll_loss(x, dtrain.tensor([0, -1, 1, 1]))
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        F.cross_entropy(x, dtrain.tensor([0, 1, 2, 0]), reduction="avg")
    with pytest.raises(ValueError, match=r"weight must be a Tensor of shape \[3\]"):
        F.cross_entropy(x, dtrain.tensor([0, 1, 2, 0]), weight=dtrain.ones(4))


# ---- regression and binary losses -------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_l1(reduction):
    """mse_loss and l1_loss for each reduction."""
    red = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    check_f("mse_loss", (3, 4), (3, 4), reduction=reduction, ref=lambda a, b: red((a - b) ** 2))
    check_f("l1_loss", (3, 4), (3, 4), reduction=reduction, ref=lambda a, b: red(np.abs(a - b)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_l1_weighted(reduction):
    """With per-element weights, 'mean' is sum(weight * loss) / sum(weight), as PyTorch."""
    w = rand(3, 4, positive=True)
    red = {"mean": lambda v: v.sum() / w.sum(), "sum": np.sum, "none": lambda v: v}[reduction]
    check_f("mse_loss", (3, 4), (3, 4), weight=w, reduction=reduction, ref=lambda a, b: red(w * (a - b) ** 2))
    check_f("l1_loss", (3, 4), (3, 4), weight=w, reduction=reduction, ref=lambda a, b: red(w * np.abs(a - b)))
    with pytest.raises(ValueError, match=r"weight must have the input's shape \[3, 4\], got \[4\]"):
        F.mse_loss(dtrain.randn(3, 4), dtrain.randn(3, 4), weight=dtrain.ones(4))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,pos_weighted", [(False, False), (True, False), (False, True), (True, True)])
def test_binary_cross_entropy_with_logits(reduction, weighted, pos_weighted):
    """BCE with logits: weight, pos_weight, reductions; gradients for input and target."""
    w = rand(1, 3, positive=True) if weighted else None
    pw = rand(3, positive=True) if pos_weighted else None
    t = np.random.default_rng(2).uniform(size=(4, 3))
    x = rand(4, 3)
    x[0, 0] = 0.0  # the kink of |x| in the stable formula must not show in the gradient

    def ref(a, b):
        s = 1 / (1 + np.exp(-a))
        loss = -((1 if pw is None else pw) * b * np.log(s) + (1 - b) * np.log(1 - s)) * (1 if w is None else w)
        return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](loss)
    check_f("binary_cross_entropy_with_logits", x, t, weight=w, pos_weight=pw, reduction=reduction, ref=ref)


def test_binary_cross_entropy_with_logits_is_stable():
    """Logits of +-200 give finite losses and gradients (no exp overflow)."""
    x = dtrain.tensor([200.0, -200.0, 200.0], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, dtrain.tensor([1.0, 0.0, 0.0]), reduction="none")
    np.testing.assert_allclose(loss.detach().numpy(), [0.0, 0.0, 200.0], atol=1e-12)
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match=r"target size \(\[3, 1\]\) must be the same as input size \(\[3\]\)"):
        F.binary_cross_entropy_with_logits(x, dtrain.zeros(3, 1))


# ---- dropout, linear, one_hot -----------------------------------------------------------

def test_dropout_identity_cases():
    """p=0 and training=False return the input unchanged; p=1 zeroes everything."""
    x = dtrain.randn(5, 4)
    assert F.dropout(x, p=0.0) is x
    assert F.dropout(x, p=0.7, training=False) is x
    assert not F.dropout(x, p=1.0).numpy().any()
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        F.dropout(x, p=1.5)


def test_dropout_mask_scaling_and_seed():
    """Kept elements are scaled by 1/(1-p), the drop rate is about p, the mean is preserved,
    the gradient is the same mask, and a fixed seed repeats the mask."""
    p = 0.3
    dtrain.manual_seed(0)
    x = dtrain.ones(200, 100, dtype=dtrain.float64, requires_grad=True)
    y = F.dropout(x, p=p)
    out = y.detach().numpy()
    assert set(np.unique(out)) <= {0.0, 1 / (1 - p)}
    assert abs((out == 0).mean() - p) < 0.02
    assert abs(out.mean() - 1.0) < 0.03
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), out)
    dtrain.manual_seed(0)
    np.testing.assert_array_equal(F.dropout(x, p=p).detach().numpy(), out)


def test_linear_and_one_hot_reexports():
    """F.linear and F.one_hot are the core ops, with PyTorch's results."""
    check_f("linear", (4, 3), (2, 3), (2,), ref=lambda x, w, b: x @ w.T + b)
    check_f("one_hot", np.array([0, 2, 1]), num_classes=4, ref=lambda y: np.eye(4, dtype=np.int64)[y])


# ---- conv2d -----------------------------------------------------------------------------

def _np_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Direct convolution: one einsum per kernel offset and group (an independent reference)."""
    (sh, sw), (dh, dw) = [(v, v) if isinstance(v, int) else v for v in (stride, dilation)]
    o, cg, kh, kw = w.shape
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))
    else:
        ph, pw = (0, 0) if padding == "valid" else (padding, padding) if isinstance(padding, int) else padding
        pads = ((ph, ph), (pw, pw))
    x = np.pad(x, ((0, 0), (0, 0)) + pads)
    ho = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], o, ho, wo))
    og = o // groups
    for g in range(groups):
        for p in range(kh):
            for q in range(kw):
                rows = slice(p * dh, p * dh + sh * (ho - 1) + 1, sh)
                cols = slice(q * dw, q * dw + sw * (wo - 1) + 1, sw)
                patch = x[:, g * cg:(g + 1) * cg, rows, cols]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, p, q])
    return out if b is None else out + b[:, None, None]


CONV_CASES = [  # input shape, weight shape, options
    ((2, 3, 5, 5), (4, 3, 3, 3), {}),
    ((2, 3, 5, 6), (4, 3, 3, 3), {"padding": 1}),
    ((1, 2, 6, 7), (3, 2, 3, 2), {"stride": (2, 1), "padding": (1, 2)}),
    ((1, 2, 7, 6), (2, 2, 2, 3), {"dilation": (2, 1), "padding": 1, "stride": 2}),
    ((1, 4, 5, 5), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((1, 4, 4, 5), (4, 1, 2, 2), {"groups": 4, "padding": "same"}),
    ((1, 2, 5, 5), (3, 2, 2, 3), {"padding": "same", "dilation": 2}),
    ((1, 2, 5, 5), (3, 2, 3, 3), {"padding": "valid", "stride": 3}),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # PyTorch's note about even kernels
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs,ws,opts", CONV_CASES)
def test_conv2d(xs, ws, opts, bias):
    """conv2d with stride, padding (int, pair, 'same', 'valid'), dilation, groups, non-square
    kernels and with/without bias: values and gradients for input, weight and bias."""
    inputs = (xs, ws, (ws[0],)) if bias else (xs, ws)
    check_f("conv2d", *inputs, **opts, ref=lambda *a: _np_conv2d(*a, **opts))


def test_conv2d_unbatched():
    """A (C, H, W) input convolves as a batch of one."""
    check_f("conv2d", (2, 4, 4), (3, 2, 3, 3), padding=1,
            ref=lambda x, w: _np_conv2d(x[None], w, padding=1)[0])


def test_conv2d_errors():
    """Channel mismatch names both shapes; other bad arguments are named."""
    x = dtrain.randn(2, 3, 8, 8)
    with pytest.raises(RuntimeError, match=r"input of shape \[2, 3, 8, 8\] has 3 channels.*weight of shape "
                                           r"\[4, 2, 3, 3\] with groups=1 expects 2"):
        F.conv2d(x, dtrain.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        F.conv2d(x, dtrain.randn(4, 3, 3, 3), padding="same", stride=2)
    with pytest.raises(ValueError, match=r"too small for kernel 9x9"):
        F.conv2d(x, dtrain.randn(4, 3, 9, 9))
    with pytest.raises(RuntimeError, match=r"bias must have shape \[4\]"):
        F.conv2d(x, dtrain.randn(4, 3, 3, 3), dtrain.randn(3))


# ---- pooling ----------------------------------------------------------------------------

POOL_CASES = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 2, "stride": 2, "ceil_mode": True},
    {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)},
    {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},  # a last window in the padding is dropped
]


@pytest.mark.parametrize("opts", POOL_CASES + [{"kernel_size": 2, "dilation": 2}, {"kernel_size": 2, "stride": 1}])
def test_max_pool2d(opts):
    """max_pool2d: stride, padding, dilation, ceil_mode, non-square, overlapping windows."""
    check_f("max_pool2d", (2, 2, 5, 7), **opts)


def test_max_pool2d_values_and_indices():
    """Values against a direct loop; return_indices gives flat h * W + w positions (as PyTorch)."""
    a = rand(1, 2, 5, 5)

    def ref(x):
        out = np.full((1, 2, 3, 3), -np.inf)
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        for i in range(3):
            for j in range(3):
                out[:, :, i, j] = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(2, 3))
        return out
    check_f("max_pool2d", a, kernel_size=3, stride=2, padding=1, ref=ref)
    values, idx = check_f("max_pool2d", a, kernel_size=3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(np.take_along_axis(a.reshape(1, 2, 25), idx.numpy().reshape(1, 2, 9), 2),
                                  values.detach().numpy().reshape(1, 2, 9))


def test_max_pool2d_nan():
    """A NaN in a window is its max, and it gets the gradient (as PyTorch)."""
    a = np.array([[[[1.0, np.nan], [3.0, 2.0]]]])
    x = dtrain.tensor(a, requires_grad=True)
    y = F.max_pool2d(x, 2)
    assert np.isnan(y.item())
    y.backward(dtrain.ones(1, 1, 1, 1, dtype=dtrain.float64))
    assert x.grad.numpy().ravel().tolist() == [0.0, 1.0, 0.0, 0.0]


def test_max_pool2d_ties_go_to_the_first():
    """On equal values only the first window element gets the gradient, as PyTorch."""
    x = dtrain.zeros(1, 1, 2, 2, requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    assert x.grad.numpy().ravel().tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("opts", POOL_CASES)
def test_avg_pool2d(opts, include_pad):
    """avg_pool2d: divisors with and without the padding, and in ceil_mode, as PyTorch."""
    check_f("avg_pool2d", (2, 2, 5, 7), count_include_pad=include_pad, **opts)


def test_avg_pool2d_reference_and_divisor_override():
    """Plain 2x2 averaging against NumPy; divisor_override replaces the window size."""
    check_f("avg_pool2d", (1, 2, 4, 6), kernel_size=2,
            ref=lambda x: x.reshape(1, 2, 2, 2, 3, 2).mean(axis=(3, 5)))
    check_f("avg_pool2d", (1, 2, 4, 6), kernel_size=2, divisor_override=3,
            ref=lambda x: x.reshape(1, 2, 2, 2, 3, 2).sum(axis=(3, 5)) / 3)


@pytest.mark.parametrize("size", [1, (2, 3), (3, None), (4, 4)])
def test_adaptive_avg_pool2d(size):
    """adaptive_avg_pool2d with equal bins and with PyTorch's overlapping unequal bins."""
    check_f("adaptive_avg_pool2d", (2, 2, 6, 7), output_size=size)
    check_f("adaptive_avg_pool2d", (2, 5, 6), output_size=size)


def test_pool_errors():
    """A kernel larger than the padded input, and too much padding, are refused."""
    x = dtrain.randn(1, 1, 3, 3)
    with pytest.raises(ValueError, match=r"input of shape \[1, 1, 3, 3\].*too small for kernel 6x6"):
        F.max_pool2d(x, 6, padding=1)
    with pytest.raises(ValueError, match="too small for kernel 4x4"):
        F.avg_pool2d(x, 4)
    with pytest.raises(ValueError, match="pad should be at most half"):
        F.max_pool2d(x, 2, padding=2)


# ---- normalization ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 4), (2, 3, 2, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_training(shape, affine):
    """Training mode: batch statistics; values and gradients for input, weight and bias."""
    c = shape[1]
    params = ((c,), (c,)) if affine else ()
    check_call(lambda f, t, x, *wb: f.batch_norm(x, t(np.zeros(c)), t(np.ones(c)), *wb, training=True), shape, *params)


def test_batch_norm_updates_running_stats_like_torch():
    """One training call moves running_mean / running_var by momentum towards the batch mean
    and the unbiased batch variance, in place."""
    a = rand(5, 3, 2, 2)
    rm, rv = dtrain.zeros(3, dtype=dtrain.float64), dtrain.ones(3, dtype=dtrain.float64)
    F.batch_norm(dtrain.tensor(a), rm, rv, training=True, momentum=0.2)
    mean, var = a.mean(axis=(0, 2, 3)), a.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(rm.numpy(), 0.2 * mean)
    np.testing.assert_allclose(rv.numpy(), 0.8 + 0.2 * var)
    if torch is not None:
        trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        TF.batch_norm(torch.tensor(a), trm, trv, training=True, momentum=0.2)
        np.testing.assert_allclose(rm.numpy(), trm.numpy())
        np.testing.assert_allclose(rv.numpy(), trv.numpy())


def test_batch_norm_eval_and_errors():
    """Eval mode normalizes with the running statistics; training needs >1 value per channel."""
    rm, rv = rand(3), rand(3, positive=True)
    check_call(lambda f, t, x, w, b: f.batch_norm(x, t(rm), t(rv), w, b, eps=1e-3), (4, 3, 2), (3,), (3,),
            ref=lambda x, w, b: (x - rm[:, None]) / np.sqrt(rv[:, None] + 1e-3) * w[:, None] + b[:, None])
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(dtrain.randn(1, 3), dtrain.zeros(3), dtrain.ones(3), training=True)
    with pytest.raises(RuntimeError, match=r"running_mean of shape \[3\].*got \[4\]"):
        F.batch_norm(dtrain.randn(2, 3), dtrain.zeros(4), dtrain.ones(3))


@pytest.mark.parametrize("shape,normalized", [((3, 4), (4,)), ((2, 3, 4), (3, 4))])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(shape, normalized, affine):
    """layer_norm over the last dims, with and without weight and bias."""
    axes = tuple(range(len(shape) - len(normalized), len(shape)))

    def ref(x, w=1, b=0):
        return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5) * w + b
    params = (normalized, normalized) if affine else ()
    check_call(lambda f, t, x, *wb: f.layer_norm(x, normalized, *wb), shape, *params, ref=ref)
    with pytest.raises(RuntimeError, match=r"does not end with normalized_shape \[5\]"):
        F.layer_norm(dtrain.randn(*shape), (5,))


# ---- embedding and pad ------------------------------------------------------------------

def test_embedding():
    """Rows picked by index; repeated indices accumulate in the gradient."""
    check_f("embedding", np.array([[0, 1, 4], [4, 4, 2]]), (5, 3), ref=lambda i, w: w[i])


@pytest.mark.parametrize("padding_idx", [1, -1])
def test_embedding_padding_idx(padding_idx):
    """The row padding_idx (negative counts from the end) is looked up but gets no gradient,
    the others get their counts (as PyTorch)."""
    w = dtrain.tensor(rand(5, 3), requires_grad=True)
    out = F.embedding(dtrain.tensor([[0, 1, 4], [4, 4, 2]]), w, padding_idx=padding_idx)
    np.testing.assert_array_equal(out.detach().numpy(), w.detach().numpy()[[[0, 1, 4], [4, 4, 2]]])
    out.sum().backward()
    counts = np.array([1.0, 1, 1, 0, 3])
    counts[padding_idx] = 0
    np.testing.assert_array_equal(w.grad.numpy(), np.repeat(counts[:, None], 3, axis=1))
    with pytest.raises(IndexError, match=r"indices must be in \[0, 4\].*\[0, 5\]"):
        F.embedding(dtrain.tensor([0, 5]), dtrain.randn(5, 3))


@pytest.mark.parametrize("pad,value", [((1, 2), 0.0), ((1, 0, 2, 1), 1.5), ((-1, 2, 0, -1), None),
                                       ((1, 1, 0, 0, 1, 0), 0.0)])
def test_pad_constant(pad, value):
    """Constant padding of the last dims, negative widths crop."""
    def ref(a):
        widths = [(0, 0)] * (a.ndim - len(pad) // 2) + [(max(lo, 0), max(hi, 0)) for lo, hi in
                                                         zip(pad[::2], pad[1::2])][::-1]
        out = np.pad(a, widths, constant_values=value or 0)
        crop = [slice(None)] * (a.ndim - len(pad) // 2) + [slice(max(-lo, 0), out.shape[a.ndim - 1 - i] - max(-hi, 0))
                                                         for i, (lo, hi) in enumerate(zip(pad[::2], pad[1::2]))][::-1]
        return out[tuple(crop)]
    check_f("pad", (2, 3, 4), pad=pad, value=value, ref=ref)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_modes(mode):
    """reflect, replicate and circular padding of the last two dims (gradients accumulate)."""
    np_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    check_f("pad", (2, 2, 3, 4), pad=(1, 2, 2, 1), mode=mode,
            ref=lambda a: np.pad(a, ((0, 0), (0, 0), (2, 1), (1, 2)), mode=np_mode))


def test_pad_errors():
    """Odd-length pads, reflect as wide as the dim, circular wrapping twice are refused."""
    x = dtrain.randn(1, 2, 3)
    with pytest.raises(ValueError, match="even length"):
        F.pad(x, (1, 1, 1))
    with pytest.raises(ValueError, match=r"reflect padding \(3, 3\) of dim 2 \(size 3\).*at most 2"):
        F.pad(x, (3, 3), mode="reflect")
    with pytest.raises(ValueError, match="circular padding.*at most 3"):
        F.pad(x, (4, 0), mode="circular")


# ---- dtypes -----------------------------------------------------------------------------

def test_float32_stays_float32():
    """Every op keeps float32 inputs in float32, forward and backward (no float64 upcast)."""
    f32 = dtrain.float32
    x = dtrain.randn(4, 3, 6, 6, requires_grad=True)
    w = dtrain.randn(4, 3, 3, 3, requires_grad=True)
    c = dtrain.randn(4, 5, requires_grad=True)
    outs = [F.conv2d(x, w, dtrain.zeros(4), padding=1), F.max_pool2d(x, 2), F.avg_pool2d(x, 3, 2, 1),
            F.adaptive_avg_pool2d(x, 4), F.batch_norm(x, dtrain.zeros(3), dtrain.ones(3), training=True),
            F.layer_norm(x, (6, 6)), F.relu(x), F.leaky_relu(x), F.gelu(x), F.gelu(x, approximate="tanh"),
            F.silu(x), F.softplus(x), F.softmax(x, 1), F.log_softmax(x, 1), F.dropout(x),
            F.pad(x, (1, 1)), F.pad(x, (1, 1), mode="reflect"),
            F.cross_entropy(c, dtrain.tensor([0, 1, 4, 2]), weight=dtrain.ones(5), label_smoothing=0.1),
            F.nll_loss(c, dtrain.tensor([0, 1, 4, 2])), F.mse_loss(c, dtrain.zeros(4, 5)),
            F.binary_cross_entropy_with_logits(c, dtrain.ones(4, 5), pos_weight=dtrain.ones(5))]
    for out in outs:
        assert out.dtype == f32, out.grad_fn
        (out * 1.0).sum().backward()
    assert x.grad.dtype == w.grad.dtype == c.grad.dtype == f32


# ---- more activations -------------------------------------------------------------------

def kink_grads_match_torch(name, points, **kw):
    """At the points where an activation has a kink, finite differences are meaningless:
    compare the value and the chosen one-sided gradient with PyTorch's kernel instead."""
    if torch is None:
        pytest.skip("needs torch")
    x = dtrain.tensor(np.array(points, dtype=np.float64), requires_grad=True)
    t = torch.tensor(np.array(points, dtype=np.float64), requires_grad=True)
    out, tout = getattr(F, name)(x, **kw), getattr(TF, name)(t, **kw)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-12)
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-7, err_msg=f"{name} gradient at {points}")


WIDE = rand(4, 6) * 3  # reaches past the kinks at +-1, +-3 and 6


@pytest.mark.parametrize("name,kw,ref", [
    ("relu6", {}, lambda a: np.clip(a, 0, 6)),
    ("hardtanh", {}, lambda a: np.clip(a, -1, 1)),
    ("hardtanh", {"min_val": -2.0, "max_val": 0.5}, lambda a: np.clip(a, -2, 0.5)),
    ("elu", {}, lambda a: np.where(a > 0, a, np.expm1(a))),
    ("elu", {"alpha": 0.3}, lambda a: np.where(a > 0, a, 0.3 * np.expm1(a))),
    ("selu", {}, lambda a: 1.0507009873554805 * np.where(a > 0, a, 1.6732632423543772 * np.expm1(a))),
    ("celu", {"alpha": 2.0}, lambda a: np.where(a > 0, a, 2.0 * np.expm1(a / 2.0))),
    ("mish", {}, lambda a: a * np.tanh(np.log1p(np.exp(a)))),
    ("hardswish", {}, lambda a: a * np.clip(a + 3, 0, 6) / 6),
    ("hardsigmoid", {}, lambda a: np.clip(a + 3, 0, 6) / 6),
])
def test_piecewise_activations(name, kw, ref):
    """relu6, hardtanh, elu, selu, celu, mish, hardswish, hardsigmoid: values against the
    formula and PyTorch, gradients against PyTorch and finite differences."""
    check_f(name, WIDE, ref=ref, **kw)


@pytest.mark.parametrize("name,points,kw", [
    ("relu6", [0.0, 6.0], {}), ("hardtanh", [-1.0, 1.0], {}), ("elu", [0.0], {"alpha": 0.5}),
    ("hardswish", [-3.0, 3.0], {}), ("hardsigmoid", [-3.0, 3.0], {}), ("selu", [0.0], {}),
])
def test_activation_gradients_at_kinks(name, points, kw):
    """At the kinks the gradient is PyTorch's (e.g. 0 at both ends of relu6, -0.5 at
    hardswish(-3)), not some other one-sided choice."""
    kink_grads_match_torch(name, points, **kw)


def test_large_inputs_stay_finite():
    """elu/selu/celu/mish of large positive and negative inputs: no overflow, no NaN gradient."""
    for name in ("elu", "selu", "celu", "mish"):
        x = dtrain.tensor([-1000.0, 1000.0], requires_grad=True)
        y = getattr(F, name)(x)
        y.sum().backward()
        assert np.isfinite(y.detach().numpy()).all() and np.isfinite(x.grad.numpy()).all(), name


@pytest.mark.parametrize("shape,n", [((4, 3, 5), 3), ((4, 3, 5), 1), ((4, 3), 3), ((5,), 1), ((2, 3, 2, 2), 3)])
def test_prelu(shape, n):
    """prelu with one shared slope or one per channel (dim 1): gradients for input and weight."""
    w = np.linspace(-0.5, 0.5, n)

    def ref(x, w):
        wb = w.reshape((n,) + (1,) * (len(shape) - 2)) if n > 1 else w
        return np.where(x > 0, x, wb * x)
    check_f("prelu", shape, w, ref=ref)


def test_activation_errors():
    """Bad arguments name the op and the values."""
    x = dtrain.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match=r"prelu: the weight has 2 parameters but the input of shape \[2, 3, 4\] "
                                         r"has 3 channels"):
        F.prelu(x, dtrain.ones(2))
    with pytest.raises(RuntimeError, match=r"prelu: weight must be a 0-D or 1-D Tensor, got shape \[1, 3\]"):
        F.prelu(x, dtrain.ones(1, 3))
    with pytest.raises(ValueError, match=r"hardtanh: min_val \(1.0\) must be less than max_val \(0.5\)"):
        F.hardtanh(x, 1.0, 0.5)
    with pytest.raises(ZeroDivisionError, match="celu: alpha cannot be 0"):
        F.celu(x, alpha=0.0)
    with pytest.raises(RuntimeError, match="elu: expected a floating-point input, got dtype int64"):
        F.elu(dtrain.tensor([1, 2]))


# ---- group_norm, rms_norm ---------------------------------------------------------------

def _np_group_norm(x, g, w=None, b=None, eps=1e-5):
    n, c = x.shape[:2]
    xg = x.reshape(n, g, -1)
    y = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + eps)).reshape(x.shape)
    pshape = (c,) + (1,) * (x.ndim - 2)
    return y * (1 if w is None else w.reshape(pshape)) + (0 if b is None else b.reshape(pshape))


@pytest.mark.parametrize("shape,groups", [((2, 6, 4), 3), ((2, 6, 4), 1), ((2, 6, 4), 6), ((3, 4), 2),
                                          ((2, 4, 3, 2), 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm(shape, groups, affine):
    """group_norm: statistics per (sample, group) over the group's channels and positions;
    per-channel weight and bias; values and gradients for input, weight and bias."""
    c = shape[1]
    params = ((c,), (c,)) if affine else ()
    check_call(lambda f, t, x, *wb: f.group_norm(x, groups, *wb, eps=1e-4), shape, *params,
               ref=lambda x, *wb: _np_group_norm(x, groups, *wb, eps=1e-4))


@pytest.mark.parametrize("shape,normalized", [((3, 4), (4,)), ((2, 3, 4), (3, 4)), ((2, 5), [5])])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("eps", [None, 1e-3])
def test_rms_norm(shape, normalized, affine, eps):
    """rms_norm over the last dims (no centering), eps defaulting to the dtype's epsilon."""
    k = len(normalized)
    axes = tuple(range(len(shape) - k, len(shape)))
    e = np.finfo(np.float64).eps if eps is None else eps

    def ref(x, w=1):
        return x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + e) * w
    params = (shape[len(shape) - k:],) if affine else ()
    check_call(lambda f, t, x, *w: f.rms_norm(x, normalized, *w, eps=eps), shape, *params, ref=ref)


def test_normalization_errors():
    """group_norm quotes the channel count and num_groups; shapes are checked with both named."""
    with pytest.raises(RuntimeError, match=r"number of channels 6 \(dim 1 of input shape \[2, 6, 4\]\) must be "
                                           r"divisible by num_groups=4"):
        F.group_norm(dtrain.randn(2, 6, 4), 4)
    with pytest.raises(RuntimeError, match=r"group_norm: expected weight of shape \[6\].*got \[3\]"):
        F.group_norm(dtrain.randn(2, 6, 4), 3, dtrain.ones(3))
    with pytest.raises(RuntimeError, match=r"at least 2 dimensions.*got shape \[6\]"):
        F.group_norm(dtrain.randn(6), 3)
    with pytest.raises(ValueError, match=r"more than 1 value per group, got input size \[1, 2\]"):
        F.group_norm(dtrain.randn(1, 2), 2)
    with pytest.raises(RuntimeError, match=r"rms_norm: input of shape \[2, 3\] does not end with normalized_shape "
                                           r"\[4\]"):
        F.rms_norm(dtrain.randn(2, 3), (4,))


# ---- channel dropout --------------------------------------------------------------------

@pytest.mark.parametrize("name,shape,channel_dims", [
    ("dropout1d", (50, 40, 6), 2), ("dropout1d", (400, 6), 1), ("dropout2d", (50, 40, 3, 2), 2),
    ("dropout3d", (50, 40, 2, 2, 2), 2), ("dropout3d", (400, 2, 3, 2), 1),
])
def test_channel_dropout(name, shape, channel_dims):
    """Whole channels are zeroed (per sample and channel, or per channel when unbatched) at
    rate about p; kept ones are scaled by 1/(1-p); the gradient is the same mask."""
    p = 0.3
    x = dtrain.ones(*shape, dtype=dtrain.float64, requires_grad=True)
    y = getattr(F, name)(x, p=p)
    out = y.detach().numpy()
    flat = out.reshape(shape[:channel_dims] + (-1,))
    assert (flat == flat[..., :1]).all(), "a channel was only partly dropped"
    assert set(np.unique(out)) <= {0.0, 1 / (1 - p)}
    assert abs((flat[..., 0] == 0).mean() - p) < 0.05
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), out)
    assert getattr(F, name)(x, p=p, training=False) is x


def test_channel_dropout_ranks():
    """As PyTorch: dropout1d refuses 4-D input; dropout2d warns on 3-D (taken as (N, C, L))
    and on other ranks."""
    with pytest.raises(RuntimeError, match="dropout1d: Expected 2D or 3D input, but received a 4D input"):
        F.dropout1d(dtrain.ones(2, 3, 4, 5))
    with pytest.warns(UserWarning, match="interpreted as shape \\(N, C, L\\)"):
        out = F.dropout2d(dtrain.ones(30, 20, 5), p=0.5).numpy()
    assert (out == out[..., :1]).all()
    with pytest.warns(UserWarning, match="Received a 5-D input to dropout2d"):
        F.dropout2d(dtrain.ones(2, 3, 2, 2, 2))
    with pytest.raises(ValueError, match="between 0 and 1, but got -0.1"):
        F.dropout3d(dtrain.ones(2, 3, 2, 2, 2), p=-0.1)


# ---- more losses ------------------------------------------------------------------------

REDUCE = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, (3,), (4, 3)])
def test_binary_cross_entropy(reduction, weight):
    """BCE on probabilities: weight (broadcast or full), each reduction, gradients for input
    and target."""
    g = np.random.default_rng(3)
    x, t = g.uniform(0.05, 0.95, (4, 3)), g.uniform(0, 1, (4, 3))
    w = None if weight is None else g.uniform(0.5, 1.5, weight)
    check_f("binary_cross_entropy", x, t, weight=w, reduction=reduction,
            ref=lambda a, b: REDUCE[reduction](-(b * np.log(a) + (1 - b) * np.log(1 - a)) * (1 if w is None else w)))


def test_binary_cross_entropy_at_0_and_1():
    """Probabilities of exactly 0 and 1: each log clamps at -100 (finite loss), and the
    input gradient is PyTorch's (x - t) / max(x (1 - x), 1e-12)."""
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.3])
    a = dtrain.tensor(x, requires_grad=True)
    loss = F.binary_cross_entropy(a, dtrain.tensor(t), reduction="sum")
    np.testing.assert_allclose(loss.item(), 200 - 0.3 * np.log(0.5) - 0.7 * np.log(0.5))
    loss.backward()
    if torch is not None:
        ta = torch.tensor(x, requires_grad=True)
        TF.binary_cross_entropy(ta, torch.tensor(t), reduction="sum").backward()
        np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy())


def test_binary_cross_entropy_errors():
    """Targets or inputs outside [0, 1], a target of another shape (both shapes named) and a
    weight that does not broadcast are refused."""
    x = dtrain.full((2, 3), 0.5)
    with pytest.raises(RuntimeError, match=r"all elements of target should be between 0 and 1, got values in "
                                           r"\[0.0, 2.0\]"):
        F.binary_cross_entropy(x, dtrain.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1"):
        F.binary_cross_entropy(x - 1, dtrain.zeros(2, 3))
    with pytest.raises(ValueError, match=r"target size \(\[3, 2\]\) that is different to the input size "
                                         r"\(\[2, 3\]\)"):
        F.binary_cross_entropy(x, dtrain.zeros(3, 2))
    with pytest.raises(ValueError, match=r"weight of shape \[2\] does not broadcast to the input's shape \[2, 3\]"):
        F.binary_cross_entropy(x, dtrain.zeros(2, 3), weight=dtrain.ones(2))


def _np_huber(d, delta):
    return np.where(np.abs(d) < delta, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("beta", [1.0, 0.4, 0.0])
def test_smooth_l1_loss(reduction, beta):
    """smooth_l1: quadratic below beta, linear above; beta = 0 is L1; each reduction."""
    def ref(a, b):
        d = a - b
        return REDUCE[reduction](np.abs(d) if beta == 0 else _np_huber(d, beta) / beta)
    check_f("smooth_l1_loss", WIDE, (4, 6), reduction=reduction, beta=beta, ref=ref)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("delta", [1.0, 2.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_huber_loss(reduction, delta, weighted):
    """huber: delta times smooth_l1 with beta = delta; with a weight, 'mean' is the plain mean
    of the weighted losses (as PyTorch)."""
    w = rand(4, 6, positive=True) if weighted else None
    check_f("huber_loss", WIDE, (4, 6), reduction=reduction, delta=delta, weight=w,
            ref=lambda a, b: REDUCE[reduction](_np_huber(a - b, delta) * (1 if w is None else w)))


def test_smooth_l1_huber_errors():
    """Negative beta and non-positive delta are refused; a broadcast target warns."""
    x = dtrain.randn(2, 3)
    with pytest.raises(RuntimeError, match="smooth_l1_loss: beta must be non-negative, got -1"):
        F.smooth_l1_loss(x, x, beta=-1)
    with pytest.raises(RuntimeError, match="huber_loss: delta must be positive, got 0"):
        F.huber_loss(x, x, delta=0)
    with pytest.warns(UserWarning, match=r"target size \(\[3\]\) that is different to the input size \(\[2, 3\]\)"):
        F.huber_loss(x, dtrain.randn(3))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    """kl_div of log-probabilities from probabilities (or log-probabilities): each reduction
    incl. 'batchmean' (the sum over the batch size); gradients for input and target."""
    g = np.random.default_rng(4)
    logp = np.log(g.dirichlet(np.ones(5), 4))
    q = g.dirichlet(np.ones(5), 4)
    red = dict(REDUCE, batchmean=lambda v: v.sum() / 4)[reduction]

    def ref(x, t):
        p = np.exp(t) if log_target else t
        return red(p * (np.log(p) - x))
    check_f("kl_div", logp, np.log(q) if log_target else q, reduction=reduction, log_target=log_target, ref=ref)


def test_kl_div_zero_target_and_warnings():
    """A zero target probability contributes 0 (not NaN); 'mean' warns as PyTorch does."""
    x = dtrain.tensor([[-1.0, -0.5]], requires_grad=True)
    loss = F.kl_div(x, dtrain.tensor([[0.0, 1.0]]), reduction="sum")
    np.testing.assert_allclose(loss.item(), 0.5)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, -1.0]])
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        F.kl_div(x, dtrain.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        F.kl_div(x, x, reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_cosine_embedding_loss(reduction, margin):
    """1 - cos for target 1, max(0, cos - margin) for -1; batched and one pair (1-D)."""
    y = np.array([1, -1, 1, -1, -1])

    def ref(a, b, t, m=margin):
        cos = (a * b).sum(-1) / np.sqrt(((a * a).sum(-1) + 1e-12) * ((b * b).sum(-1) + 1e-12))
        return REDUCE[reduction](np.where(t == 1, 1 - cos, np.maximum(cos - m, 0)))
    check_f("cosine_embedding_loss", (5, 4), (5, 4), y, margin=margin, reduction=reduction, ref=ref)
    check_f("cosine_embedding_loss", (4,), (4,), np.array(-1), margin=-0.9, reduction=reduction,
            ref=lambda a, b, t: ref(a, b, t, -0.9))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_margin_ranking_loss(reduction):
    """max(0, -y (x1 - x2) + margin) for each reduction."""
    y = np.array([1, -1, 1, -1, 1, 1])
    check_f("margin_ranking_loss", (6,), (6,), y, margin=0.5, reduction=reduction,
            ref=lambda a, b, t: REDUCE[reduction](np.maximum(-t * (a - b) + 0.5, 0)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("p,swap", [(2.0, False), (1.0, False), (3.0, True), (2.0, True)])
def test_triplet_margin_loss(reduction, p, swap):
    """max(0, d(a, p) - d(a, n) + margin) with the p-norm distance of a - b + eps; the swap
    takes min(d(a, n), d(p, n))."""
    def dist(a, b):
        return (np.abs(a - b + 1e-6) ** p).sum(-1) ** (1 / p)

    def ref(a, pos, neg):
        dn = np.minimum(dist(a, neg), dist(pos, neg)) if swap else dist(a, neg)
        return REDUCE[reduction](np.maximum(dist(a, pos) - dn + 1.5, 0))
    check_f("triplet_margin_loss", (6, 4), (6, 4), (6, 4), margin=1.5, p=p, swap=swap, reduction=reduction, ref=ref)


def test_margin_loss_errors():
    """Mismatched ranks name every shape; a 2-D target is refused."""
    x = dtrain.randn(4, 3)
    with pytest.raises(RuntimeError, match=r"1D target expects 2D input tensors, but found inputs with sizes "
                                           r"\[4, 3\] and \[3\]"):
        F.cosine_embedding_loss(x, dtrain.randn(3), dtrain.ones(4))
    with pytest.raises(RuntimeError, match="multi-target not supported"):
        F.cosine_embedding_loss(x, x, dtrain.ones(4, 3))
    with pytest.raises(RuntimeError, match=r"input1: \[4\], input2: \[4\], target: \[4, 1\]"):
        F.margin_ranking_loss(dtrain.randn(4), dtrain.randn(4), dtrain.ones(4, 1))
    with pytest.raises(RuntimeError, match="anchor 2D, positive 1D, and negative 2D"):
        F.triplet_margin_loss(x, dtrain.randn(3), x)


# ---- normalize, pairwise_distance, cosine_similarity ------------------------------------

def _np_norm(v, p, axis, keepdims=False):
    a = np.abs(v)
    if np.isinf(p):
        return (a.max if p > 0 else a.min)(axis=axis, keepdims=keepdims)
    return (a ** p).sum(axis=axis, keepdims=keepdims) ** (1 / p)


@pytest.mark.parametrize("p", [2.0, 1.0, 0.5, 3.0, float("inf"), -1.5])
@pytest.mark.parametrize("dim", [1, 0, -1])
def test_normalize(p, dim):
    """normalize divides by the p-norm along dim (clamped at eps): values and gradients."""
    check_f("normalize", (3, 4, 2), p=p, dim=dim, ref=lambda x: x / np.maximum(_np_norm(x, p, dim, True), 1e-12))


@pytest.mark.parametrize("p", [2.0, 1.0, 0.5, 3.0, float("inf")])
@pytest.mark.parametrize("keepdim", [False, True])
def test_pairwise_distance(p, keepdim):
    """pairwise_distance: the p-norm of x1 - x2 + eps along the last dim; a (D,) x2 broadcasts."""
    check_f("pairwise_distance", (5, 4), (5, 4), p=p, keepdim=keepdim,
            ref=lambda a, b: _np_norm(a - b + 1e-6, p, -1, keepdim))
    check_f("pairwise_distance", (5, 4), (4,), p=p, ref=lambda a, b: _np_norm(a - b + 1e-6, p, -1))


@pytest.mark.parametrize("shapes,dim", [(((5, 4), (5, 4)), 1), (((3, 1, 4), (2, 4)), -1), (((4, 3), (1, 3)), 0)])
def test_cosine_similarity(shapes, dim):
    """cosine_similarity along dim, with broadcasting inputs: values and gradients."""
    def ref(a, b):
        a, b = np.broadcast_arrays(a, b)
        return (a * b).sum(dim) / (np.linalg.norm(a, axis=dim) * np.linalg.norm(b, axis=dim))
    check_f("cosine_similarity", *shapes, dim=dim, ref=ref)


def test_norms_of_zero_vectors():
    """A zero vector normalizes to zero, its cosine similarity is 0, and its distance to
    itself (eps = 0) is 0, all with gradients of 0, never NaN, as PyTorch."""
    for fn in (lambda lib, z: lib.nn.functional.normalize(z * 1.0, dim=1),
               lambda lib, z: lib.nn.functional.cosine_similarity(z * 1.0, z + 1.0),
               lambda lib, z: lib.nn.functional.pairwise_distance(z * 1.0, z * 1.0, eps=0.0)):
        z = dtrain.zeros(2, 3, dtype=dtrain.float64, requires_grad=True)
        out = fn(dtrain, z)
        assert not out.detach().numpy().any()
        out.sum().backward()
        assert np.isfinite(z.grad.numpy()).all()
        if torch is not None:
            tz = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
            fn(torch, tz).sum().backward()
            np.testing.assert_allclose(z.grad.numpy(), tz.grad.numpy())


def test_distance_errors():
    """Shapes that do not broadcast are named."""
    with pytest.raises(RuntimeError, match=r"x1 of shape \[3, 4\] and x2 of shape \[2, 4\] cannot be broadcast"):
        F.cosine_similarity(dtrain.randn(3, 4), dtrain.randn(2, 4))
    with pytest.raises(RuntimeError, match=r"pairwise_distance: x1 of shape \[3, 4\] and x2 of shape \[3, 5\]"):
        F.pairwise_distance(dtrain.randn(3, 4), dtrain.randn(3, 5))
    with pytest.raises(IndexError, match="normalize: dimension out of range"):
        F.normalize(dtrain.randn(3, 4), dim=2)


def test_new_ops_keep_float32():
    """The new activations, norms, losses and distances keep float32 in float32, forward and backward."""
    x = dtrain.rand(4, 6, 3, requires_grad=True)
    y = dtrain.rand(4, 6, 3)
    outs = [F.relu6(x), F.elu(x), F.selu(x), F.celu(x), F.mish(x), F.hardswish(x), F.hardsigmoid(x),
            F.hardtanh(x), F.prelu(x, dtrain.full((6,), 0.25)), F.group_norm(x, 2), F.rms_norm(x, (3,)),
            F.dropout2d(x.unsqueeze(-1)), F.binary_cross_entropy(x, y), F.smooth_l1_loss(x, y),
            F.huber_loss(x, y), F.kl_div(x, y, reduction="batchmean"), F.normalize(x),
            F.pairwise_distance(x, y), F.cosine_similarity(x, y), F.triplet_margin_loss(x, y, y * 2),
            F.cosine_embedding_loss(x[:, :, 0], y[:, :, 0], dtrain.ones(4)),
            F.margin_ranking_loss(x[:, 0, 0], y[:, 0, 0], dtrain.ones(4))]
    for out in outs:
        assert out.dtype == dtrain.float32, out.grad_fn
        (out * 1.0).sum().backward()
    assert x.grad.dtype == dtrain.float32


def test_argument_type_errors():
    """Non-tensor arguments, a bad p, out=, a target that does not broadcast and a
    mis-shaped weight are refused with the op and the value named."""
    x = dtrain.randn(3, 4)
    with pytest.raises(TypeError, match="pairwise_distance: x2 must be a Tensor, got list"):
        F.pairwise_distance(x, [1.0, 2.0])
    with pytest.raises(TypeError, match="cosine_similarity: x1 must be a Tensor, got ndarray"):
        F.cosine_similarity(np.ones((3, 4)), x)
    with pytest.raises(TypeError, match="normalize: expected a Tensor input, got float"):
        F.normalize(1.0)
    with pytest.raises(ValueError, match="normalize: p must be a number \\(or inf\\), got 'fro'"):
        F.normalize(x, p="fro")
    with pytest.raises(TypeError, match="normalize: out= is not supported"):
        F.normalize(x, out=dtrain.empty(3, 4))
    with pytest.raises(TypeError, match="triplet_margin_loss: negative must be a Tensor, got NoneType"):
        F.triplet_margin_loss(x, x, None)
    with pytest.raises(TypeError, match="margin_ranking_loss: target must be a Tensor of 1 and -1, got int"):
        F.margin_ranking_loss(x[:, 0], x[:, 1], 1)
    with pytest.raises(TypeError, match="kl_div: target must be a Tensor, got float"):
        F.kl_div(x, 0.5, reduction="sum")
    with pytest.raises(RuntimeError, match=r"kl_div: target of shape \[2, 4\] does not broadcast with input of "
                                           r"shape \[3, 4\]"):
        F.kl_div(x, dtrain.rand(2, 4), reduction="sum")
    with pytest.raises(ValueError, match=r"huber_loss: weight must have the input's shape \[3, 4\], got \[4\]"):
        F.huber_loss(x, x, weight=dtrain.ones(4))
    with pytest.raises(RuntimeError, match=r"dropout2d: expected an input with channels, got shape \[5\]"):
        with pytest.warns(UserWarning, match="1-D input"):
            F.dropout2d(dtrain.ones(5))
