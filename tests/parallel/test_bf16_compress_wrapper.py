"""bf16_compress_wrapper (dtrain.distributed.algorithms.ddp_comm_hooks.default_hooks).

Across processes: bf16_wrapper_checks.py under ``mpiexec -n 2``, with ``--pytorch`` where
torch is installed (PyTorch's wrapper on gloo beside dtrain's). In this process, on a world
of one: the single-rank paths, exactly (on the CPU the hook computes in bfloat16; without
a bfloat16 dtype, as on a GPU: round in, the hook in float32, round out), the divisor rule,
the errors, the exports.
"""
import importlib.util
import json
import sys

import numpy as np
import pytest

import dtrain
from comm_helpers import assert_all_checks_passed, output, require_mpi, run
from ddp_jobs import passed
from dtrain.distributed.algorithms import ddp_comm_hooks
from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks
from dtrain.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD
from dtrain.parallel.comm_hooks import to_bfloat16_precision
from powersgd_reference import FakeBucket
from test_powersgd import train_one_rank

HAVE_TORCH = importlib.util.find_spec("torch") is not None
CHECKS = 2  # the check_* functions of bf16_wrapper_checks.py
TORCH_CHECKS = 2  # its pytorch_* functions, run with --pytorch
WRAPPERS = [default_hooks.fp16_compress_wrapper, default_hooks.bf16_compress_wrapper]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One 2-rank job: the checks, and the comparisons with PyTorch where torch is installed."""
    path = tmp_path_factory.mktemp("bf16_wrapper") / "results.json"
    result = run([require_mpi(), "-n", "2", sys.executable, "tests/parallel/bf16_wrapper_checks.py", str(path),
                  *(["--pytorch"] if HAVE_TORCH else [])], timeout=120)
    assert path.exists(), output(result)  # a check that failed is reported by its own test
    return result, json.loads(path.read_text())


def test_every_rank_ran_every_check(job):
    """Both ranks ran all checks of bf16_wrapper_checks.py (2, plus 2 against PyTorch where
    torch is installed), and all passed."""
    assert_all_checks_passed(job[0], 2, CHECKS + TORCH_CHECKS * HAVE_TORCH)


def test_wrapper_of_allreduce_is_bf16_compress_hook_at_two_ranks(job):
    """At 2 ranks, bf16_compress_wrapper(allreduce_hook) gives bf16_compress_hook's averages
    bit for bit (float32 and float64 buckets, magnitudes 1e-30 to 1e30), bfloat16 values in
    the bucket's dtype, written into the bucket; and DDP trains an MLP to the same parameters
    with either (several buckets), the same on both ranks, not float32's."""
    passed(job[1], "check_wrapper_of_allreduce_equals_bf16_compress_hook")
    passed(job[1], "check_ddp_wrapper_of_allreduce_equals_bf16_compress_hook")


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_equals_pytorch(job):
    """At 2 ranks, against PyTorch's bf16_compress_wrapper on gloo: wrapping allreduce_hook,
    the same averages bit for bit; wrapping powerSGD_hook (rank 1 and 3, 5 steps, the same
    random_seed), outputs on the bfloat16 grid, P, Q and error feedback kept in bfloat16,
    outputs and error feedback within 4e-2 of PyTorch's (measured 1.8e-2: NumPy's bfloat16
    sums round where PyTorch's add up in float32; the reasoning is in bf16_wrapper_checks.py)."""
    passed(job[1], "pytorch_allreduce_wrapper_equals_dtrain")
    passed(job[1], "pytorch_powersgd_wrapper_close_to_dtrain")


# ---- in this process, on a world of one ------------------------------------------------
def is_bfloat16(a):
    return not (np.asarray(a, np.float32).view(np.uint32) & 0xFFFF).any()


class DivBucket(FakeBucket):
    """FakeBucket with the divisor allreduce_hook reads (DDP's world size)."""

    def __init__(self, flat, shapes, divisor=1):
        super().__init__(flat, shapes, 0, True)
        self._div_factor = divisor


def test_ddp_wrapper_of_allreduce_is_bf16_compress_hook(world):
    """Through DDP at world size 1, bf16_compress_wrapper(allreduce_hook) trains an MLP
    (float64) as bf16_compress_hook does, exactly, and not as float64 averaging does."""
    wrapped = train_one_rank(default_hooks.bf16_compress_wrapper(default_hooks.allreduce_hook), None)
    np.testing.assert_array_equal(wrapped, train_one_rank(default_hooks.bf16_compress_hook, None))
    assert not np.array_equal(wrapped, train_one_rank(None, None))


