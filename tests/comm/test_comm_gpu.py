"""Collectives on GPU arrays: the NCCL backend, and the MPI backend moving CuPy arrays
(CUDA-aware or staged through host memory), rank r on GPU r % n; the launcher's device
binding; the watchdog on a stuck NCCL operation. Skipped without a CUDA device (real or
the tests' emulation)."""
import json
import os
import re
import sys
import time

import pytest

from comm_helpers import assert_all_checks_passed, clean_env, output, require_mpi, run

pytestmark = pytest.mark.gpu
EMULATED = os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() not in ("", "0")


def gpus():
    import dtrain
    return dtrain.cuda.device_count()


@pytest.mark.parametrize("backend", ["nccl", "mpi"])
def test_gpu_collectives_match_numpy(backend):
    """NCCL needs one GPU per rank (as many ranks as GPUs, up to 2); MPI may share one GPU.
    Each rank runs rank_gpu.py's checks: 53 all-reduces (3 dtypes x 4 sizes x 5 ops, no AVG
    of int64, no PRODUCT of 300_001 elements), data movement, host arrays and objects, the
    group's backend and device, point to point (with a peer), the float16 average (not on
    the emulated NCCL, whose ncclAvg sums in float16), a tensor on another GPU (NCCL, 2 GPUs)."""
    mpiexec = require_mpi()
    n = min(2, gpus()) if backend == "nccl" else 2
    result = run([mpiexec, "-n", str(n), sys.executable, "tests/comm/rank_gpu.py", "--backend", backend], timeout=300)
    checks = 53 + 3 + (n > 1) + (backend == "mpi" or not EMULATED) + (backend == "nccl" and gpus() > 1)
    assert_all_checks_passed(result, n, checks)


def test_launcher_binds_rank_to_device_modulo_count():
    """``dtrain.launch --nproc N`` puts rank r on GPU r % (GPUs), under the NCCL backend by
    default, and an all_reduce runs there: 4 ranks on 2 emulated GPUs (real NCCL refuses two
    ranks on one GPU: there, one rank per GPU)."""
    require_mpi()
    n = 2 if EMULATED else gpus()
    if n < 2:
        pytest.skip(f"needs 2 GPUs, {n} visible")
    ranks = 4 if EMULATED else n
    env = clean_env(DTRAIN_CUPY_EMULATION=str(n)) if EMULATED else None
    result = run([sys.executable, "-m", "dtrain.launch", "--nproc", str(ranks), "tests/comm/rank_nccl_device.py",
                  "bind"], timeout=120, env=env)
    assert result.returncode == 0, output(result)
    got = sorted((json.loads(m) for m in re.findall(r"\{[^{}]*\}", result.stdout)),  # ranks' lines may interleave
                 key=lambda r: r["rank"])
    assert [(r["rank"], r["device"], r["group_device"], r["backend"]) for r in got] == \
        [(r, r % n, r % n, "nccl") for r in range(ranks)], output(result)


def test_stuck_nccl_op_ends_the_job_naming_it():
    """An NCCL all_reduce that one rank never calls is caught by the watchdog after the
    timeout (2 s): the communicator is aborted and the job ends with a report naming the
    operation, its number on the group, the ranks and the one that has not called it."""
    mpiexec = require_mpi()
    if gpus() < 2 and not EMULATED:
        pytest.skip("needs 2 GPUs")
    env = clean_env(DTRAIN_TIMEOUT="2")
    start = time.monotonic()
    result = run([mpiexec, "-n", "2", sys.executable, "tests/comm/rank_nccl_device.py", "hang"], timeout=60, env=env)
    assert result.returncode != 0 and time.monotonic() - start < 40, output(result)
    assert "rank 0 failed: DistTimeoutError: all_reduce(float32[4]) (collective #2 on ranks [0, 1]) did not " \
           "finish within 2 s on rank 0; ranks that have not called it: [1]" in result.stderr, output(result)
    assert ("where each rank is: rank 0 is in all_reduce(float32[4]) #2 from rank_nccl_device.py:" in result.stderr
            and "; rank 1 is past all_reduce(float32[4]) #1 from rank_nccl_device.py:" in result.stderr), output(result)
    assert "the stuck all_reduce finished" not in result.stdout, output(result)
