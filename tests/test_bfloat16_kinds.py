"""bfloat16 is floating wherever PyTorch says so. dtrain's bfloat16 is ml_dtypes' dtype, whose
NumPy kind is "V", not "f": a ``dtype.kind == "f"`` test takes it for a non-float (Module.to
refused it, max_pool padded it with an integer minimum, mean/attention/avg_pool rejected it,
scalar promotion and true division widened it to float32, its sums ran in 8 bits). Each test
compares values with torch where torch is installed."""
import numpy as np
import pytest

import dtrain
import dtrain.comm as dist
from dtrain import nn
from dtrain.autograd import detect_anomaly
from dtrain.tensor import dtypes

bf16 = dtrain.bfloat16
RNG = np.random.default_rng(0)


def torch_bf16(array, grad=False):
    torch = pytest.importorskip("torch")
    return torch.tensor(array).to(torch.bfloat16).requires_grad_(grad)


def ours_bf16(array, grad=False):
    return dtrain.tensor(array).to(bf16).requires_grad_(grad)


def values(t):
    """float32 NumPy values of a dtrain or torch tensor (bfloat16 widens exactly)."""
    if type(t).__module__.startswith("torch"):
        return t.detach().float().numpy()
    return t.detach().to(dtrain.float32).numpy()


def assert_as_torch(ours, theirs, ulps=0):
    """Same bfloat16 dtype as torch's; values equal, or within ``ulps`` bfloat16 steps."""
    assert ours.dtype == bf16, ours.dtype
    assert str(theirs.dtype) == "torch.bfloat16", theirs.dtype
    a, b = values(ours), values(theirs)
    np.testing.assert_allclose(a, b, rtol=ulps * 2.0 ** -7, atol=ulps * 2.0 ** -7)


def test_dtypes_helpers_count_bfloat16_as_floating():
    """The helpers every site uses: bfloat16 floating and differentiable, kind "V" nonetheless."""
    assert bf16.kind == "V"
    assert dtypes.is_floating(bf16) and dtypes.is_differentiable(bf16)
    assert not dtypes.is_floating(dtrain.int64) and not dtypes.is_floating(np.dtype("complex64"))


def test_module_to_bfloat16_and_back_converts_floats_only():
    """Module.to(bfloat16) casts parameters and float buffers and leaves BatchNorm's int64
    num_batches_tracked alone; .to(float32) brings them back, the values torch's."""
    torch = pytest.importorskip("torch")
    w, b = RNG.standard_normal((3, 4), np.float32), RNG.standard_normal(3, np.float32)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    for m in (model, ref):
        m[0].weight.data.copy_(dtrain.tensor(w) if m is model else torch.tensor(w))
        m[0].bias.data.copy_(dtrain.tensor(b) if m is model else torch.tensor(b))
    assert model.to(bf16) is model
    ref.to(torch.bfloat16)
    ours, theirs = model.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name].dtype.name == str(theirs[name].dtype).removeprefix("torch."), name
        np.testing.assert_array_equal(values(ours[name]), values(theirs[name]), err_msg=name)
    assert ours["1.num_batches_tracked"].dtype == dtrain.int64
    assert model[0].weight.dtype == bf16 and isinstance(model[0].weight, nn.Parameter)
    model.to(dtrain.float32)
    ref.to(torch.float32)
    for name, t in model.state_dict().items():
        assert t.dtype == (dtrain.int64 if name.endswith("num_batches_tracked") else dtrain.float32), name
        np.testing.assert_array_equal(t.numpy(), ref.state_dict()[name].numpy(), err_msg=name)


def test_module_to_an_integer_dtype_is_still_refused():
    with pytest.raises(TypeError, match="floating point or complex dtypes, but got desired dtype=int64"):
        nn.Linear(2, 2).to(dtrain.int64)


def test_linear_forward_and_backward_in_bfloat16_as_torch():
    """A bfloat16 Linear returns bfloat16 (ml_dtypes' @ returns float32), the product and bias
    rounded once; gradients as torch's, the bias gradient summed in float32."""
    torch = pytest.importorskip("torch")
    x, w, b = (RNG.standard_normal(s, np.float32) for s in ((6, 4), (3, 4), (3,)))
    ours = [ours_bf16(a, True) for a in (x, w, b)]
    theirs = [torch_bf16(a, True) for a in (x, w, b)]
    y = nn.functional.linear(*ours)
    ty = torch.nn.functional.linear(*theirs)
    assert_as_torch(y, ty)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    for o, t in zip(ours, theirs):
        assert_as_torch(o.grad, t.grad)


