"""No hidden host synchronisations on a GPU: a training step reads nothing back from the
device until the user asks for a value (issue 13, item 5), and the ops' index checks, done on
the device there, still raise their error (dtrain.tensor.device_checks).

The sync counts run on the CuPy emulation (tests/emulation, ``DTRAIN_CUPY_EMULATION=2``),
whose counter sees every device-to-host read; the error checks run on a real GPU too; the
CPU's eager errors are checked without a GPU."""
import re
import sys

import numpy as np
import pytest

import dtrain
import dtrain.nn.functional as F
from comm_helpers import output, require_mpi, run
from dtrain import nn


def counter():
    """The emulation's host-sync counter; skips on real CuPy, which has none."""
    import emulation
    if not emulation.installed():
        pytest.skip("the host-sync counter is the CuPy emulation's (DTRAIN_CUPY_EMULATION=2)")
    return emulation.syncs


# ---- the reference workloads, tiny --------------------------------------------------------

def mlp_step():
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 10)).cuda(0)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = dtrain.randn(8, 20, device="cuda:0"), dtrain.randint(0, 10, (8,), device="cuda:0")
    return lambda: F.cross_entropy(model(x), y), model, opt, None


def cnn_step():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 2 * 2, 10)).cuda(0)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = dtrain.randn(4, 3, 8, 8, device="cuda:0"), dtrain.randint(0, 10, (4,), device="cuda:0")
    return lambda: F.cross_entropy(model(x), y), model, opt, None


def gpt_step():
    from dtrain.examples.gpt import GPT, configure_optimizer
    model = GPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8).cuda(0)
    opt = configure_optimizer(model, 1e-3, 0.1)
    x, y = dtrain.randint(0, 11, (2, 8), device="cuda:0"), dtrain.randint(0, 11, (2, 8), device="cuda:0")
    return lambda: model(x, y)[1], model, opt, 1.0


@pytest.mark.gpu
@pytest.mark.parametrize("workload", [mlp_step, cnn_step, gpt_step], ids=["mlp", "cnn", "gpt"])
def test_training_step_does_not_sync_the_host(workload):
    """Forward, backward, gradient clipping and the optimizer step of the reference MLP, CNN
    and GPT read nothing back to the host; the user's ``loss.item()`` is the step's only read
    (the value, and with it the kept index checks)."""
    syncs = counter()
    dtrain.manual_seed(0)
    forward, model, opt, clip = workload()
    for _ in range(2):  # the second step runs with the optimizer's state built
        syncs.reset()
        loss = forward()
        opt.zero_grad()
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        assert syncs.count == 0, syncs.events
        value = loss.item()
        assert np.isfinite(value)
        assert 1 <= syncs.count <= 2, syncs.events


@pytest.mark.gpu
def test_max_pool_with_nan_matches_cpu_without_sync():
    """max_pool2d on a GPU takes the NaN-aware path without looking for NaN first: values,
    gradients and indices equal the CPU's (a NaN wins its window), and nothing syncs."""
    syncs = counter()
    a = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    a[0, 0, 1, 1], a[0, 1, 2, 3], a[0, 1, 3, 3] = np.nan, np.nan, np.nan
    results = []
    for device in ("cpu", "cuda:0"):
        x = dtrain.tensor(a, device=device, requires_grad=True)
        syncs.reset()
        y, idx = F.max_pool2d(x, 2, return_indices=True)
        (y * dtrain.arange(8.0, device=device).reshape(1, 2, 2, 2)).sum().backward()
        if device != "cpu":
            assert syncs.count == 0, syncs.events
        results.append([y.detach().cpu().numpy(), idx.cpu().numpy(), x.grad.cpu().numpy()])
    for c, g in zip(*results):
        np.testing.assert_array_equal(g, c)


@pytest.mark.gpu
def test_sync_batchnorm_keeps_the_count_on_the_device(monkeypatch):
    """SyncBatchNorm's forward and backward read no statistic (not even the global count) to
    the host; at one rank (the all-reduce a no-op) it equals BatchNorm, running stats too."""
    from dtrain.parallel import sync_batchnorm
    syncs = counter()
    monkeypatch.setattr(sync_batchnorm.dist, "all_reduce", lambda tensor, group=None: None)
    a = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)
    out = []
    for device in ("cpu", "cuda:0"):
        bn = nn.BatchNorm1d(3).to(device)
        x = dtrain.tensor(a, device=device, requires_grad=True)
        syncs.reset()
        y = sync_batchnorm.SyncBatchNormFunction.apply(x, bn.weight, bn.bias, eps=bn.eps, momentum=0.1,
                                                       running_mean=bn.running_mean, running_var=bn.running_var)
        (y * y).sum().backward()
        if device != "cpu":
            assert syncs.count == 0, syncs.events
        out.append([t.detach().cpu().numpy() for t in (y, x.grad, bn.weight.grad, bn.running_mean, bn.running_var)])
    ref = nn.BatchNorm1d(3)
    x = dtrain.tensor(a, requires_grad=True)
    (ref(x) ** 2).sum().backward()
    expected = [t.detach().numpy() for t in (ref(x), x.grad, ref.weight.grad)]
    for got in out:
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[1][3], out[0][3], rtol=1e-6)
    np.testing.assert_allclose(out[1][4], out[0][4], rtol=1e-6)


