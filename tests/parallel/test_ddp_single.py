"""DDP, its hooks and SyncBatchNorm in one process (world size 1, no MPI): argument errors,
equivalence with the plain module, and the pieces that need no peers."""
import numpy as np
import pytest

import dtrain
import dtrain.comm as dist
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.parallel import DistributedDataParallel as DDP
from dtrain.parallel import SyncBatchNorm
from dtrain.parallel.comm_hooks import fp16_compress_hook, to_bfloat16_precision
from dtrain.parallel.reducer import assign_buckets


def mlp():
    dtrain.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()


def train(model, hook=None, steps=3, **kw):
    if kw or hook:
        model = DDP(model, **kw)
        if hook:
            model.register_comm_hook(None, hook)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(dtrain.tensor(rng.standard_normal((6, 5)))),
                        dtrain.tensor(rng.integers(0, 3, 6))).backward()
        opt.step()
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


@pytest.mark.parametrize("kw", [dict(bucket_cap_mb=25), dict(bucket_cap_mb=0.0001, gradient_as_bucket_view=True)])
def test_one_rank_equals_plain_module(world, kw):
    """At world size 1, DDP trains exactly as the wrapped module (bucket layouts alike)."""
    np.testing.assert_array_equal(train(mlp(), **kw), train(mlp()))


def test_one_rank_with_hook_goes_through_buckets(world):
    """A registered hook runs even with one rank: fp16 compression rounds the gradients."""
    got, want = train(mlp(), hook=fp16_compress_hook), train(mlp())
    assert not np.array_equal(got, want)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)


def test_rewrapping_retires_the_old_wrapper(world):
    """Wrapping a module again retires the first wrapper: its fp16 hook no longer touches the gradients."""
    model = mlp()
    DDP(model).register_comm_hook(None, fp16_compress_hook)
    np.testing.assert_array_equal(train(model, bucket_cap_mb=25), train(mlp()))


def test_state_dict_keys_and_module(world):
    """ddp.module is the wrapped model; state_dict keys carry the "module." prefix, as PyTorch."""
    model = mlp()
    ddp = DDP(model)
    assert ddp.module is model
    assert list(ddp.state_dict()) == [f"module.{k}" for k in model.state_dict()]


def test_errors(world):
    """Bad arguments and misuse give errors naming the problem."""
    with pytest.raises(TypeError, match="must be a dtrain.nn.Module"):
        DDP(lambda x: x)
    with pytest.raises(RuntimeError, match="doesn't have any parameter that requires a gradient"):
        DDP(nn.ReLU())
    with pytest.raises(ValueError, match="bucket_cap_mb must be > 0, got 0"):
        DDP(mlp(), bucket_cap_mb=0)
    with pytest.raises(ValueError, match="device_ids"):
        DDP(mlp(), device_ids=[0, 1])
    ddp = DDP(mlp())
    ddp.register_comm_hook(None, fp16_compress_hook)
    with pytest.raises(RuntimeError, match="only be called once"):
        ddp.register_comm_hook(None, fp16_compress_hook)
    with pytest.raises(NotImplementedError, match="throw_on_early_termination"):
        ddp.join(throw_on_early_termination=True)


def test_two_backward_passes_for_one_forward(world):
    """A second backward reaching parameters the first already delivered, in one reduction,
    raises an error that says what to do."""
    trunk, head1, head2 = nn.Linear(3, 4), nn.Linear(4, 1), nn.Linear(4, 1)
    ddp = DDP(nn.ModuleList([trunk, head1, head2]))
    out = head1(trunk(dtrain.randn(2, 3))).sum()
    out.backward(retain_graph=True)  # head2 has no gradient: the reduction stays open
    with pytest.raises(RuntimeError, match="parameter 1.(weight|bias) got its gradient twice.*Sum the losses"):
        out.backward()
    assert ddp.reducer.in_backward


def test_needs_process_group():
    """Without init_process_group, DDP says what to call."""
    if dist.is_initialized():
        pytest.skip("a process group is initialized in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        DDP(mlp())


def test_assign_buckets_reverse_order_and_caps():
    """Buckets fill in the given order, close once they reach the cap (first cap for the
    first bucket of each dtype), and never mix dtypes."""
    params = [dtrain.zeros(100), dtrain.zeros(100), dtrain.zeros(300), dtrain.zeros(10, dtype=dtrain.float64)]
    assert assign_buckets(params, [3, 2, 1, 0], [400, 800]) == [[3], [2], [1, 0]]
    assert assign_buckets(params, [0, 1, 2, 3], [10 ** 6]) == [[0, 1, 2], [3]]


def test_bfloat16_rounding():
    """Rounding to bfloat16 keeps 8 significant bits, ties to even, and leaves inf/nan alone."""
    a = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -7 + 2 ** -9, 3.0, np.inf, -np.inf], np.float32)
    out = to_bfloat16_precision(a.copy())
    np.testing.assert_array_equal(out, [1.0, 1 + 2 ** -6, 1 + 2 ** -7, 3.0, np.inf, -np.inf])
    assert np.isnan(to_bfloat16_precision(np.array([np.nan], np.float32)))[0]


def test_sync_batchnorm_without_group_is_batchnorm():
    """Without a process group (or with one rank) SyncBatchNorm computes as BatchNorm:
    outputs, gradients and running statistics."""
    x = np.random.default_rng(1).standard_normal((6, 3, 2, 2))
    outs = []
    for layer in (nn.BatchNorm2d(3).double(), SyncBatchNorm(3).double()):
        t = dtrain.tensor(x, requires_grad=True)
        out = layer(t)
        (out * out).sum().backward()
        outs.append((out.detach().numpy(), t.grad.numpy(), layer.running_var.numpy()))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_convert_sync_batchnorm_shares_state():
    """convert_sync_batchnorm swaps every BatchNorm for a SyncBatchNorm holding the same
    parameters and buffers, and keeps the other layers."""
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm1d(3)))
    bn, inner = net[1], net[2][0]
    out = SyncBatchNorm.convert_sync_batchnorm(net)
    assert out is net and isinstance(net[1], SyncBatchNorm) and isinstance(net[2][0], SyncBatchNorm)
    assert net[1].weight is bn.weight and net[1].running_mean is bn.running_mean
    assert net[2][0].running_var is inner.running_var
    assert type(net[0]) is nn.Linear


def test_ddp_digits_example_main_one_process(capsys):
    """The example's main() runs as a world of one and returns (accuracy, per-epoch losses)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "ddp_digits.py")
    spec = importlib.util.spec_from_file_location("ddp_digits", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    acc, history = example.main(["--epochs", "3"])
    assert acc >= 0.85 and len(history) == 3 and history[-1] < history[0]
    assert "ranks 1  samples/s" in capsys.readouterr().out
