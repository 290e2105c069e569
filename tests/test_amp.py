"""Mixed precision (dtrain.amp): autocast casts by PyTorch's op lists and gives PyTorch's
dtypes, values and gradients (torch's CPU autocast from the same inputs); training under
bfloat16 autocast tracks float32; GradScaler skips exactly the steps with an inf or a NaN,
adapts its scale as torch's GradScaler does, agrees across ranks, and refuses misuse."""
import sys
import warnings

import numpy
import pytest

import dtrain
import dtrain.nn.functional as F
from comm_helpers import assert_all_checks_passed, clean_env, require_mpi, run

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (pip install dtrain[bf16])")

BF16 = dtrain.bfloat16
# one bfloat16 rounding is 2**-9 relative; a product's output and its operands are each rounded
RTOL = 2 ** -5


def _arrays(shapes, seed):
    rng = numpy.random.default_rng(seed)
    return [rng.standard_normal(s).astype(numpy.float32) for s in shapes]


def _both(arrays, low_inputs, grad):
    """The same values as dtrain and torch tensors: float32 leaves, or bfloat16 copies."""
    d = [dtrain.tensor(a, requires_grad=grad) for a in arrays]
    t = [torch.tensor(a, requires_grad=grad) for a in arrays]
    if low_inputs:
        d, t = [x.to(BF16) for x in d], [x.bfloat16() for x in t]
    return d, t


def _close(ours, theirs, rtol=RTOL):
    theirs = theirs.detach().float().numpy()
    ours = numpy.asarray(ours.detach().float().numpy())
    numpy.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * max(1.0, float(numpy.abs(theirs).max())))