def test_optimizer_step_on_bfloat16_parameters_as_torch():
    """Adam keeps exp_avg / exp_avg_sq in the parameter's bfloat16 and step in float32 (as
    torch); the updated values within a bfloat16 step of torch's; a float32 state dict
    loaded into it is cast to bfloat16."""
    torch = pytest.importorskip("torch")
    w = RNG.standard_normal((3, 4), np.float32)
    p, tp = nn.Parameter(ours_bf16(w)), torch.nn.Parameter(torch_bf16(w))
    opt, topt = dtrain.optim.Adam([p], lr=0.01), torch.optim.Adam([tp], lr=0.01)
    for _ in range(2):
        (p * p).sum().backward()
        (tp * tp).sum().backward()
        opt.step()
        topt.step()
    assert {k: v.dtype.name for k, v in opt.state[p].items()} == {
        k: str(v.dtype).removeprefix("torch.") for k, v in topt.state[tp].items()}
    assert_as_torch(p, tp, ulps=1)
    assert_as_torch(opt.state[p]["exp_avg"], topt.state[tp]["exp_avg"], ulps=1)
    q = nn.Parameter(dtrain.tensor(w))
    opt32 = dtrain.optim.Adam([q], lr=0.01)
    (q * q).sum().backward()
    opt32.step()
    opt.load_state_dict(opt32.state_dict())
    assert opt.state[p]["exp_avg"].dtype == bf16 and opt.state[p]["step"].dtype == dtrain.float32


def test_max_pool_pads_bfloat16_with_minus_infinity():
    """Padding is -inf for bfloat16 as for float32 (it asked iinfo of kind "V" and failed):
    all-negative inputs keep their maxima at the borders."""
    torch = pytest.importorskip("torch")
    x = -1 - np.abs(RNG.standard_normal((1, 2, 5, 5), np.float32))
    y = nn.functional.max_pool2d(ours_bf16(x), 2, stride=2, padding=1)
    assert_as_torch(y, torch.nn.functional.max_pool2d(torch_bf16(x), 2, stride=2, padding=1))
    assert (values(y) < -1).all()


@pytest.mark.parametrize("name, call", [
    ("avg_pool2d", lambda F, x: F.avg_pool2d(x, 2)),
    ("adaptive_avg_pool2d", lambda F, x: F.adaptive_avg_pool2d(x, 3)),
    ("interpolate bilinear", lambda F, x: F.interpolate(x, scale_factor=2, mode="bilinear")),
])
def test_floating_only_pooling_and_upsampling_take_bfloat16(name, call):
    """Ops that refused a non-floating input refused bfloat16; now its result is torch's."""
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((1, 2, 6, 6), np.float32)
    assert_as_torch(call(nn.functional, ours_bf16(x)), call(torch.nn.functional, torch_bf16(x)), ulps=1)


def test_long_bfloat16_windows_sum_in_float32():
    """avg_pool over 1000-wide windows and a bilinear resize: float32 sums and weights,
    rounded once, as torch (ml_dtypes' 8-bit running sum was off by a third)."""
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((1, 2, 3000), np.float32) + 2
    assert_as_torch(nn.functional.avg_pool1d(ours_bf16(x), 1000), torch.nn.functional.avg_pool1d(torch_bf16(x), 1000),
                    ulps=1)
    x = RNG.standard_normal((1, 2, 17, 13), np.float32)
    assert_as_torch(nn.functional.interpolate(ours_bf16(x), size=(40, 29), mode="bilinear", align_corners=True),
                    torch.nn.functional.interpolate(torch_bf16(x), size=(40, 29), mode="bilinear", align_corners=True),
                    ulps=1)


ROWS = RNG.standard_normal((4, 4096), np.float32)
CLASSES = np.arange(4) * 1000


@pytest.mark.parametrize("name, f", [
    ("softmax", lambda m, F, t: F.softmax(t(ROWS), -1)),
    ("log_softmax", lambda m, F, t: F.log_softmax(t(ROWS), -1)),
    ("cross_entropy", lambda m, F, t: F.cross_entropy(t(ROWS), m.tensor(CLASSES))),
    ("nll_loss", lambda m, F, t: F.nll_loss(t(ROWS.T), m.tensor(np.arange(4096) % 4))),
    ("layer_norm", lambda m, F, t: F.layer_norm(t(ROWS + 3), (4096,))),
    ("rms_norm, float32's eps", lambda m, F, t: F.rms_norm(t(ROWS * 1e-3), (4096,))),
    ("group_norm", lambda m, F, t: F.group_norm(t(ROWS.reshape(1, 8, 2048) + 3), 2)),
    ("cumsum", lambda m, F, t: m.cumsum(t(np.abs(ROWS)), 1)),
])
def test_long_rows_accumulate_in_float32_as_torch(name, f):
    """Ops whose sums ran in ml_dtypes' 8 bits (softmax was off by 137%, layer_norm failed in
    einsum) take float32 math and round once, as torch's CPU kernels (fp32_math)."""
    torch = pytest.importorskip("torch")
    assert_as_torch(f(dtrain, nn.functional, ours_bf16), f(torch, torch.nn.functional, torch_bf16), ulps=2)


