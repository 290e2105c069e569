"""DistributedDataParallel over the NCCL backend: ddp_checks.py's single-process
equivalences (SGD, Adam, bucket views, fp16/bf16 hooks) under ``mpiexec -n {2, 4}`` with
``--backend nccl``, each rank on GPU ``local_rank % device_count``. On a CPU they run on
the tests' CuPy emulation (``DTRAIN_CUPY_EMULATION``; one emulated GPU per rank); on real
GPUs with as many GPUs as ranks."""
import os

import pytest

import dtrain
from comm_helpers import assert_all_checks_passed, clean_env, require_mpi
from ddp_jobs import passed, run_checks

pytestmark = pytest.mark.gpu
EMULATED = os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() not in ("", "0")
CHECKS = 5  # ddp_checks.NCCL_CHECKS


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"{n}ranks")
def job(request, tmp_path_factory):
    require_mpi()
    n = request.param
    if not EMULATED and dtrain.cuda.device_count() < n:
        pytest.skip(f"NCCL needs one GPU per rank: {n} ranks, {dtrain.cuda.device_count()} GPU(s)")
    env = clean_env(DTRAIN_CUPY_EMULATION=str(n)) if EMULATED else None
    return run_checks(n, tmp_path_factory.mktemp("ddp_nccl"), timeout=120, env=env, backend="nccl")


@pytest.fixture(scope="module")
def results(job):
    return job.results


def skip_without_ml_dtypes(results):
    """Skips if the emulation could not reduce NCCL_BFLOAT16 (ml_dtypes missing: the bf16 extra)."""
    if EMULATED and any("No module named 'ml_dtypes'" in m for m in results["check_bf16_hook"].values()):
        pytest.skip("the CuPy emulation reduces NCCL_BFLOAT16 with ml_dtypes, which is not installed")


def test_every_rank_ran_every_check(job):
    """Each rank ran the 5 checks of ddp_checks.NCCL_CHECKS, and all passed."""
    skip_without_ml_dtypes(job.results)
    assert_all_checks_passed(job.process, job.world_size, CHECKS)


def test_sgd_equals_single_process_over_nccl(results):
    """SGD-momentum under DDP over NCCL ends within 1e-5 (float32) and 1e-10 (float64, several
    buckets, gradient_as_bucket_view) of one process on the concatenated batch."""
    passed(results, "check_sgd_float32")
    passed(results, "check_sgd_float64_bucket_view")


def test_adam_equals_single_process_over_nccl(results):
    """Adam under DDP over NCCL ends within 1e-5 of one process (float32)."""
    passed(results, "check_adam_float32")


def test_compression_hooks_over_nccl(results):
    """fp16_compress_hook (float16 on the wire) and bf16_compress_hook (NCCL_BFLOAT16 on the
    wire) train within 1e-2 and 5e-2 of the full-precision reference."""
    passed(results, "check_fp16_hook")
    skip_without_ml_dtypes(results)
    passed(results, "check_bf16_hook")


def test_wait_is_measured_on_the_device(results):
    """Every rank ran on the NCCL backend, and comm_stats()["wait_s"] came from CUDA events on
    the stream (under NCCL the host's waits return at once: timing them measures nothing)."""
    for rank, stats in results["info"].items():
        assert stats["backend"] == "nccl" and stats["device_timed"], stats
        assert stats["final_wait_ms"] >= 0 and stats["backward_ms"] > 0, stats
