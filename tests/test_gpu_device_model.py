"""The CUDA device model, as PyTorch's: "cuda" means the current device; an op, its backward
and the ``.grad`` it accumulates run on their tensors' device whichever device is current;
DataParallel over two devices equals the plain module; DataLoader workers collate CUDA
samples on their device. Run on a CPU with ``DTRAIN_CUPY_EMULATION=2`` (tests/emulation)."""
import copy
import sys

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.data import DataLoader, Dataset
from dtrain.parallel.data_parallel import DataParallel
from dtrain.tensor import backend
from dtrain.tensor.function import on_input_device

CUDA1 = dtrain.device("cuda:1")


@pytest.fixture
def two_gpus():
    """Two CUDA devices, device 0 current; device 0 current again afterwards."""
    if dtrain.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    dtrain.cuda.set_device(0)
    yield
    dtrain.cuda.set_device(0)


def host(t):
    return t.detach().cpu().numpy()


def assert_on(device, *tensors):
    for t in tensors:
        assert t.device == device, f"expected a tensor on {device}, got one on {t.device}"


def assert_close(got, want, tol=1e-12):
    np.testing.assert_allclose(host(got), host(want), rtol=tol, atol=tol)


# ---- "cuda" without an index -------------------------------------------------------------

def test_bare_cuda_device_has_no_index():
    """As torch.device: "cuda" keeps index None (it means the current device when used), prints
    as "cuda", differs from "cuda:0"; a bad explicit index is refused, naming it."""
    d = dtrain.device("cuda")
    assert d.index is None and str(d) == "cuda" and repr(d) == "device(type='cuda')"
    assert d != dtrain.device("cuda:0") and dtrain.device("cuda", 1) == "cuda:1" and dtrain.device(d) == d
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f"device index must be a non-negative int, got {bad!r}"):
            dtrain.device("cuda", bad)
    torch = pytest.importorskip("torch")
    t = torch.device("cuda")
    assert (t.index, str(t), repr(t), t == torch.device("cuda:0")) == (d.index, str(d), repr(d), False)


@pytest.mark.gpu
def test_cuda_means_the_current_device(two_gpus):
    """After set_device(1), creation with device="cuda", Tensor.cuda()/to("cuda"), Module.cuda()/
    to("cuda"), new_* tensors, Generator("cuda") and dtrain.cuda's queries all use cuda:1."""
    dtrain.cuda.set_device("cuda:1")
    m = nn.Linear(3, 2)
    made = [dtrain.zeros(2, device="cuda"), dtrain.tensor([1, 2], device="cuda"),
            dtrain.randn(2, device="cuda"), dtrain.arange(3, device="cuda"), dtrain.ones(2).cuda(),
            dtrain.ones(2).to("cuda"), dtrain.ones(2).to(device="cuda", dtype=dtrain.float64),
            dtrain.ones(2).new_zeros(3, device="cuda"), m.cuda().weight, nn.Linear(2, 2).to("cuda").bias,
            dtrain.randn(2, device="cuda", generator=dtrain.Generator("cuda"))]
    assert_on(CUDA1, *made)
    assert dtrain.Generator("cuda").device == CUDA1 and dtrain.cuda.current_device() == 1
    x = made[0]
    assert x.to("cuda") is x  # already on the current device: no copy, as PyTorch
    assert x.device == "cuda" and x.device == "cuda:1" and x.device != "cuda:0"  # a string "cuda": the current one
    dtrain.cuda.set_device(0)
    assert_on(dtrain.device("cuda:0"), dtrain.zeros(2, device="cuda"), x.cuda())
    assert x.device != "cuda"


# ---- ops run on their operands' device -----------------------------------------------------

def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def cnn():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(12, 3)).double()


@pytest.mark.gpu
@pytest.mark.parametrize("make,shape", [(mlp, (5, 4)), (cnn, (3, 2, 4, 4))], ids=["mlp", "cnn"])
def test_model_on_cuda1_while_device0_is_current(two_gpus, make, shape):
    """Forward, backward (twice: .grad accumulates in place) of a model on cuda:1 with device 0
    current give the CPU's values and gradients, all on cuda:1; device 0 stays current."""
    cpu = make()
    gpu = copy.deepcopy(cpu).to("cuda:1")
    x = dtrain.randn(*shape, dtype=dtrain.float64)
    xc, xg = x.clone().requires_grad_(), x.to("cuda:1").requires_grad_()
    for _ in range(2):
        oc, og = cpu(xc), gpu(xg)
        assert_on(CUDA1, og)
        assert_close(og, oc)
        (oc * oc).mean().backward()
        (og * og).mean().backward()
    for p, q in zip(cpu.parameters(), gpu.parameters()):
        assert_on(CUDA1, q.grad)
        assert_close(q.grad, p.grad)
    assert_on(CUDA1, xg.grad)
    assert_close(xg.grad, xc.grad)
    assert dtrain.cuda.current_device() == 0