T6 = numpy.array([0, 2, 5, 1])
# name: (dtrain op, torch op, input shapes); both ops take the tensors positionally
OPS = {
    "linear": (F.linear, TF.linear, [(4, 8), (6, 8), (6,)]),
    "matmul": (dtrain.matmul, torch.matmul, [(2, 4, 8), (8, 5)]),
    "mm": (dtrain.mm, torch.mm, [(4, 8), (8, 5)]),
    "bmm": (dtrain.bmm, torch.bmm, [(2, 4, 8), (2, 8, 3)]),
    "addmm": (dtrain.addmm, torch.addmm, [(4, 5), (4, 8), (8, 5)]),
    "baddbmm": (dtrain.baddbmm, torch.baddbmm, [(2, 4, 3), (2, 4, 8), (2, 8, 3)]),
    "einsum": (lambda a, b: dtrain.einsum("bij,bjk->bik", a, b), lambda a, b: torch.einsum("bij,bjk->bik", a, b),
               [(2, 4, 8), (2, 8, 3)]),
    "conv1d": (F.conv1d, TF.conv1d, [(2, 3, 10), (4, 3, 3), (4,)]),
    "conv2d": (F.conv2d, TF.conv2d, [(2, 3, 6, 6), (4, 3, 3, 3), (4,)]),
    "conv_transpose2d": (F.conv_transpose2d, TF.conv_transpose2d, [(2, 3, 5, 5), (3, 4, 3, 3), (4,)]),
    "scaled_dot_product_attention": (F.scaled_dot_product_attention, TF.scaled_dot_product_attention,
                                     [(2, 2, 5, 4)] * 3),
    "prelu": (F.prelu, TF.prelu, [(4, 8), (1,)]),
    "dot": (dtrain.dot, torch.dot, [(8,), (8,)]),
    "outer": (dtrain.outer, torch.outer, [(4,), (5,)]),
    "mse_loss": (F.mse_loss, TF.mse_loss, [(4, 6), (4, 6)]),
    "l1_loss": (F.l1_loss, TF.l1_loss, [(4, 6), (4, 6)]),
    "smooth_l1_loss": (F.smooth_l1_loss, TF.smooth_l1_loss, [(4, 6), (4, 6)]),
    "huber_loss": (F.huber_loss, TF.huber_loss, [(4, 6), (4, 6)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, dtrain.tensor(T6)), lambda x: TF.cross_entropy(x, torch.tensor(T6)),
                      [(4, 6)]),
    "nll_loss": (lambda x: F.nll_loss(x, dtrain.tensor(T6)), lambda x: TF.nll_loss(x, torch.tensor(T6)), [(4, 6)]),
    "kl_div": (lambda a, b: F.kl_div(a, b.abs(), reduction="batchmean"),
               lambda a, b: TF.kl_div(a, b.abs(), reduction="batchmean"), [(4, 6), (4, 6)]),
    "binary_cross_entropy_with_logits": (F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits,
                                         [(4, 6), (4, 6)]),
    "binary_cross_entropy": (lambda a, b: F.binary_cross_entropy(a.sigmoid(), b.sigmoid()),
                             lambda a, b: TF.binary_cross_entropy(a.sigmoid(), b.sigmoid()), [(4, 6), (4, 6)]),
    "cosine_embedding_loss": (lambda a, b: F.cosine_embedding_loss(a, b, dtrain.tensor([1.0, -1.0, 1.0, -1.0])),
                              lambda a, b: TF.cosine_embedding_loss(a, b, torch.tensor([1.0, -1.0, 1.0, -1.0])),
                              [(4, 6), (4, 6)]),
    "margin_ranking_loss": (lambda a, b: F.margin_ranking_loss(a, b, dtrain.tensor([1.0, -1.0, 1.0, -1.0])),
                            lambda a, b: TF.margin_ranking_loss(a, b, torch.tensor([1.0, -1.0, 1.0, -1.0])),
                            [(4,), (4,)]),
    "triplet_margin_loss": (F.triplet_margin_loss, TF.triplet_margin_loss, [(4, 6)] * 3),
    "prod": (lambda x: x.prod(dim=1), lambda x: x.prod(dim=1), [(4, 3)]),
    "softmax": (lambda x: F.softmax(x, dim=-1), lambda x: TF.softmax(x, dim=-1), [(4, 6)]),
    "log_softmax": (lambda x: F.log_softmax(x, dim=-1), lambda x: TF.log_softmax(x, dim=-1), [(4, 6)]),
    "layer_norm": (lambda x: F.layer_norm(x, (6,)), lambda x: TF.layer_norm(x, (6,)), [(4, 6)]),
    "group_norm": (lambda x: F.group_norm(x, 2), lambda x: TF.group_norm(x, 2), [(4, 6, 3)]),
    "batch_norm": (lambda x: F.batch_norm(x, None, None, training=True),
                   lambda x: TF.batch_norm(x, None, None, training=True), [(8, 6)]),
    "sum": (lambda x: x.sum(), lambda x: x.sum(), [(64, 64)]),
    "mean": (lambda x: x.mean(dim=0), lambda x: x.mean(dim=0), [(64, 8)]),
}


@pytest.mark.parametrize("low_inputs", [False, True], ids=["float32_inputs", "bfloat16_inputs"])
@pytest.mark.parametrize("name", list(OPS))
def test_op_dtype_and_values_match_torch_cpu_autocast(name, low_inputs):
    """Under autocast("cpu", bfloat16), each op's output dtype is torch's for the same inputs,
    and its values agree within bfloat16's rounding."""
    ours_op, torch_op, shapes = OPS[name]
    d, t = _both(_arrays(shapes, seed=len(name)), low_inputs, grad=False)
    with dtrain.autocast("cpu", dtype=BF16), torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = ours_op(*d), torch_op(*t)
    assert ours.dtype.name == str(theirs.dtype).split(".")[1], (name, ours.dtype, theirs.dtype)
    _close(ours, theirs)


@pytest.mark.parametrize("name", ["linear", "matmul", "bmm", "addmm", "einsum", "conv2d", "conv_transpose2d",
                                  "scaled_dot_product_attention", "layer_norm", "cross_entropy", "mse_loss"])
