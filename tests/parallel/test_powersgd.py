"""PowerSGD (dtrain.distributed.algorithms.ddp_comm_hooks.powerSGD_hook).

Across processes: powersgd_checks.py runs under ``mpiexec -n {2, 4}`` (the hook against the
NumPy reference of powersgd_reference.py simulating all ranks; DDP + PowerSGD) and, where
torch is installed, ``-n 2 --pytorch`` (against PyTorch's hook and DDP on gloo). In this
process, on a world of one: the random start against ``torch.randn``, the state's
arguments, the compression rule, the step count, the error paths, pickling.
"""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import dtrain
import dtrain.comm as dist
import dtrain.nn as nn
import dtrain.nn.functional as F
from comm_helpers import ROOT, assert_all_checks_passed, clean_env, output, require_mpi, run
from ddp_jobs import Job, passed
from dtrain.distributed.algorithms import ddp_comm_hooks
from dtrain.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD
from dtrain.distributed.algorithms.ddp_comm_hooks.torch_normal import TorchNormal
from dtrain.parallel import DistributedDataParallel as DDP
from dtrain.parallel import comm_hooks
from powersgd_reference import FakeBucket, Reference

CHECKS = 5  # the check_* functions of powersgd_checks.py


def checks_job(n, folder, *args):
    path = folder / "results.json"
    result = run([require_mpi(), "-n", str(n), sys.executable, "tests/parallel/powersgd_checks.py", str(path), *args],
                 timeout=120)
    assert path.exists(), output(result)  # a check that failed is reported by its own test
    return Job(n, result, json.loads(path.read_text()))


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"{n}ranks")
def job(request, tmp_path_factory):
    return checks_job(request.param, tmp_path_factory.mktemp("powersgd"))


def test_every_rank_ran_every_check(job):
    """Each rank of the 2- and 4-rank jobs ran all 5 checks of powersgd_checks.py, and all passed."""
    assert_all_checks_passed(job.process, job.world_size, CHECKS)


def test_hook_equals_reference(job):
    """powerSGD_hook, 5 configurations (rank 1/2/3 with QR, batched shapes, no warm start, no
    error feedback) x float64/float32: each rank's output and error feedback equal the NumPy
    reference simulating all ranks (1e-12 / 1e-5)."""
    passed(job.results, "check_hook_equals_reference")


def test_batched_hook_equals_reference(job):
    """batched_powerSGD_hook (the bucket as one zero-padded square) equals the reference."""
    passed(job.results, "check_batched_hook_equals_reference")


def test_ddp_full_rank_equals_plain_ddp(job):
    """At full rank PowerSGD is exact: DDP + PowerSGD trains the GPT example's model as
    plain DDP does (1e-9, float64, several buckets)."""
    passed(job.results, "check_ddp_full_rank_equals_plain_ddp")


def test_ddp_low_rank(job):
    """DDP + rank-1 PowerSGD: identical parameters on every rank; plain DDP before
    start_powerSGD_iter; each bucket's output equals the reference fed with every rank's
    bucket; .grad holds it; the error kept is input + previous error - output."""
    passed(job.results, "check_ddp_low_rank_through_reference")


def test_changed_bucket_is_an_error(job):
    """A bucket whose size changed after compression started: a RuntimeError naming it."""
    passed(job.results, "check_changed_bucket_is_an_error")


def test_equals_pytorch(tmp_path):
    """At 2 ranks, against PyTorch's powerSGD_hook and DDP on gloo (where torch is installed):
    the same state and per-rank gradients give the same outputs, error feedback and Qs
    (1e-12 float64, 1e-5 float32; the same random_seed, no Q copied over), so do
    fp16_compress_wrapper(powerSGD_hook)'s (to float16's precision), and DDP + PowerSGD trains
    an MLP to the same parameters (1e-10)."""
    pytest.importorskip("torch")
    job = checks_job(2, tmp_path, "--pytorch")
    assert_all_checks_passed(job.process, 2, 3)
    passed(job.results, "pytorch_hook_equals_dtrain")
    passed(job.results, "pytorch_fp16_wrapper_equals_dtrain")
    passed(job.results, "pytorch_ddp_equals_dtrain")