# ---- value checks of the ops' arguments: eager on the CPU, deferred on a GPU ---------------

def _floats(*shape, device):
    return dtrain.randn(*shape, device=device)


def _ints(values, device):
    return dtrain.tensor(values, device=device)


def _setitem(device):
    x = _floats(3, 2, device=device)
    x[_ints([0, 5], device)] = 1.0
    return x


BAD_VALUES = [  # (name, op with an index (or a probability) out of range, exception type, message)
    ("cross_entropy", lambda d: F.cross_entropy(_floats(3, 4, device=d), _ints([0, 4, -100], d)),
     IndexError, r"cross_entropy: target 4 is out of bounds: expected class indices in \[0, 3\] or ignore_index"),
    ("nll_loss", lambda d: F.nll_loss(_floats(2, 4, device=d), _ints([-1, 0], d)),
     IndexError, r"nll_loss: target -1 is out of bounds"),
    ("embedding", lambda d: F.embedding(_ints([[1, 7]], d), _floats(5, 2, device=d)),
     IndexError, r"embedding: indices must be in \[0, 4\] \(num_embeddings = 5\), got values in \[1, 7\]"),
    ("gather", lambda d: _floats(2, 3, device=d).gather(1, _ints([[0], [3]], d)),
     IndexError, r"gather\(\): index out of range for dimension 1 with size 3"),
    ("scatter_add", lambda d: _floats(2, 3, device=d).scatter_add(0, _ints([[2, 0, 0]], d), _floats(1, 3, device=d)),
     IndexError, r"scatter_add\(\): index 2 is out of bounds for dimension 0 with size 2"),
    ("one_hot", lambda d: F.one_hot(_ints([0, 3], d), 3),
     RuntimeError, r"one_hot: class values must be in \[0, 2\], got values in \[0, 3\]"),
    ("index_read", lambda d: _floats(3, 2, device=d)[_ints([1, 3], d)],
     IndexError, r"index 3 is out of bounds for axis 0 with size 3"),
    ("index_write", _setitem, IndexError, r"index 5 is out of bounds for axis 0 with size 3"),
    ("binary_cross_entropy", lambda d: F.binary_cross_entropy(dtrain.tensor([0.5, 1.5], device=d),
                                                              dtrain.tensor([1.0, 0.0], device=d)),
     RuntimeError, r"binary_cross_entropy: all elements of input should be between 0 and 1, got values in "
                   r"\[0.5, 1.5\]"),
]
IDS = [case[0] for case in BAD_VALUES]


@pytest.mark.parametrize("name,op,kind,message", BAD_VALUES, ids=IDS)
def test_cpu_index_errors_raise_in_the_op(name, op, kind, message):
    """On the CPU an index out of range raises in the op itself."""
    with pytest.raises(kind, match=message):
        op("cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name,op,kind,message", BAD_VALUES, ids=IDS)
def test_gpu_index_errors_raise_at_the_next_host_read(name, op, kind, message, monkeypatch):
    """On a GPU the op returns (the check runs on the device) and the error, with the op's
    message, comes at the next host read, saying so; after it, reads work again."""
    monkeypatch.delenv("CUDA_LAUNCH_BLOCKING", raising=False)
    op("cuda:0")
    with pytest.raises(kind, match=message) as e:
        dtrain.zeros(1, device="cuda:0").item()
    assert "next host synchronisation" in str(e.value) and "CUDA_LAUNCH_BLOCKING=1" in str(e.value)
    assert dtrain.ones(1, device="cuda:0").item() == 1.0


@pytest.mark.gpu
@pytest.mark.parametrize("name,op,kind,message", BAD_VALUES, ids=IDS)
def test_gpu_index_errors_raise_in_the_op_with_launch_blocking(name, op, kind, message, monkeypatch):
    """With CUDA_LAUNCH_BLOCKING=1 (as in PyTorch) the GPU check raises in the op itself."""
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "1")
    with pytest.raises(kind, match=message) as e:
        op("cuda:0")
    assert "next host synchronisation" not in str(e.value)