def test_gradients_are_float32_and_match_torch(name):
    """The casts are differentiable: float32 leaves get float32 gradients, torch's within
    bfloat16's rounding (the weighted sum makes every output element matter)."""
    ours_op, torch_op, shapes = OPS[name]
    d, t = _both(_arrays(shapes, seed=7), low_inputs=False, grad=True)
    with dtrain.autocast("cpu"), torch.autocast("cpu"):
        ours, theirs = ours_op(*d), torch_op(*t)
    weights = _arrays([tuple(theirs.shape)], seed=8)[0]
    (ours.float() * dtrain.tensor(weights)).sum().backward()
    (theirs.float() * torch.tensor(weights)).sum().backward()
    for a, b in zip(d, t):
        assert a.grad.dtype == dtrain.float32
        _close(a.grad, b.grad, rtol=2 ** -4)


def test_float16_on_the_cpu_matches_torch():
    """autocast("cpu", dtype=float16) runs linear in float16, as torch's does."""
    d, t = _both(_arrays([(4, 8), (6, 8)], seed=3), low_inputs=False, grad=False)
    with dtrain.autocast("cpu", dtype=dtrain.float16), torch.autocast("cpu", dtype=torch.float16):
        ours, theirs = F.linear(*d), TF.linear(*t)
    assert ours.dtype == dtrain.float16 and theirs.dtype == torch.float16
    _close(ours, theirs, rtol=2 ** -9)


def test_default_dtypes_nesting_decorator_and_exceptions():
    """Default dtype bfloat16 on "cpu"; a nested enabled=False region runs in float32; the
    decorator form opens the region per call; an exception closes it."""
    x, w = dtrain.randn(3, 4), dtrain.randn(5, 4)
    assert dtrain.get_autocast_dtype("cpu") == BF16 and dtrain.get_autocast_dtype("cuda") == dtrain.float16
    with dtrain.autocast("cpu"):
        assert dtrain.is_autocast_enabled("cpu") and F.linear(x, w).dtype == BF16
        with dtrain.autocast("cpu", enabled=False):
            assert F.linear(x, w).dtype == dtrain.float32 and not dtrain.is_autocast_enabled("cpu")
        assert F.linear(x, w).dtype == BF16
    assert F.linear(x, w).dtype == dtrain.float32 and not dtrain.is_autocast_enabled("cpu")

    @dtrain.amp.autocast("cpu")
    def forward(a):
        return F.linear(a, w)
    assert forward(x).dtype == BF16 and not dtrain.is_autocast_enabled("cpu")
    with pytest.raises(ZeroDivisionError):
        with dtrain.autocast("cpu"):
            1 / 0
    assert not dtrain.is_autocast_enabled("cpu") and F.linear(x, w).dtype == dtrain.float32


def test_float64_is_never_cast():
    """As torch: float64 tensors are not autocast-eligible."""
    x, w = dtrain.randn(3, 4, dtype=dtrain.float64), dtrain.randn(5, 4, dtype=dtrain.float64)
    with dtrain.autocast("cpu"):
        assert F.linear(x, w).dtype == dtrain.float64


def test_cast_cache_reuses_a_weight_cast_and_survives_backward():
    """A weight used twice in a region is cast once; a second forward + backward in the same
    region (after the first backward freed its graph) gives the same gradient as the first."""
    w = dtrain.randn(4, 4, requires_grad=True)
    x = dtrain.randn(2, 4)
    grads = []
    with dtrain.autocast("cpu"):
        for _ in range(2):
            a, b = F.linear(x, w), F.linear(x, w)
            assert a.grad_fn.inputs[0].grad_fn.inputs[1] is b.grad_fn.inputs[0].grad_fn.inputs[1]
            (a.float().sum() + b.float().sum()).backward()
            grads.append(w.grad.numpy().copy())
            w.grad = None
    numpy.testing.assert_array_equal(grads[0], grads[1])