# ---- in this process, on a world of one ------------------------------------------------
@pytest.fixture(scope="module")
def world():
    """A world of one process for this file's in-process tests; one that exists already is kept."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group()
    yield
    dist.destroy_process_group()


RANDN_SHAPES = [(1, 128, 1), (1, 10, 1), (3, 5), (2, 40, 2), (1, 1, 1), (17,), (33,), (16,), (1, 7, 2)]
RANDN_SCRIPT = """
import numpy as np, torch
from dtrain.distributed.algorithms.ddp_comm_hooks.torch_normal import TorchNormal
for dtype in ("float32", "float64", "float16"):
    for seed in (0, 123456789, 999999999):
        torch.manual_seed(seed)
        ours = TorchNormal(seed)
        for shape in {shapes}:  # one generator through all shapes: the small path's cached sample carries over
            want = torch.randn(*shape, dtype=getattr(torch, dtype)).numpy()
            got = ours.randn(shape, dtype)
            assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.shape)
            assert np.array_equal(got, want), (dtype, seed, shape, np.abs(got - want).max())
print("ok")
"""


def test_random_start_equals_torch_randn():
    """TorchNormal(seed).randn gives torch.manual_seed(seed); torch.randn's values bit for
    bit, call after call, for float32/float64/float16 and sizes on both of its paths (< 16
    elements, >= 16 with and without a partial block), against PyTorch's scalar kernel
    (ATEN_CPU_CAPABILITY=default; its vectorised kernels differ in the last bits, within the
    tolerance of test_equals_pytorch, which runs them)."""
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-c", RANDN_SCRIPT.format(shapes=RANDN_SHAPES)], cwd=ROOT,
                            env=clean_env(ATEN_CPU_CAPABILITY="default"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", output(result)


def test_torch_normal_seed_range():
    """A seed outside MT19937's 32 bits is refused, naming it."""
    with pytest.raises(ValueError, match=r"seed -1 is outside \[0, 2\*\*32\)"):
        TorchNormal(-1)


@pytest.mark.parametrize("kw, message", [
    (dict(matrix_approximation_rank=0), "matrix_approximation_rank must be an integer >= 1, got 0"),
    (dict(matrix_approximation_rank=1.5), "matrix_approximation_rank must be an integer >= 1, got 1.5"),
    (dict(start_powerSGD_iter=1), "start_powerSGD_iter must be > 1 when use_error_feedback or warm_start is enabled, "
                                  "got 1"),
    (dict(start_powerSGD_iter=-3, use_error_feedback=False, warm_start=False), "must be an integer >= 0, got -3"),
    (dict(min_compression_rate=-1), "min_compression_rate must be >= 0, got -1"),
    (dict(orthogonalization_epsilon=-1e-8), "orthogonalization_epsilon must be >= 0, got -1e-08"),
    (dict(random_seed=2 ** 32), r"random_seed must be an integer in \[0, 2\*\*32\), got 4294967296"),
])
def test_state_arguments_checked(kw, message):
    """PowerSGDState refuses each bad argument, quoting it and the allowed range."""
    with pytest.raises(ValueError, match=message):
        powerSGD.PowerSGDState(None, **kw)


def test_state_defaults_are_pytorchs():
    """The signature and defaults of PowerSGDState are PyTorch 2.13's."""
    import inspect
    got = {k: v.default for k, v in inspect.signature(powerSGD.PowerSGDState).parameters.items()}
    assert got == {"process_group": inspect.Parameter.empty, "matrix_approximation_rank": 1,
                   "start_powerSGD_iter": 1_000, "min_compression_rate": 2, "use_error_feedback": True,
                   "warm_start": True, "orthogonalization_epsilon": 0, "random_seed": 0,
                   "compression_stats_logging_frequency": 10_000, "batch_tensors_with_same_shape": False}


