"""DataParallel over CPU threads: the same outputs, gradients and training as the plain module."""
import copy
import os
import runpy
import threading
from collections import namedtuple

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
import dtrain.optim as optim
from dtrain.parallel.data_parallel import DataParallel, gather, scatter

CPU2 = ["cpu", "cpu"]
Pair = namedtuple("Pair", ["first", "second"])


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def cnn():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(12, 3)).double()


def assert_same_as_plain(make, x_shape, device_ids):
    """Forward and backward through DataParallel(copy) and the plain module agree (float64)."""
    plain = make()
    wrapped = DataParallel(copy.deepcopy(plain), device_ids=device_ids)
    x = dtrain.randn(*x_shape, dtype=dtrain.float64)
    xa, xb = x.detach().requires_grad_(), x.detach().requires_grad_()
    out_plain, out_dp = plain(xa), wrapped(xb)
    np.testing.assert_allclose(out_dp.detach().numpy(), out_plain.detach().numpy(), rtol=1e-12, atol=1e-12)
    weights = dtrain.randn(*out_plain.shape, dtype=dtrain.float64)
    (out_plain * weights).sum().backward()
    (out_dp * weights).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), wrapped.module.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(xb.grad.numpy(), xa.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch,device_ids", [(5, CPU2), (7, ["cpu"] * 3), (2, CPU2), (1, CPU2), (4, ["cpu"] * 3)])
def test_mlp_matches_plain_module(batch, device_ids):
    """An MLP under DataParallel gives the plain module's outputs and parameter and input
    gradients, for uneven splits and batches smaller than the number of devices."""
    assert_same_as_plain(mlp, (batch, 4), device_ids)


@pytest.mark.parametrize("batch", [3, 5])
def test_cnn_matches_plain_module(batch):
    """A small CNN under DataParallel gives the plain module's outputs and gradients."""
    assert_same_as_plain(cnn, (batch, 2, 4, 4), CPU2)


def test_shared_submodule_gets_both_uses_gradients():
    """A layer used twice (tied weights) collects the gradient of both uses, as in the plain module."""
    def tied():
        layer = nn.Linear(3, 3).double()
        return nn.Sequential(layer, nn.Tanh(), layer)
    assert_same_as_plain(tied, (5, 3), CPU2)


def test_sgd_training_follows_plain_trajectory():
    """Eight SGD-with-momentum steps on DataParallel follow the plain module's losses and weights."""
    dtrain.manual_seed(0)
    plain = mlp()
    wrapped = DataParallel(copy.deepcopy(plain), device_ids=CPU2)
    x, y = dtrain.randn(9, 4, dtype=dtrain.float64), dtrain.randint(0, 3, (9,))
    losses = {}
    for name, model in (("plain", plain), ("dp", wrapped)):
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses[name] = []
        for _ in range(8):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    np.testing.assert_allclose(losses["dp"], losses["plain"], rtol=1e-10)
    assert losses["plain"][-1] < losses["plain"][0]
    for p, q in zip(plain.parameters(), wrapped.module.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-10, atol=1e-12)


class Structured(nn.Module):
    """Takes a tuple, a dict, a keyword tensor and non-tensor values; returns nested outputs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2).double()
        self.seen = []

    def forward(self, pair, extras, *, offset, tag="none"):
        self.seen.append((tag, extras["name"]))  # a plain attribute: the replicas share the list
        a, b = pair
        h = self.fc(a) * extras["scale"] + b + offset
        return {"h": h, "parts": Pair(h.sum(1, keepdim=True), [a * 2, None])}


def test_tuple_dict_and_keyword_inputs_and_outputs():
    """Tuples, dicts, namedtuples and keyword tensors are split along the batch; strings are
    given whole to every replica; nested outputs (dict, namedtuple, list, None) are gathered
    into the plain module's result."""
    plain = Structured()
    wrapped = DataParallel(copy.deepcopy(plain), device_ids=CPU2)
    a, b = dtrain.randn(5, 2, dtype=dtrain.float64), dtrain.randn(5, 2, dtype=dtrain.float64)
    extras = {"scale": dtrain.randn(5, 1, dtype=dtrain.float64), "name": "x"}
    offset = dtrain.randn(5, 2, dtype=dtrain.float64)
    want = plain((a, b), extras, offset=offset, tag="t")
    got = wrapped((a, b), extras, offset=offset, tag="t")
    assert set(got) == {"h", "parts"} and isinstance(got["parts"], Pair) and got["parts"].second[1] is None
    for g, w in ((got["h"], want["h"]), (got["parts"].first, want["parts"].first),
                 (got["parts"].second[0], want["parts"].second[0])):
        np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=1e-12)
    assert [s[:2] for s in wrapped.module.seen] == [("t", "x")] * 2