@pytest.mark.gpu
@pytest.mark.parametrize("read", [lambda t: t.tolist(), lambda t: repr(t), lambda t: t.cpu(),
                                  lambda t: dtrain.cuda.synchronize()], ids=["tolist", "repr", "cpu", "synchronize"])
def test_gpu_index_error_raises_at_every_kind_of_host_read(read, monkeypatch):
    """Printing, ``.tolist()``, ``.cpu()`` and ``dtrain.cuda.synchronize()`` raise a kept error
    as ``.item()`` does."""
    monkeypatch.delenv("CUDA_LAUNCH_BLOCKING", raising=False)
    t = F.embedding(_ints([9], "cuda:0"), _floats(5, 2, device="cuda:0"))
    with pytest.raises(IndexError, match=r"embedding: indices must be in \[0, 4\]"):
        read(t)


@pytest.mark.gpu
def test_gpu_repeated_check_reports_its_first_failure(monkeypatch):
    """A check repeated before the next host read (a training loop that never reads) keeps one
    state per op on the device, holding the first failure: its values are the ones reported."""
    monkeypatch.delenv("CUDA_LAUNCH_BLOCKING", raising=False)
    from dtrain.tensor import device_checks
    w = _floats(5, 2, device="cuda:0")
    F.embedding(_ints([1], "cuda:0"), w)
    F.embedding(_ints([6, 2], "cuda:0"), w)
    F.embedding(_ints([8], "cuda:0"), w)
    assert len(device_checks._pending) == 1
    with pytest.raises(IndexError, match=r"got values in \[2, 6\]"):
        dtrain.cuda.synchronize()
    assert not device_checks._pending


@pytest.mark.gpu
def test_gpu_valid_indices_raise_nothing_and_cost_one_read():
    """Valid indices: the ops give the CPU's values; the kept checks are read together, in one
    copy, at the next host read."""
    syncs = counter()
    w = np.arange(10.0).reshape(5, 2)
    out = []
    for device in ("cpu", "cuda:0"):
        t = dtrain.tensor(w, device=device)
        syncs.reset()
        y = (F.embedding(_ints([[4, 0]], device), t).sum() + t[_ints([1, 2], device)].sum()
             + t.gather(0, _ints([[3, 1]], device)).sum() + F.one_hot(_ints([1, 4], device), 5).sum())
        if device != "cpu":
            assert syncs.count == 0, syncs.events
        out.append(y.item())
        if device != "cpu":
            assert syncs.count == 2, syncs.events  # the value, then every kept check at once
    assert out[0] == out[1]


# ---- item 6: DDP's buffer broadcast, coalesced per dtype -------------------------------------

@pytest.mark.parametrize("backend", ["mpi", pytest.param("nccl", marks=pytest.mark.gpu)])
def test_ddp_broadcasts_buffers_coalesced_per_dtype(backend):
    """At 2 ranks, a forward of a model with 2 BatchNorm layers (6 buffers of 2 dtypes) gives
    every rank rank 0's buffers in 2 backend broadcasts (one per dtype), not 6."""
    mpiexec = require_mpi()
    if backend == "nccl" and dtrain.cuda.device_count() < 2:
        pytest.skip("NCCL needs a GPU per rank: 2 GPUs")
    result = run([mpiexec, "-n", "2", sys.executable, "tests/comm/rank_ddp_buffers.py", "--backend", backend],
                 timeout=300)
    assert result.returncode == 0, output(result)
    for rank in range(2):
        assert f"rank {rank}: broadcasts per forward 2, buffers equal rank 0's" in result.stdout, output(result)


@pytest.mark.gpu
def test_ddp_step_over_nccl_does_not_sync_the_host():
    """At 2 ranks over NCCL, a DDP step (buffer broadcast, forward with BatchNorm and
    cross-entropy, backward with the gradient all-reduce, SGD step) reads nothing back to the
    host on any rank with DDP(nonfinite="ignore"); with the default non-finite check, exactly
    one read: its flags, at the end of backward (an exact skip needs the host to know)."""
    counter()
    if dtrain.cuda.device_count() < 2:
        pytest.skip("NCCL needs a GPU per rank: 2 GPUs")
    result = run([require_mpi(), "-n", "2", sys.executable, "tests/comm/rank_ddp_host_syncs.py"], timeout=300)
    assert result.returncode == 0, output(result)
    for rank in range(2):
        assert f"rank {rank}: nonfinite=ignore: host syncs per step 0 " in result.stdout, output(result)
        assert re.search(rf"rank {rank}: nonfinite=skip: host syncs per step 1 .*parallel/nonfinite.py",
                         result.stdout), output(result)