def _mlp_losses(use_autocast, steps=50):
    dtrain.manual_seed(0)
    model = dtrain.nn.Sequential(dtrain.nn.Linear(20, 64), dtrain.nn.ReLU(), dtrain.nn.Linear(64, 64),
                                 dtrain.nn.GELU(), dtrain.nn.Linear(64, 5))
    opt = dtrain.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = numpy.random.default_rng(0)
    x = dtrain.tensor(rng.standard_normal((64, 20)).astype(numpy.float32))
    y = dtrain.tensor(rng.integers(0, 5, 64))
    losses = []
    for _ in range(steps):
        with dtrain.autocast("cpu", enabled=use_autocast):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return numpy.array(losses)


def _gpt_losses(use_autocast, steps=50):
    sys.path.insert(0, "examples")
    try:
        from gpt import GPT
    finally:
        sys.path.remove("examples")
    dtrain.manual_seed(0)
    model = GPT(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32)
    opt = dtrain.optim.AdamW(model.parameters(), lr=3e-3)
    g = dtrain.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        idx = dtrain.randint(0, 20, (4, 16), generator=g)
        with dtrain.autocast("cpu", enabled=use_autocast):
            logits, loss = model(idx, (idx + 1) % 20)
        assert logits.dtype == (BF16 if use_autocast else dtrain.float32)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return numpy.array(losses)


@pytest.mark.parametrize("losses", [_mlp_losses, _gpt_losses], ids=["mlp", "gpt"])
def test_50_steps_under_bfloat16_stay_within_1e_2_of_float32(losses):
    """The loss trajectory of 50 training steps under autocast bfloat16 stays within 1e-2
    relative of float32's (and training does reduce the loss)."""
    full, mixed = losses(False), losses(True)
    assert full[-1] < 0.7 * full[0]
    numpy.testing.assert_allclose(mixed, full, rtol=1e-2)


# ---- GradScaler ------------------------------------------------------------------------------

BAD_STEPS = {3: float("inf"), 4: float("inf"), 9: float("nan"), 15: float("-inf")}


def _scaler_run(make_scaler, framework, steps=20, scaler=None):
    """Train a Linear(4, 3) (same weights in both frameworks) with a scaler; at the steps of
    BAD_STEPS plant that value in one gradient. Returns (scales after each update, weights
    after each step, the scaler)."""
    nn, optim = (dtrain.nn, dtrain.optim) if framework is dtrain else (torch.nn, torch.optim)
    w0, b0, x, y = _arrays([(3, 4), (3,), (8, 4), (8, 3)], seed=11)
    model = nn.Linear(4, 3)
    with framework.no_grad():
        model.weight.copy_(framework.tensor(w0))
        model.bias.copy_(framework.tensor(b0))
    opt = optim.SGD(model.parameters(), lr=0.1)
    scaler = scaler or make_scaler()
    scales, weights = [], []
    for i in range(steps):
        loss = ((model(framework.tensor(x)) - framework.tensor(y)) ** 2).mean()
        opt.zero_grad()
        scaler.scale(loss).backward()
        if i in BAD_STEPS:
            with framework.no_grad():
                model.weight.grad[1, 2] = BAD_STEPS[i]
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        weights.append(model.weight.detach().numpy().copy())
    return scales, weights, scaler


@pytest.mark.parametrize("factors", [(2.0, 0.5, 3), (1.7, 0.3, 2)], ids=["default_factors", "odd_factors"])
def test_grad_scaler_skips_the_bad_steps_and_follows_torchs_scale(factors):
    """The step is skipped exactly at the planted inf/NaN (weights unchanged there, changed
    elsewhere); the scale after every update equals torch.amp.GradScaler's, and the weights
    torch's, for the same sequence."""
    growth, backoff, interval = factors
    kw = dict(init_scale=2.0 ** 10, growth_factor=growth, backoff_factor=backoff, growth_interval=interval)
    scales, weights, _ = _scaler_run(lambda: dtrain.amp.GradScaler("cpu", **kw), dtrain)
    t_scales, t_weights, _ = _scaler_run(lambda: torch.amp.GradScaler("cpu", **kw), torch)
    assert scales == t_scales
    before = [_arrays([(3, 4)], seed=11)[0], *weights[:-1]]
    skipped = [i for i, (w, prev) in enumerate(zip(weights, before)) if numpy.array_equal(w, prev)]
    assert skipped == sorted(BAD_STEPS)
    numpy.testing.assert_allclose(numpy.array(weights), numpy.array(t_weights), rtol=1e-5, atol=1e-6)