def test_module_paths():
    """PyTorch's module paths: ddp_comm_hooks.default_hooks (alias ``default``) holds the
    same built-in hooks as dtrain.parallel.comm_hooks; ``powerSGD`` is powerSGD_hook."""
    from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks
    assert ddp_comm_hooks.default is default_hooks and ddp_comm_hooks.powerSGD is powerSGD
    for name in ("allreduce_hook", "fp16_compress_hook", "bf16_compress_hook"):
        assert getattr(default_hooks, name) is getattr(comm_hooks, name)
    assert powerSGD.__all__ == ["PowerSGDState", "powerSGD_hook", "batched_powerSGD_hook"]


def test_fp16_wrapper_of_allreduce_is_fp16_compress_hook(world):
    """fp16_compress_wrapper(allreduce_hook) trains as fp16_compress_hook does (exactly, at
    world size 1 through DDP: the same float16 rounding), and differs from float32."""
    from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks
    wrapped = train_one_rank(default_hooks.fp16_compress_wrapper(default_hooks.allreduce_hook), None)
    np.testing.assert_array_equal(wrapped, train_one_rank(default_hooks.fp16_compress_hook, None))
    assert not np.array_equal(wrapped, train_one_rank(None, None))


def hook_steps(state, buckets, steps, hook=powerSGD.powerSGD_hook, seed=0):
    """``steps`` steps of ``buckets`` (lists of shapes) through ``hook``; the last step's outputs."""
    rng, outs = np.random.default_rng(seed), []
    for _ in range(steps):
        outs = []
        for i, shapes in enumerate(buckets):
            flat = rng.standard_normal(sum(int(np.prod(s)) for s in shapes))
            outs.append(hook(state, FakeBucket(flat, shapes, i, i == len(buckets) - 1)).wait())
    return outs


def test_compression_rule_and_stats(world):
    """A matrix is compressed iff (n + m) r rate < n m: (20, 8) and (6, 7) at rank 1 are, a
    vector (n + 1 > n / 2) and (6, 7) at rate 4 are not; compression_stats counts elements
    before and after, and P and Q hold (n + m) r per compressed matrix."""
    shapes = [(20, 8), (8,), (6, 7), (3, 4, 5)]
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=2)
    hook_steps(state, [shapes], 3)
    # (20, 8): 20 + 8; (6, 7): 6 + 7; (3, 4, 5) as 3 x 20: 3 + 20; the vector: 8 uncompressed
    assert state.compression_stats() == (pytest.approx(270 / 72), 270, 28 + 8 + 13 + 23)
    assert (state.p_memory_dict[0].size, state.q_memory_dict[0].size) == (20 + 6 + 3, 8 + 7 + 20)
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=2, min_compression_rate=4)
    hook_steps(state, [shapes], 3)  # at rate 4 only (20, 8) is worth it: 28 x 4 < 160, 13 x 4 >= 42, 23 x 4 >= 60
    assert state.compression_stats() == (pytest.approx(270 / 138), 270, 28 + 8 + 42 + 60)
    assert (state.p_memory_dict[0].size, state.q_memory_dict[0].size) == (20, 8)


def test_plain_average_before_start_and_step_count(world):
    """Before start_powerSGD_iter the buckets are all-reduced as they are (no state kept);
    a step counts once, at the bucket whose is_last() is true."""
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=3)
    rng = np.random.default_rng(0)
    for step in range(3):
        for i in range(3):
            flat = rng.standard_normal(160)
            out = powerSGD.powerSGD_hook(state, FakeBucket(flat.copy(), [(20, 8)], i, i == 2)).wait()
            np.testing.assert_array_equal(out, flat)  # one rank: the average is the gradient
        assert state.iter == step + 1 and not state.error_dict and not state.p_memory_dict
    hook_steps(state, [[(20, 8)]] * 3, 1)
    assert state.iter == 4 and sorted(state.error_dict) == [0, 1, 2]


def test_zero_gradient_without_epsilon_warns(world):
    """A gradient matrix of zeros orthogonalizes 0 / 0: NaN, as in PyTorch, with a warning
    naming orthogonalization_epsilon; with epsilon 1e-8 the result is zeros, silently."""
    def zeros(state):
        return powerSGD.powerSGD_hook(state, FakeBucket(np.zeros(160), [(20, 8)], 0, True)).wait()
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=0, use_error_feedback=False, warm_start=False)
    with pytest.warns(RuntimeWarning, match="Set orthogonalization_epsilon"):
        assert np.isnan(zeros(state)).all()
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=0, use_error_feedback=False, warm_start=False,
                                   orthogonalization_epsilon=1e-8)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(zeros(state), 0)