def test_replicas_run_in_parallel_threads_with_the_callers_grad_mode():
    """The replicas run at the same time in three threads (they all meet at a barrier), and
    each sees the caller's grad mode (no_grad inside no_grad)."""
    seen, barrier = [], threading.Barrier(3, timeout=10)

    class Probe(nn.Module):
        def forward(self, x):
            barrier.wait()
            seen.append((threading.current_thread(), dtrain.is_grad_enabled()))
            return x

    model = DataParallel(Probe(), device_ids=["cpu"] * 3)
    model(dtrain.zeros(3, 1))
    assert len({id(thread) for thread, _ in seen}) == 3 and all(mode for _, mode in seen)
    seen.clear()
    with dtrain.no_grad():
        out = model(dtrain.zeros(3, 1, requires_grad=True))
    assert [mode for _, mode in seen] == [False] * 3 and not out.requires_grad


def test_batch_smaller_than_devices_uses_fewer_replicas():
    """As PyTorch, a batch of 2 over 3 devices is split into chunks of ceil(2/3) = 1: two replicas run."""
    calls = []

    class Count(nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x

    DataParallel(Count(), device_ids=["cpu"] * 3)(dtrain.zeros(2, 1))
    assert sorted(calls) == [1, 1]


def test_split_along_another_dim():
    """dim=1 splits the inputs and joins the outputs along dimension 1."""
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(dtrain.randn(3, 1, dtype=dtrain.float64))

        def forward(self, x):
            assert x.shape[0] == 3 and x.shape[1] <= 3
            return x * self.w

    plain = Scale()
    x = dtrain.randn(3, 5, dtype=dtrain.float64)
    out = DataParallel(plain, device_ids=CPU2, dim=1)(x)
    np.testing.assert_allclose(out.detach().numpy(), (x * plain.w).detach().numpy())


def test_batchnorm_running_stats_come_from_replica_zero():
    """As PyTorch: replica 0 shares the original buffers, so the running statistics are updated
    from replica 0's chunk only (rows 0-2 of 5); the other replica's updates are lost."""
    bn = nn.BatchNorm1d(2).double()
    reference = copy.deepcopy(bn)
    x = dtrain.randn(5, 2, dtype=dtrain.float64)
    DataParallel(bn, device_ids=CPU2)(x)
    reference(x[:3])
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(getattr(bn, name).numpy(), getattr(reference, name).numpy(), err_msg=name)


def test_single_device_or_no_device_just_calls_the_module():
    """With one device (or, without CUDA, no device_ids at all) forward is the module's own call."""
    model = mlp()
    x = dtrain.randn(3, 4, dtype=dtrain.float64)
    one = DataParallel(model, device_ids=["cpu"])
    np.testing.assert_array_equal(one(x).detach().numpy(), model(x).detach().numpy())
    if not dtrain.cuda.is_available():
        default = DataParallel(model)
        assert default.device_ids == [] and default.output_device is None
        np.testing.assert_array_equal(default(x).detach().numpy(), model(x).detach().numpy())


def test_forward_without_arguments_runs_once():
    """As PyTorch, a forward with no inputs runs a single replica (nothing to split)."""
    calls = []

    class Constant(nn.Module):
        def forward(self):
            calls.append(1)
            return dtrain.ones(2)

    assert DataParallel(Constant(), device_ids=CPU2)().tolist() == [1.0, 1.0] and calls == [1]


@pytest.mark.gpu
def test_cuda_replicas_match_plain_module():
    """On CUDA: two replicas on cuda:0 give the plain module's outputs and gradients, the output
    is gathered on the CPU when asked, and a module left on the CPU is refused."""
    plain = mlp()
    wrapped = DataParallel(copy.deepcopy(plain).to("cuda:0"), device_ids=[0, 0], output_device="cpu")
    x = dtrain.randn(5, 4, dtype=dtrain.float64)
    out_plain, out_dp = plain(x), wrapped(x)
    assert out_dp.device == dtrain.device("cpu")
    np.testing.assert_allclose(out_dp.detach().numpy(), out_plain.detach().numpy(), rtol=1e-10)
    out_plain.sum().backward()
    out_dp.sum().backward()
    for p, q in zip(plain.parameters(), wrapped.module.parameters()):
        np.testing.assert_allclose(q.grad.cpu().numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match=r"on device cuda:0 \(device_ids\[0\]\) but found one of them on "
                                           r"device: cpu"):
        DataParallel(mlp(), device_ids=[0, 0])(x)


def test_module_attribute_and_state_dict_prefix():
    """``.module`` is the wrapped module; state_dict keys carry PyTorch's "module." prefix and load back."""
    model = mlp()
    wrapped = DataParallel(model, device_ids=CPU2)
    assert wrapped.module is model
    assert list(wrapped.state_dict()) == [f"module.{k}" for k in model.state_dict()]
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    other = DataParallel(mlp(), device_ids=CPU2)
    other.load_state_dict(wrapped.state_dict())
    for p, q in zip(model.parameters(), other.module.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_exception_in_a_replica_names_it():
    """An exception raised in replica 1 comes back with its type, its message and the replica's
    name; one that cannot be rebuilt from a message comes back as a RuntimeError."""
    class Fails(nn.Module):
        def __init__(self, exc):
            super().__init__()
            self.exc = exc

        def forward(self, x):
            if x.shape[0] == 2:  # batch 5 over 2 devices: replica 1 gets 2 rows
                raise self.exc
            return x

    with pytest.raises(ValueError, match=r"(?s)Caught ValueError in replica 1 on device cpu\..*bad rows"):
        DataParallel(Fails(ValueError("bad rows")), device_ids=CPU2)(dtrain.zeros(5, 1))

    class Picky(Exception):
        def __init__(self, a, b):
            super().__init__(a, b)

    with pytest.raises(RuntimeError, match=r"Caught Picky in replica 1 on device cpu"):
        DataParallel(Fails(Picky(1, 2)), device_ids=CPU2)(dtrain.zeros(5, 1))


def test_gather_scalars_warns_and_returns_a_vector():
    """Replicas that return a scalar (a loss) are gathered into a vector, with PyTorch's warning."""
    class Loss(nn.Module):
        def forward(self, x):
            return x.sum()

    with pytest.warns(UserWarning, match="all input tensors were scalars"):
        out = DataParallel(Loss(), device_ids=CPU2)(dtrain.ones(5, 1))
    assert out.tolist() == [3.0, 2.0]


def test_construction_errors():
    """Bad constructor arguments are refused with a message naming the argument and value."""
    with pytest.raises(ValueError, match=r"mixes CPU and CUDA devices \(\['cpu', 'cuda:0'\]\)"):
        DataParallel(mlp(), device_ids=["cpu", "cuda:0"])
    with pytest.raises(ValueError, match=r"device_ids entry 'tpu' is not a device"):
        DataParallel(mlp(), device_ids=["tpu"])
    with pytest.raises(TypeError, match=r"dim must be an int, got 'batch'"):
        DataParallel(mlp(), device_ids=CPU2, dim="batch")
    with pytest.raises(TypeError, match=r"module must be a dtrain.nn.Module, got function"):
        DataParallel(lambda x: x, device_ids=CPU2)
    if not dtrain.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda:1 requested but"):
            DataParallel(mlp(), device_ids=[1, 1])


def test_parameters_off_device_ids_0_is_an_error():
    """A module whose parameters are not on device_ids[0] at forward gets PyTorch's message."""
    wrapped = DataParallel(mlp(), device_ids=CPU2)
    wrapped.src_device_obj = dtrain.device("cuda:0")  # as if the module had been moved after wrapping
    with pytest.raises(RuntimeError, match=r"module must have its parameters and buffers on device cuda:0 "
                                           r"\(device_ids\[0\]\) but found one of them on device: cpu"):
        wrapped(dtrain.zeros(2, 4, dtype=dtrain.float64))


def test_scatter_and_gather_errors():
    """Inputs without the split dimension, dict outputs with different keys, and outputs that
    cannot be gathered are refused with messages that say what was wrong."""
    with pytest.raises(ValueError, match=r"cannot scatter an input of shape \[\] along dim 0"):
        DataParallel(nn.Identity(), device_ids=CPU2)(dtrain.tensor(1.0))
    with pytest.raises(ValueError, match=r"cannot scatter an input of shape \[4\] along dim 1"):
        scatter(dtrain.zeros(4), CPU2, dim=1)
    with pytest.raises(ValueError, match=r"All dicts must have the same number of keys.*\[1, 2\]"):
        gather([{"a": dtrain.zeros(1)}, {"a": dtrain.zeros(1), "b": dtrain.zeros(1)}], "cpu")
    with pytest.raises(TypeError, match="cannot gather replica outputs of type int"):
        gather([1, 2], "cpu")


def test_example_learns_digits():
    """examples/data_parallel.py (two CPU replicas) reaches >= 90% test accuracy in 5 epochs."""
    pytest.importorskip("sklearn")
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "data_parallel.py")
    acc, history = runpy.run_path(path)["main"](["--quiet", "--epochs", "5"])
    assert acc >= 0.9 and history[-1] < history[0] / 3, (acc, history)