def test_grad_scaler_state_dict_round_trip():
    """state_dict has torch's keys and values; a new scaler loading it continues the same
    trajectory as the one that saved it."""
    kw = dict(init_scale=2.0 ** 8, growth_interval=3)
    _, _, ours = _scaler_run(lambda: dtrain.amp.GradScaler("cpu", **kw), dtrain, steps=8)
    _, _, theirs = _scaler_run(lambda: torch.amp.GradScaler("cpu", **kw), torch, steps=8)
    sd = ours.state_dict()
    assert sd == theirs.state_dict()
    loaded = dtrain.amp.GradScaler("cpu")
    loaded.load_state_dict(sd)
    assert loaded.state_dict() == sd
    scales_a, _, _ = _scaler_run(None, dtrain, steps=6, scaler=ours)
    scales_b, _, _ = _scaler_run(None, dtrain, steps=6, scaler=loaded)
    assert scales_a == scales_b


def _tiny(dtype=dtrain.float32):
    model = dtrain.nn.Linear(2, 1).to(dtype)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1)
    model(dtrain.ones(1, 2, dtype=dtype)).sum().backward()
    return model, opt


def test_grad_scaler_misuse_is_a_clear_error():
    """unscale_ twice, unscale_ or step after step, a closure, update with nothing checked, an
    empty state dict, float16 parameters, bad factors: each raises saying what is wrong."""
    scaler = dtrain.amp.GradScaler("cpu")
    model, opt = _tiny()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called on this optimizer"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="Closure"):
        scaler.step(opt, closure=lambda: 0)
    scaler.update()
    with pytest.raises(RuntimeError, match="No inf checks were recorded prior to update"):
        scaler.update()
    with pytest.raises(RuntimeError, match="state dict is empty"):
        scaler.load_state_dict({})
    half_model, half_opt = _tiny(dtrain.float16)
    with pytest.raises(ValueError, match="FP16 gradients"):
        dtrain.amp.GradScaler("cpu").step(half_opt)
    for bad in (dict(growth_factor=1.0), dict(backoff_factor=1.5), dict(growth_interval=0), dict(device="tpu")):
        with pytest.raises(ValueError):
            dtrain.amp.GradScaler(**{"device": "cpu", **bad})


def test_disabled_grad_scaler_is_transparent():
    """enabled=False: scale returns its input, step steps, state_dict is {} (as torch)."""
    scaler = dtrain.amp.GradScaler("cpu", enabled=False)
    model, opt = _tiny()
    before = model.weight.detach().numpy().copy()
    loss = dtrain.ones(())
    assert scaler.scale(loss) is loss and scaler.get_scale() == 1.0 and scaler.state_dict() == {}
    scaler.step(opt)
    scaler.update()
    assert not numpy.array_equal(before, model.weight.detach().numpy())


@pytest.mark.skipif(dtrain.cuda.is_available(), reason="checks the no-CUDA fallback")
def test_cuda_without_a_gpu_warns_and_disables_as_torch():
    """autocast("cuda") and GradScaler() (device "cuda") without CUDA warn and do nothing."""
    with pytest.warns(UserWarning, match="CUDA is not available"):
        region = dtrain.autocast("cuda")
    with region:
        assert not dtrain.is_autocast_enabled("cuda")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        assert not dtrain.amp.GradScaler().is_enabled()