@pytest.mark.gpu
def test_tensor_methods_on_cuda1_while_device0_is_current(two_gpus):
    """Creation with a dtype change, in-place methods, indexing, hooks, retain_grad and a
    backward from a non-scalar root run on the tensors' device (cuda:1) with device 0 current."""
    t = dtrain.tensor([1, 2, 3], dtype=dtrain.float64, device="cuda:1")
    assert_on(CUDA1, t)
    t.add_(1).mul_(2).sub_(1, alpha=2).div_(2).clamp_(0, 3).pow_(2).lerp_(dtrain.ones(3, device="cuda:1"), 0.5)
    t[dtrain.tensor([0], device="cuda:1")] = 5.0
    t[1] = dtrain.tensor(7.0, dtype=dtrain.float64, device="cuda:1")
    assert t.tolist() == [5.0, 7.0, 5.0]
    t.copy_(dtrain.tensor([1.0, 2.0, 3.0], dtype=dtrain.float64)).sqrt_().neg_().fill_(2.0).zero_().uniform_()
    assert 0 <= t.min().item() and t.max().item() <= 1
    x = dtrain.tensor([1.0, 2.0], device="cuda:1", requires_grad=True)
    y = x * 3
    y.retain_grad()
    y.register_hook(lambda g: g * 2)
    (y ** 2).backward(dtrain.ones(2, device="cuda:1"))
    assert_on(CUDA1, x.grad, y.grad)
    assert x.grad.tolist() == [36.0, 72.0] and y.grad.tolist() == [6.0, 12.0]
    assert dtrain.cuda.current_device() == 0


@pytest.mark.gpu
def test_on_input_device_runs_a_wrapper_on_its_input_device(two_gpus):
    """A functional op decorated with on_input_device allocates and computes on its first
    tensor's device (cuda:1) while device 0 is current, and restores device 0."""
    @on_input_device
    def plus_ones(x, scale=1.0):
        xp = backend.get_array_module(x.array)
        return dtrain.Tensor._wrap(x.array + xp.ones(x.shape, dtype=x.dtype) * scale)

    out = plus_ones(dtrain.zeros(2, device="cuda:1"), scale=2.0)
    assert_on(CUDA1, out)
    assert out.tolist() == [2.0, 2.0] and dtrain.cuda.current_device() == 0
    assert plus_ones.__name__ == "plus_ones" and plus_ones(dtrain.zeros(1)).tolist() == [1.0]


def _functional_cases():
    c = "cuda:1"
    x = lambda: dtrain.randn(2, 3, 4, 4, device=c, requires_grad=True)  # noqa: E731
    v = lambda: dtrain.randn(4, 5, device=c, requires_grad=True)  # noqa: E731
    y = lambda: dtrain.tensor([0, 1, 4, 2], device=c)  # noqa: E731
    return [
        pytest.param(lambda: F.layer_norm(v(), (5,)), id="layer_norm"),
        pytest.param(lambda: F.mse_loss(v(), v().detach()), id="mse_loss"),
        pytest.param(lambda: F.softmax(v(), -1), id="softmax"),
        pytest.param(lambda: F.gelu(v()), id="gelu"),
        pytest.param(lambda: F.conv2d(x(), dtrain.randn(2, 3, 3, 3, device=c)), id="conv2d"),
        pytest.param(lambda: F.scaled_dot_product_attention(x(), x(), x(), is_causal=True), id="sdpa"),
        pytest.param(lambda: F.max_pool2d(x(), 2), id="max_pool2d"),
        pytest.param(lambda: F.avg_pool2d(x(), 2), id="avg_pool2d"),
        pytest.param(lambda: F.dropout(x(), 0.5), id="dropout"),
        pytest.param(lambda: F.batch_norm(x(), None, None, training=True), id="batch_norm"),
        pytest.param(lambda: F.embedding(y(), dtrain.randn(6, 3, device=c, requires_grad=True)), id="embedding"),
        pytest.param(lambda: F.cross_entropy(v(), y()), id="cross_entropy"),
        pytest.param(lambda: F.nll_loss(v(), y()), id="nll_loss"),
        pytest.param(lambda: F.one_hot(y(), 5), id="one_hot"),
        pytest.param(lambda: v().gather(1, y()[:, None]), id="gather"),
        pytest.param(lambda: F.interpolate(x(), scale_factor=2), id="interpolate"),
    ]


@pytest.mark.gpu
@pytest.mark.parametrize("op", _functional_cases())
def test_functional_op_on_cuda1_while_device0_is_current(two_gpus, op):
    """A functional op called directly (no Module) on cuda:1 tensors with device 0 current runs,
    forward and backward, and gives a result on cuda:1."""
    out = op()
    assert_on(CUDA1, out)
    if out.requires_grad:
        out.float().sum().backward()
    assert dtrain.cuda.current_device() == 0