def test_warm_start_with_other_shapes_is_an_error(world):
    """Warm start over a bucket whose matrices changed shape (same size: the error feedback
    fits, P and Q do not) is a RuntimeError naming the bucket and both sizes."""
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=2)
    hook_steps(state, [[(20, 8)]], 3)
    with pytest.raises(RuntimeError, match=r"bucket 0's compressed matrices need P and Q of 8 and 20 elements, but "
                                           r"warm start kept 20 and 8"):
        powerSGD.powerSGD_hook(state, FakeBucket(np.ones(160), [(8, 20)], 0, True))


def test_state_pickles_without_process_group(world):
    """A pickled state (e.g. in a checkpoint) drops its process group (None after loading)
    and keeps the rest: the restored and the original give the same next steps."""
    state = powerSGD.PowerSGDState(dist.new_group([0]), start_powerSGD_iter=2)
    buckets = [[(20, 8), (8,)], [(12, 30)]]
    hook_steps(state, buckets, 4)
    restored = pickle.loads(pickle.dumps(state))
    assert restored.process_group is None and restored.iter == state.iter == 4
    for a, b in zip(hook_steps(state, buckets, 2, seed=1), hook_steps(restored, buckets, 2, seed=1)):
        np.testing.assert_array_equal(a, b)


def test_one_rank_reference_with_scalar_parameter(world):
    """A 0-d gradient (a scalar parameter, which PyTorch's hook cannot view) goes
    uncompressed; the bucket still equals the reference."""
    shapes = [(), (30, 9), (9,)]
    state, reference = powerSGD.PowerSGDState(None, start_powerSGD_iter=2), Reference(1, start=2)
    rng = np.random.default_rng(3)
    for step in range(4):
        flat = rng.standard_normal(1 + 270 + 9)
        got = powerSGD.powerSGD_hook(state, FakeBucket(flat.copy(), shapes, 0, True)).wait()
        np.testing.assert_allclose(got, reference.step(0, [flat], shapes, True), rtol=1e-12, atol=1e-12)


def train_one_rank(hook, state, device="cpu"):
    """6 SGD steps of a small MLP in float64 on ``device``, through DDP with ``hook`` (None:
    the plain module); the parameters, flat, on the host."""
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double().to(device)
    net = model
    if hook:
        net = DDP(model)
        net.register_comm_hook(state, hook)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(6):
        opt.zero_grad()
        x, y = dtrain.tensor(rng.standard_normal((8, 5))).to(device), dtrain.tensor(rng.integers(0, 3, 8)).to(device)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return np.concatenate([p.detach().cpu().numpy().ravel() for p in model.parameters()])


def test_one_rank_ddp_full_rank_equals_plain_module(world):
    """At world size 1, DDP + full-rank PowerSGD trains an MLP as the plain module (1e-10)."""
    state = powerSGD.PowerSGDState(None, matrix_approximation_rank=8, min_compression_rate=0, start_powerSGD_iter=2)
    np.testing.assert_allclose(train_one_rank(powerSGD.powerSGD_hook, state), train_one_rank(None, None),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
def test_one_rank_ddp_on_gpu_equals_cpu(world):
    """On a GPU (on a CPU: the tests' CuPy emulation), DDP + rank-1 PowerSGD trains as on the
    CPU (1e-12, float64): the hook's arrays, its random start and its state follow the
    bucket's device."""
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=2)
    got = train_one_rank(powerSGD.powerSGD_hook, state, "cuda")
    want = train_one_rank(powerSGD.powerSGD_hook, powerSGD.PowerSGDState(None, start_powerSGD_iter=2))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    kept = [*state.error_dict.values(), *state.p_memory_dict.values(), *state.q_memory_dict.values()]
    assert len(kept) == 3 and not any(isinstance(a, np.ndarray) for a in kept), [type(a) for a in kept]