def test_autocast_bad_arguments():
    """An unknown device type is an error; a dtype autocast does not support warns and
    disables the region (torch's behaviour); bfloat16 without ml_dtypes names the extra."""
    with pytest.raises(RuntimeError, match="unsupported autocast device_type 'tpu'"):
        dtrain.autocast("tpu")
    with pytest.raises(ValueError, match="device_type"):
        dtrain.autocast(dtrain.device("cpu"))
    with pytest.warns(UserWarning, match="not supported. Disabling"):
        region = dtrain.autocast("cpu", dtype=dtrain.float32)
    with region, warnings.catch_warnings():
        assert F.linear(dtrain.ones(1, 2), dtrain.ones(3, 2)).dtype == dtrain.float32


def test_bfloat16_without_ml_dtypes_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    for use in (lambda: dtrain.bfloat16, lambda: dtrain.autocast("cpu"), lambda: dtrain.autocast("cpu", dtype="bfloat16")):
        with pytest.raises(ImportError, match=r"pip install dtrain\[bf16\]"):
            use()


RANK_SCRIPT = """
import numpy, dtrain, dtrain.comm as dist
from rank_harness import RankChecks

def all_ranks_skip_when_one_has_inf():
    model = dtrain.nn.Linear(2, 1)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1)
    scaler = dtrain.amp.GradScaler("cpu", init_scale=4.0)
    for step in range(3):
        opt.zero_grad()
        scaler.scale(model(dtrain.ones(1, 2)).sum()).backward()
        if step == 1 and checks.rank == 1:
            model.weight.grad.numpy()[0, 0] = numpy.inf
        before = model.weight.detach().numpy().copy()
        scaler.step(opt)
        scaler.update()
        changed = not numpy.array_equal(before, model.weight.detach().numpy())
        assert changed == (step != 1), (checks.rank, step, changed)
    assert scaler.get_scale() == 2.0, scaler.get_scale()

checks = RankChecks("mpi")
checks.run("all ranks skip when one has inf", all_ranks_skip_when_one_has_inf)
checks.finish()
"""


def test_grad_scaler_ranks_agree_on_skipping(tmp_path):
    """With 2 ranks, an inf in rank 1's gradients alone makes both ranks skip that step and
    back off their scale (the found-inf flag is all-reduced with MAX)."""
    mpiexec = require_mpi()
    script = tmp_path / "rank_scaler.py"
    script.write_text(RANK_SCRIPT)
    result = run([mpiexec, "-n", "2", sys.executable, str(script)], timeout=120, env=clean_env())
    assert_all_checks_passed(result, 2, 1)