# ---- DataParallel over two devices ---------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("device_ids", [[0, 1], ["cuda:0", "cuda:1"], ["cuda", 1]], ids=["ints", "strings", "bare"])
@pytest.mark.parametrize("make,shape", [(mlp, (5, 4)), (cnn, (5, 2, 4, 4))], ids=["mlp", "cnn"])
def test_data_parallel_on_two_devices_matches_plain_module(two_gpus, make, shape, device_ids):
    """DataParallel over cuda:0 and cuda:1 (ids as ints, "cuda:N" strings, or "cuda" = the
    current device) gives the plain module's outputs and parameter and input gradients, on cuda:0."""
    plain = make().to("cuda:0")
    wrapped = DataParallel(copy.deepcopy(plain), device_ids=device_ids)
    assert [str(d) for d in wrapped.device_ids] == ["cuda:0", "cuda:1"]
    x = dtrain.randn(*shape, dtype=dtrain.float64, device="cuda:0")
    xa, xb = x.detach().requires_grad_(), x.detach().requires_grad_()
    out_plain, out_dp = plain(xa), wrapped(xb)
    assert_close(out_dp, out_plain)
    weights = dtrain.randn(*out_plain.shape, dtype=dtrain.float64, device="cuda:0")
    (out_plain * weights).sum().backward()
    (out_dp * weights).sum().backward()
    for p, q in zip(plain.parameters(), wrapped.module.parameters()):
        assert_on(dtrain.device("cuda:0"), q.grad)
        assert_close(q.grad, p.grad)
    assert_close(xb.grad, xa.grad)


# ---- DataLoader worker threads -----------------------------------------------------------

class Samples(Dataset):
    """Sample i: ``make(i)``."""

    def __init__(self, make, n=6):
        self.make, self.n = make, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.make(i)


@pytest.mark.gpu
def test_dataloader_workers_collate_cuda_samples_on_their_device(two_gpus):
    """Worker threads stack cuda:1 samples on cuda:1 while device 0 is current, and samples made
    with device="cuda" in the workers land on the device current where the loader started."""
    samples = [dtrain.full((2,), float(i), device="cuda:1") for i in range(6)]
    for workers in (0, 2):
        batches = list(DataLoader(Samples(samples.__getitem__), batch_size=3, num_workers=workers))
        assert_on(CUDA1, *batches)
        assert [b[:, 0].tolist() for b in batches] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    dtrain.cuda.set_device(1)
    made_in_worker = Samples(lambda i: {"x": dtrain.tensor([i, i], device="cuda")})
    batches = list(DataLoader(made_in_worker, batch_size=2, num_workers=2))
    assert_on(CUDA1, *[b["x"] for b in batches])
    assert [b["x"][:, 0].tolist() for b in batches] == [[0, 1], [2, 3], [4, 5]]


# ---- scatter-add: cupy.add.at, not the deprecated cupyx.scatter_add ------------------------

@pytest.mark.gpu
def test_scatter_add_uses_add_at(monkeypatch):
    """Repeated indices accumulate through ``xp.add.at`` (CuPy's cupyx.scatter_add is deprecated):
    an embedding's weight gradient is right with cupyx.scatter_add made to fail."""
    def deprecated(*args, **kwargs):
        raise AssertionError("cupyx.scatter_add called: use cupy.add.at")
    monkeypatch.setattr(sys.modules["cupyx"], "scatter_add", deprecated, raising=False)
    emb = nn.Embedding(4, 2).to("cuda:0")
    emb(dtrain.tensor([1, 3, 1, 1], device="cuda:0")).sum().backward()
    assert emb.weight.grad.tolist() == [[0.0, 0.0], [3.0, 3.0], [0.0, 0.0], [1.0, 1.0]]
    target = backend.cupy.zeros(3)
    backend.scatter_add(target, backend.cupy.asarray([0, 2, 0]), backend.cupy.ones(3))
    assert target.tolist() == [2.0, 0.0, 1.0]


@pytest.mark.gpu
@pytest.mark.parametrize("name, kwargs", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {}), ("AdamW", {}),
                                          ("RMSprop", {}), ("Adagrad", {}), ("Adadelta", {}), ("Adamax", {}),
                                          ("NAdam", {}), ("RAdam", {})])
def test_optimizer_and_clipping_on_cuda1_while_device0_is_current(two_gpus, name, kwargs):
    """An optimizer step and gradient clipping update parameters on their own GPU (cuda:1, with
    cuda:0 current), as PyTorch does, and give the CPU's numbers."""
    results = []
    for device in ("cpu", "cuda:1"):
        dtrain.manual_seed(0)
        model = dtrain.nn.Linear(4, 3).to(device)
        opt = getattr(dtrain.optim, name)(model.parameters(), **kwargs)
        x = dtrain.ones(2, 4, device=device)
        for _ in range(2):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            dtrain.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            dtrain.nn.utils.clip_grad_value_(model.parameters(), 0.1)
            opt.step()
        assert model.weight.device == dtrain.device(device)
        results.append(host(model.weight))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)