def test_batch_norm_in_bfloat16_updates_its_bfloat16_running_stats():
    """batch_norm takes float32 math and still updates the module's bfloat16 running stats in
    place (float32 copies would have dropped the update), all as torch's."""
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((4096, 8), np.float32) + 3
    ours, theirs = nn.BatchNorm1d(8).to(bf16), torch.nn.BatchNorm1d(8).to(torch.bfloat16)
    assert_as_torch(ours(ours_bf16(x)), theirs(torch_bf16(x)), ulps=2)
    assert_as_torch(ours.running_mean, theirs.running_mean, ulps=1)
    assert_as_torch(ours.running_var, theirs.running_var, ulps=1)
    assert abs(float(values(ours.running_mean).mean()) - 0.3) < 0.01  # 0.1 * the batch mean of about 3


def test_attention_with_a_bfloat16_float_mask_as_torch():
    """scaled_dot_product_attention takes bfloat16 q/k/v and a bfloat16 additive mask (it
    refused both), returns bfloat16, values and gradient within a bfloat16 step or two of
    torch's (the softmax runs in float32 here)."""
    torch = pytest.importorskip("torch")
    q, mask = RNG.standard_normal((1, 2, 4, 8), np.float32), RNG.standard_normal((4, 4), np.float32)
    mask[0, 1:] = -np.inf
    ours, theirs = ours_bf16(q, True), torch_bf16(q, True)
    y = nn.functional.scaled_dot_product_attention(ours, ours, ours, attn_mask=ours_bf16(mask))
    ty = torch.nn.functional.scaled_dot_product_attention(theirs, theirs, theirs, attn_mask=torch_bf16(mask))
    assert_as_torch(y, ty, ulps=2)
    y.sum().backward()
    ty.sum().backward()
    assert_as_torch(ours.grad, theirs.grad, ulps=4)


def test_anomaly_mode_catches_a_nan_in_a_bfloat16_gradient():
    """The finite check covered kinds "f" and "c" only: a bfloat16 NaN passed silently."""
    x = ours_bf16(np.array([0.0, 4.0], np.float32), True)
    with detect_anomaly():
        y = x.sqrt().sum()
        with pytest.raises(RuntimeError, match="Function 'SqrtBackward' returned nan or inf values in its 0th"):
            y.backward()


def test_all_reduce_of_bfloat16_keeps_bfloat16(monkeypatch):
    """all_reduce (AVG too) takes bfloat16 (it refused it: MPI has no bfloat16 type; the comm
    layer reduces a float32 copy and rounds back once, tests/comm/test_comm_bfloat16.py at
    2 and 4 ranks): in a world of one the values and the dtype stay."""
    from comm_helpers import clean_env
    if dist.is_initialized():
        dist.destroy_process_group()
    monkeypatch.setattr("os.environ", clean_env())
    dist.init_process_group()
    try:
        t = ours_bf16(np.array([1.0, 2.5], np.float32))
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
        assert t.dtype == bf16
        np.testing.assert_array_equal(t.to(dtrain.float32).numpy(), [1.0, 2.5])
    finally:
        dist.destroy_process_group()


def _both(f):
    torch = pytest.importorskip("torch")
    return f(dtrain, ours_bf16), f(torch, torch_bf16)