def test_torch_cuda_amp_spellings():
    """``dtrain.cuda.amp.autocast``/``GradScaler`` (torch.cuda.amp's deprecated path) are the
    "cuda" autocast and scaler, with PyTorch's FutureWarning."""
    from dtrain.cuda.amp import GradScaler, autocast
    with pytest.warns(FutureWarning, match="dtrain.amp.autocast\\('cuda'"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no CUDA here: also "Disabling"
        region = autocast(dtype=dtrain.float16)
    assert region.device == "cuda" and region.fast_dtype == dtrain.float16
    with pytest.warns(FutureWarning, match="dtrain.amp.GradScaler\\('cuda'"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scaler = GradScaler(init_scale=8.0)
    assert isinstance(scaler, dtrain.amp.GradScaler) and scaler._device == "cuda"


# PyTorch's CUDA lists (torch.amp docs, "CUDA Ops that can autocast to float16 / float32"): the
# dtype each op returns for float16 inputs
CUDA_LIST_OUTPUTS = {
    "linear": (lambda a, b: F.linear(a, b), "float16"), "bmm": (lambda a, b: dtrain.bmm(a[None], b[None]), "float16"),
    "softmax": (lambda a, b: F.softmax(a, dim=-1), "float32"),
    "softmax_dtype": (lambda a, b: F.softmax(a, dim=-1, dtype=dtrain.float16), "float16"),
    "log_softmax": (lambda a, b: F.log_softmax(a, dim=-1), "float32"),
    "layer_norm": (lambda a, b: F.layer_norm(a, (4,)), "float32"), "sum": (lambda a, b: a.sum(), "float32"),
    "exp": (lambda a, b: a.exp(), "float32"), "pow": (lambda a, b: a ** 2, "float32"),
    "cumsum": (lambda a, b: a.cumsum(0), "float32"), "mse_loss": (lambda a, b: F.mse_loss(a, b), "float32"),
    "relu": (lambda a, b: F.relu(a), "float16"), "mean": (lambda a, b: a.mean(), "float16"),
}


@pytest.mark.parametrize("name", list(CUDA_LIST_OUTPUTS))
def test_cuda_lists_on_float16_inputs(name, monkeypatch):
    """With the "cuda" policies (the device type patched for CPU tensors, float16 being native
    to NumPy), each op returns the dtype PyTorch's CUDA autocast gives for float16 inputs;
    binary_cross_entropy is refused, as PyTorch's CUDA autocast refuses it."""
    from dtrain.tensor.ops import autocast as policy
    monkeypatch.setattr(policy, "_device_type", lambda args: "cuda")
    fn, expected = CUDA_LIST_OUTPUTS[name]
    a, b = (dtrain.tensor(x).to(dtrain.float16) for x in _arrays([(4, 4), (4, 4)], seed=5))
    saved = policy.enter("cuda", True, dtrain.float16, True)
    try:
        assert fn(a, b).dtype.name == expected
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            F.binary_cross_entropy(a.float().sigmoid(), b.float().sigmoid())
    finally:
        policy.exit(saved)


@pytest.mark.gpu
def test_cuda_float16_autocast_and_scaler_on_the_device():
    """On 'cuda', autocast computes linear in float16 natively (float16 arrays on the device),
    gradients come back float32, and GradScaler("cuda") steps and skips as on the CPU."""
    model = dtrain.nn.Linear(8, 4).to("cuda")
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1)
    scaler = dtrain.amp.GradScaler("cuda", init_scale=2.0 ** 8)
    x = dtrain.randn(16, 8, device="cuda")
    for step in range(2):
        with dtrain.autocast("cuda"):
            out = model(x)
            loss = F.mse_loss(out, dtrain.zeros(16, 4, device="cuda"))
        assert out.dtype == dtrain.float16 and out.is_cuda and loss.dtype == dtrain.float32
        opt.zero_grad()
        scaler.scale(loss).backward()
        assert model.weight.grad.dtype == dtrain.float32
        if step == 1:
            model.weight.grad.fill_(float("inf"))
        before = model.weight.detach().cpu().numpy().copy()
        scaler.step(opt)
        scaler.update()
        assert numpy.array_equal(before, model.weight.detach().cpu().numpy()) == (step == 1)
    assert scaler.get_scale() == 2.0 ** 7


def test_scaled_loss_keeps_its_dtype_as_torch():
    """scale() keeps the loss's dtype, as torch's (its scale is a 0-d float32 tensor): a
    float16 loss times 2**16 overflows there too, and the step after it is skipped."""
    for value in (3.0, 3000.0):
        ours = dtrain.amp.GradScaler("cpu").scale(dtrain.tensor([value]).to(dtrain.float16))
        theirs = torch.amp.GradScaler("cpu").scale(torch.tensor([value]).half())
        assert ours.dtype == dtrain.float16 and theirs.dtype == torch.float16
        assert ours.item() == theirs.item()


def test_autocast_is_per_thread():
    """As in PyTorch, a region is the opening thread's: a thread started inside it runs its
    ops in float32, and may open its own region."""
    import threading
    x, w = dtrain.randn(2, 3), dtrain.randn(4, 3)
    seen = []

    def worker():
        seen.append(F.linear(x, w).dtype)
        with dtrain.autocast("cpu"):
            seen.append(F.linear(x, w).dtype)
    with dtrain.autocast("cpu"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        seen.append(F.linear(x, w).dtype)
    assert seen == [dtrain.float32, BF16, BF16]


def _scaled_mlp_run(dtype, planted, steps=50):
    """An MLP trained with GradScaler (autocast in ``dtype``, or none for None), an inf planted
    in a gradient at the steps of ``planted``. Returns (losses, steps whose update was skipped)."""
    dtrain.manual_seed(0)
    model = dtrain.nn.Sequential(dtrain.nn.Linear(20, 64), dtrain.nn.ReLU(), dtrain.nn.Linear(64, 5))
    opt = dtrain.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = dtrain.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=10)
    rng = numpy.random.default_rng(1)
    x = dtrain.tensor(rng.standard_normal((64, 20)).astype(numpy.float32))
    y = dtrain.tensor(rng.integers(0, 5, 64))
    losses, skipped = [], []
    for step in range(steps):
        with dtrain.autocast("cpu", dtype=dtype or dtrain.float16, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        if step in planted:
            model[0].weight.grad.numpy()[0, 0] = numpy.inf
        before = model[2].weight.detach().numpy().copy()
        scaler.step(opt)
        scaler.update()
        if numpy.array_equal(before, model[2].weight.detach().numpy()):
            skipped.append(step)
        losses.append(loss.item())
    return numpy.array(losses), skipped


def test_float16_autocast_with_grad_scaler_trains_like_float32():
    """50 steps under autocast float16 with GradScaler: exactly the planted steps are skipped,
    and the loss trajectory stays within 1e-2 relative of the same run in float32."""
    planted = {5, 6, 30}
    full, full_skipped = _scaled_mlp_run(None, planted)
    mixed, mixed_skipped = _scaled_mlp_run(dtrain.float16, planted)
    assert full_skipped == mixed_skipped == sorted(planted)
    assert full[-1] < 0.7 * full[0]
    numpy.testing.assert_allclose(mixed, full, rtol=1e-2)


def test_bfloat16_tensors_are_floating_point_outside_autocast():
    """A bfloat16 tensor is a float to the core: is_floating_point, requires_grad, a cast to
    it stays in the graph, and it wins over integers and Python floats as in PyTorch."""
    x = dtrain.tensor([1.0, -2.0, 3.0], requires_grad=True)
    low = x.to(dtrain.bfloat16)
    assert low.is_floating_point() and low.requires_grad and low.grad_fn is not None
    (low * 2.0).float().sum().backward()
    numpy.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])
    assert dtrain.ones(2, dtype=dtrain.bfloat16).requires_grad_().requires_grad
    assert (dtrain.tensor([1, 2]).to(dtrain.bfloat16) * 1.5).dtype == dtrain.bfloat16
    assert (dtrain.tensor([1, 2]) * dtrain.ones(2, dtype=dtrain.bfloat16)).dtype == dtrain.bfloat16
    assert (dtrain.ones(2, dtype=dtrain.bfloat16) * dtrain.ones(2)).dtype == dtrain.float32
    theirs = (torch.tensor([1, 2]) * torch.ones(2, dtype=torch.bfloat16)).dtype
    assert str(theirs).replace("torch.", "") == "bfloat16"


def test_data_parallel_replicas_run_in_the_callers_autocast_region():
    """parallel_apply's worker threads re-open the caller's autocast region (autocast is per
    thread), so every replica's Linear runs in bfloat16, as in PyTorch."""
    from dtrain.parallel.data_parallel import parallel_apply
    replicas = [dtrain.nn.Linear(4, 3) for _ in range(3)]
    inputs = [dtrain.randn(2, 4) for _ in range(3)]
    with dtrain.autocast("cpu", dtype=dtrain.bfloat16):
        outs = parallel_apply(replicas, inputs, devices=["cpu"] * 3)
    assert [o.dtype for o in outs] == [dtrain.bfloat16] * 3
    assert parallel_apply(replicas, inputs, devices=["cpu"] * 3)[2].dtype == dtrain.float32