def powersgd_steps(wrapped, dtype, plain_input, plain_output):
    """6 steps x 2 buckets (compression from step 2, rank 1 and 3) through
    bf16_compress_wrapper(powerSGD_hook) and, beside it, powerSGD_hook on ``plain_input(g)``
    with ``plain_output(result)`` cast to ``dtype``: those are equal, bit for bit, and the
    outputs are bfloat16 values in the bucket; so are the states' error feedback, P and Q
    (dtype included); and every approximated output differs from float32 PowerSGD's on the
    unrounded gradients. Returns the wrapped hook's state."""
    shapes = [[(20, 8), (8,), (6, 7)], [(33, 17), (64, 3)]]
    rng, differs = np.random.default_rng(5), 0
    for kw in ({}, {"matrix_approximation_rank": 3}):
        states = [powerSGD.PowerSGDState(None, start_powerSGD_iter=2, **kw) for _ in range(3)]
        for step in range(6):
            for index, bucket_shapes in enumerate(shapes):
                g = rng.standard_normal(sum(int(np.prod(s)) for s in bucket_shapes)).astype(dtype)
                bucket = FakeBucket(g.copy(), bucket_shapes, index, index == 1)
                got = wrapped(states[0], bucket).wait()
                want = powerSGD.powerSGD_hook(states[1], FakeBucket(plain_input(g), bucket_shapes, index, index == 1))
                want = plain_output(want.wait()).astype(dtype)
                assert got is bucket.flat and got.dtype == dtype, (type(got), got.dtype)
                np.testing.assert_array_equal(got, want, err_msg=f"{kw}, step {step}, bucket {index}")
                assert is_bfloat16(got)
                unrounded = powerSGD.powerSGD_hook(states[2], FakeBucket(g.astype(np.float32), bucket_shapes, index,
                                                                         index == 1))
                differs += not np.array_equal(got, to_bfloat16_precision(unrounded.wait().copy()).astype(dtype))
        assert states[0].iter == 6 and sorted(states[0].error_dict) == sorted(states[1].error_dict) == [0, 1]
        for field in ("error_dict", "p_memory_dict", "q_memory_dict"):
            for index, kept in getattr(states[1], field).items():
                assert getattr(states[0], field)[index].dtype == kept.dtype, (field, kept.dtype)
                np.testing.assert_array_equal(getattr(states[0], field)[index], kept)
    # every output that PowerSGD approximated: 4 steps x 2 buckets at rank 1, 4 x bucket 1 at rank 3
    # (at rank 3 bucket 0 compresses nothing: (20, 8) and (6, 7) save less than twice); the
    # averages before and beside compression are the same rounded once or twice
    assert differs == 12, f"{differs} of the 12 compressed outputs differ from unrounded PowerSGD's"
    return states[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_rank_powersgd_computes_in_bfloat16(world, dtype):
    """On the CPU the wrapper is, as PyTorch's: the bucket cast to bfloat16 (through float32,
    as torch rounds a float64), powerSGD_hook on that copy, the result cast back into the
    bucket in its dtype. At world size 1, 6 steps x 2 buckets, rank 1 and 3: outputs, error
    feedback, P and Q equal that bit for bit; P, Q and the error feedback are bfloat16, as
    in PyTorch; the outputs are not float32 PowerSGD's on the unrounded gradients."""
    bf16 = dtrain.bfloat16
    state = powersgd_steps(default_hooks.bf16_compress_wrapper(powerSGD.powerSGD_hook), dtype,
                           lambda g: g.astype(np.float32).astype(bf16), lambda out: out)
    assert all(a.dtype == bf16 for a in [*state.error_dict.values(), *state.q_memory_dict.values()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_rank_emulation_is_rounded_float32(world, monkeypatch, dtype):
    """Where there is no bfloat16 dtype (CuPy, or no ml_dtypes: made so here), the wrapper
    is: the bucket rounded to bfloat16 in a float32 copy, powerSGD_hook on it, the result
    rounded to bfloat16 and cast back. The same 6 x 2 steps equal that bit for bit; the
    error feedback is the float32 hook's."""
    monkeypatch.setattr(default_hooks, "_host_bfloat16", lambda buf: None)
    state = powersgd_steps(default_hooks.bf16_compress_wrapper(powerSGD.powerSGD_hook), dtype,
                           lambda g: to_bfloat16_precision(g.astype(np.float32)),
                           lambda out: to_bfloat16_precision(out.copy()))
    assert all(a.dtype == np.float32 for a in state.error_dict.values())


def test_rounds_before_dividing_as_pytorch(world):
    """With a divisor that is not a power of two (3), the wrapper divides the rounded values
    and rounds again, as PyTorch's bfloat16 arithmetic (here ml_dtypes', the same rounding),
    bit for bit; bf16_compress_hook divides first and rounds once: the two differ by one
    bfloat16 step (2**-7 relative at most) in about a quarter of the values (2,655 of 10,000)."""
    g = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    got = default_hooks.bf16_compress_wrapper(default_hooks.allreduce_hook)(None, DivBucket(g.copy(), [(10_000,)],
                                                                                              3)).wait()
    bf16 = dtrain.bfloat16
    divided = g.astype(bf16) / np.array(3, bf16)
    assert divided.dtype == bf16, divided.dtype
    np.testing.assert_array_equal(got, divided.astype(np.float32))
    hook = default_hooks.bf16_compress_hook(None, DivBucket(g.copy(), [(10_000,)], 3)).wait()
    differ = np.count_nonzero(got != hook)
    assert 2_000 < differ < 3_500, differ
    assert (np.abs(got - hook) <= 2 ** -7 * np.abs(hook)).all()


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
def test_hook_without_future_is_an_error(world, wrapper):
    """A wrapped hook that returns no Future (it reduced in place and returned None) is a
    TypeError naming the wrapper and the hook (PyTorch fails on None.then)."""
    def reduce_in_place(state, bucket):
        bucket.buffer()[...] *= 1
    with pytest.raises(TypeError, match=rf"{wrapper.__name__}: the wrapped hook .*reduce_in_place returned NoneType, "
                                        r"not a Future: a comm hook must return the Future of its reduction"):
        wrapper(reduce_in_place)(None, DivBucket(np.ones(6, np.float32), [(2, 3)]))


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
def test_result_of_another_size_is_an_error(world, wrapper):
    """A wrapped hook whose Future gives an array of another size than the bucket is a
    RuntimeError naming both sizes (the bucket is left as it was)."""
    from dtrain.parallel.comm_hooks import Future

    def half(state, bucket):
        return Future(None, bucket.buffer()[:3])
    flat = np.arange(6, dtype=np.float32)
    fut = wrapper(half)(None, DivBucket(flat, [(2, 3)]))
    with pytest.raises(RuntimeError, match=rf"{wrapper.__name__}: the wrapped hook .*half gave 3 elements for a "
                                           r"bucket of 6 elements"):
        fut.wait()
    np.testing.assert_array_equal(flat, np.arange(6))


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
def test_not_a_hook_is_an_error(wrapper):
    """Wrapping something that cannot be called is a TypeError at once, quoting it."""
    with pytest.raises(TypeError, match=rf"{wrapper.__name__}: hook must be a comm hook, callable as "
                                        r"hook\(state, bucket\), got 'allreduce_hook'"):
        wrapper("allreduce_hook")


def test_exported_as_pytorch():
    """default_hooks' __all__ is PyTorch 2.13's, bf16_compress_wrapper included, and the
    package docstring names it; the wrapped hook has PyTorch's name."""
    assert default_hooks.__all__ == ["allreduce_hook", "fp16_compress_hook", "bf16_compress_hook",
                                     "fp16_compress_wrapper", "bf16_compress_wrapper"]
    assert ddp_comm_hooks.default.bf16_compress_wrapper is default_hooks.bf16_compress_wrapper
    assert "bf16_compress_wrapper(hook)" in ddp_comm_hooks.__doc__
    assert default_hooks.bf16_compress_wrapper(default_hooks.allreduce_hook).__name__ == "bf16_compress_wrapper_hook"


@pytest.mark.gpu
def test_one_rank_ddp_on_gpu_is_the_emulation(world, monkeypatch):
    """On a GPU (on a CPU: the tests' CuPy emulation) there is no bfloat16 dtype:
    bf16_compress_wrapper(powerSGD_hook) through DDP trains as the float32 emulation does on
    the CPU (made to use it), exactly, and within 5e-3 of the CPU's bfloat16 computation
    (6 SGD steps); the copy, the rounding and the write-back follow the bucket's device."""
    def hook_and_state():
        return default_hooks.bf16_compress_wrapper(powerSGD.powerSGD_hook), powerSGD.PowerSGDState(
            None, start_powerSGD_iter=2)
    on_gpu, in_bfloat16 = train_one_rank(*hook_and_state(), "cuda"), train_one_rank(*hook_and_state())
    monkeypatch.setattr(default_hooks, "_host_bfloat16", lambda buf: None)
    np.testing.assert_array_equal(on_gpu, train_one_rank(*hook_and_state()))
    assert 0 < np.linalg.norm(on_gpu - in_bfloat16) <= 5e-3 * np.linalg.norm(in_bfloat16)  # measured 9.4e-4
