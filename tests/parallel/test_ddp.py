"""DistributedDataParallel and SyncBatchNorm across processes: ddp_checks.py runs every check
once per world size under ``mpiexec -n {2, 4}`` (with a hard timeout); each test below
asserts that one check passed on every rank, and test_every_rank_ran_every_check that each
rank ran all of them."""
import sys

import pytest

from comm_helpers import assert_all_checks_passed, clean_env, output, require_mpi, run
from ddp_jobs import passed, run_checks

CHECKS = 16  # the check_* functions of ddp_checks.py


@pytest.fixture(scope="module", params=[(2, None), (4, None), (2, "0"), (4, "0")],
                ids=lambda p: f"{p[0]}ranks" + ("-shm" if p[1] else ""))
def job(request, tmp_path_factory):
    """Every check at 2 and 4 ranks; "-shm": with DTRAIN_SHM_MIN_BYTES=0, every bucket goes
    through the shared-memory all-reduce (the test models' buckets are below its default 256 KiB)."""
    n, shm = request.param
    return run_checks(n, tmp_path_factory.mktemp("ddp"), timeout=90,
                      env=clean_env(DTRAIN_SHM_MIN_BYTES=shm) if shm else None)


@pytest.fixture(scope="module")
def results(job):
    return job.results


def test_every_rank_ran_every_check(job):
    """Each rank ran all 16 checks of ddp_checks.py, and all passed."""
    assert_all_checks_passed(job.process, job.world_size, CHECKS)


def test_sgd_momentum_float32_equals_single_process(results):
    """20 SGD-momentum steps on N ranks x batch 4 end within 1e-5 (relative) of one process
    on the concatenated batch, in float32, starting from different per-rank weights."""
    passed(results, "check_sgd_float32")


def test_gradient_as_bucket_view_float64(results):
    """With gradient_as_bucket_view and several buckets, float64 training matches the
    single-process reference within 1e-10."""
    passed(results, "check_sgd_float64_bucket_view")


def test_adam_equals_single_process(results):
    """20 Adam steps match the single-process reference within 1e-5 in float32, and within
    1e-10 in float64 with one parameter per bucket."""
    passed(results, "check_adam_float32")
    passed(results, "check_adam_float64")


def test_fp16_compress_hook(results):
    """The fp16 compression hook trains within 1e-2 of the full-precision reference."""
    passed(results, "check_fp16_hook")


def test_bf16_compress_hook(results):
    """The (emulated) bf16 compression hook trains within 5e-2 of the reference."""
    passed(results, "check_bf16_hook")


def test_buckets_launch_in_order_on_every_rank(results):
    """Buckets launch in index order even when later buckets fill first, identically on all
    ranks, and are rebuilt once in the order gradients became ready."""
    passed(results, "check_bucket_order")


def test_no_sync_accumulates_then_reduces(results):
    """no_sync communicates nothing; the next synced backward averages the accumulated sum."""
    passed(results, "check_no_sync")


def test_join_uneven_inputs_divide_by_world_size(results):
    """Ranks with different numbers of batches finish under join() (no hang), with gradients
    summed over the active ranks and divided by the initial world size (PyTorch's default)."""
    passed(results, "check_join")


def test_join_divide_by_active_ranks(results):
    """join(divide_by_initial_world_size=False) divides by the ranks that had data."""
    passed(results, "check_join_divide_by_active")


def test_find_unused_parameters(results):
    """find_unused_parameters: rank-dependent branches get the average with zeros for the
    ranks that skipped them; a layer unused everywhere keeps .grad None."""
    passed(results, "check_find_unused")


def test_find_unused_parameters_after_no_sync(results):
    """A layer used only under no_sync gets its accumulated gradient averaged by the next
    synced backward even though that forward did not use it."""
    passed(results, "check_find_unused_after_no_sync")


def test_unused_parameters_error_names_them(results):
    """Without find_unused_parameters the next forward raises, naming the parameter and the flag."""
    passed(results, "check_unused_error")


def test_construction_mismatch_error(results):
    """Different parameter shapes per rank fail at construction naming the parameter, ranks and shapes."""
    passed(results, "check_mismatch_error")


def test_sync_batchnorm_equals_global_batchnorm(results):
    """SyncBatchNorm over per-rank batches equals BatchNorm on the global batch: outputs,
    parameters and running statistics."""
    passed(results, "check_sync_batchnorm")


def test_broadcast_buffers(results):
    """Each forward starts from rank 0's buffers."""
    passed(results, "check_broadcast_buffers")


def test_overlap_is_measured(results):
    """Every rank reports backward time, the final wait and the launch times (the overlap
    itself is printed, not asserted: timings on a shared machine are noise)."""
    info = results["info"]
    assert len(info) >= 2
    for rank, stats in info.items():
        assert stats["backward_ms"] > 0 and stats["final_wait_ms"] >= 0 and stats["buckets"] >= 2, stats
        assert stats["done"] >= stats["end"]
    keys = ("backward_ms", "first_launch_ms", "final_wait_ms")
    print(f"exposed communication after the last rank's backward: {results['exposed_ms']:.2f} ms;",
          {r: {k: round(s[k], 2) for k in keys} for r, s in info.items()})


def test_ddp_digits_example_two_ranks():
    """examples/ddp_digits.py trains the digits MLP on 2 ranks to >= 90% test accuracy and
    prints the per-epoch lines and the final ranks / samples/s / wall line from rank 0 only."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "2", sys.executable, "examples/ddp_digits.py", "--epochs", "5"], timeout=60)
    assert result.returncode == 0, output(result)
    lines = result.stdout.strip().splitlines()
    assert sum(line.startswith("epoch") for line in lines) == 5, result.stdout
    final = lines[-1].split()
    assert final[:2] == ["ranks", "2"] and final[2] == "samples/s" and float(final[-1]) >= 0.9, lines[-1]