@pytest.mark.parametrize("name, f", [
    ("0-d float32 does not promote", lambda m, t: t([1.5, -2.0]) + m.tensor(0.25)),
    ("0-d float64 does not promote", lambda m, t: t([1.5, -2.0]) * m.tensor(3.0, dtype=m.float64)),
    ("0-d bfloat16 promotes int64", lambda m, t: m.tensor([1, 2]) + t(np.float32(0.5))),
    ("true division stays bfloat16", lambda m, t: t([1.0, 3.0]) / 3),
    ("sqrt stays bfloat16", lambda m, t: m.sqrt(t([2.0, 9.0]))),
    ("lerp", lambda m, t: m.lerp(t([0.0, 1.0]), t([2.0, 5.0]), 0.25)),
    ("sum accumulates in float32", lambda m, t: t(np.ones(10000, np.float32)).sum()),
    ("mean", lambda m, t: t(np.arange(300, dtype=np.float32)).mean()),
    ("logsumexp", lambda m, t: m.logsumexp(t(np.linspace(0, 3, 500, dtype=np.float32)), 0)),
    ("vector norm", lambda m, t: t(np.full(1000, 0.5, np.float32)).norm()),
    ("soft-target cross_entropy", lambda m, t: m.nn.functional.cross_entropy(
        t([[1.0, 2.0, 0.5]]), t([[0.25, 0.5, 0.25]]))),
    ("cosine_similarity", lambda m, t: m.nn.functional.cosine_similarity(t([[1.0, 2.0]]), t([[2.0, 1.0]]))),
])
def test_bfloat16_results_keep_bfloat16_as_torch(name, f):
    """Dtype and value as torch's (these widened bfloat16 to float32, refused it, or summed in 8 bits)."""
    ours, theirs = _both(f)
    assert_as_torch(ours, theirs, ulps=1)


def test_bfloat16_repr_and_random_dtype_as_torch():
    """repr prints bfloat16 like float32 (4 decimals, "1." for whole numbers); randn/rand
    draw bfloat16; bfloat16 can be the default dtype, as in torch."""
    assert repr(ours_bf16(np.array([1.5, 2.0, 3.14159], np.float32))) == \
        "tensor([1.5000, 2.0000, 3.1406], dtype=dtrain.bfloat16)"
    assert repr(ours_bf16(np.array([1.0, 2.0], np.float32))) == "tensor([1., 2.], dtype=dtrain.bfloat16)"
    assert dtrain.randn(3, dtype=bf16).dtype == bf16 and dtrain.rand(2, 2, dtype=bf16).dtype == bf16
    assert 0 <= values(dtrain.rand(100, dtype=bf16)).min() and values(dtrain.rand(100, dtype=bf16)).max() <= 1
    dtrain.set_default_dtype(bf16)
    try:
        assert dtrain.get_default_dtype() == bf16 and dtrain.tensor([1.5]).dtype == bf16
    finally:
        dtrain.set_default_dtype(dtrain.float32)


def test_a_list_of_bfloat16_scalars_makes_a_tensor():
    """dtrain.tensor of bfloat16 0-d tensors infers a floating dtype (it said it could not infer
    one): the default dtype, dtrain's rule for float16 and float64 elements too (torch keeps the
    elements' dtype)."""
    t = dtrain.tensor([ours_bf16(np.float32(1.5)), ours_bf16(np.float32(-2.0))])
    assert t.dtype == dtrain.get_default_dtype()
    np.testing.assert_array_equal(t.numpy(), [1.5, -2.0])


def test_a_bfloat16_state_dict_saves_and_loads_weights_only():
    """save wrote bfloat16 (kind "V") as a pickled whole object, which a weights-only load
    refuses; it is stored as its uint16 bits, tagged, and loads back bit for bit, as torch."""
    import io
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(bf16)
    state = {**model.state_dict(), "array": np.arange(3, dtype=np.float32).astype(bf16)}
    buf = io.BytesIO()
    dtrain.save(state, buf)
    buf.seek(0)
    loaded = dtrain.load(buf)
    assert list(loaded) == list(state)
    for name, t in state.items():
        assert loaded[name].dtype == t.dtype, name
        bits = (lambda a: np.asarray(a if isinstance(a, np.ndarray) else a.numpy()).reshape(-1).view(np.uint8))
        np.testing.assert_array_equal(bits(loaded[name]), bits(t), err_msg=name)


def test_a_bfloat16_tag_over_another_dtype_is_refused():
    """The tag is trusted only over uint16 bits: a crafted one over float32 (checksum
    recomputed) is a CheckpointError naming both."""
    from test_checkpoint_untrusted import assert_refused, repack, saved_bytes, unpack
    meta, arrays = unpack(saved_bytes({"x": ours_bf16(np.ones(2, np.float32))}))
    (pair,) = meta["structure"]["dict"]
    assert pair[1]["dtype"] == "bfloat16" and arrays[f"a{pair[1]['tensor']}"].dtype == np.uint16
    arrays[f"a{pair[1]['tensor']}"] = np.ones(2, np.float32)
    assert_refused(repack(meta, arrays), r"the dtype tag 'bfloat16' over an array of dtype float32: dtrain tags "
                                         r"only bfloat16, stored as uint16")
