"""All-reduces whose ranks disagree, on the shared-memory path (issue #15): every call
carries its length, dtype and op in its window header, so a mismatch is a DistError naming
each rank's call, never a segfault (a read past a shorter slot) or a silently wrong result.
rank_shm_mismatch.py runs at 2 ranks with the default 256 KiB threshold, without the sampled
cross-rank check (DTRAIN_CHECK_EVERY=0), which would catch these calls first (test_sampled_check.py)."""
import re
import subprocess
import sys
import time

import pytest

from comm_helpers import ROOT, assert_all_checks_passed, clean_env, output, require_mpi, run

CHECKS = 4  # the checks.run calls of rank_shm_mismatch.py
SCRIPT = "tests/comm/rank_shm_mismatch.py"
CALLS = {  # the error's description of each rank's call, per case of the rank script
    "size": r"rank 0: 70000 elements of float32, op sum; rank 1: 90000 elements of float32, op sum",
    "dtype": r"rank 0: 70000 elements of float32, op sum; rank 1: 70000 elements of int32, op sum",
    "op": r"rank 0: 70000 elements of float32, op sum; rank 1: 70000 elements of float32, op max",
    "window": r"rank 0: 70000 elements of float32, op sum; rank 1: 1000000 elements of float32, op sum",
    "threshold": (r"rank 0: 70000 elements of float32, op sum, through this shared-memory all-reduce; "
                  r"rank 1: 60000 elements of float32, op sum, through MPI's all-reduce \(below the shared-memory "
                  r"threshold\)"),
}


def test_every_rank_raises_and_the_next_call_works():
    """Sizes, dtypes, ops and window sizes that differ: each a DistError on both ranks, after
    which a matching all_reduce sums correctly."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "2", sys.executable, SCRIPT], timeout=60, env=clean_env(DTRAIN_CHECK_EVERY="0"))
    assert_all_checks_passed(result, 2, CHECKS)


@pytest.mark.parametrize("case", ["size", "dtype", "op", "window", "threshold"])
def test_uncaught_mismatch_ends_the_job(case):
    """Left uncaught, the mismatch ends the job under the launcher within seconds, exit code 1,
    its message naming both ranks' calls once; no segfault, no rank gets past the call."""
    require_mpi()
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "dtrain.launch", "--nproc", "2", SCRIPT, case], cwd=ROOT,
                                env=clean_env(DTRAIN_TIMEOUT="20", DTRAIN_CHECK_EVERY="0"), capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{case}: the job hung\n{e.stdout}\n{e.stderr}")
    seconds, text = time.perf_counter() - start, result.stdout + result.stderr
    assert seconds < 15 and result.returncode == 1, f"after {seconds:.1f} s: {output(result)}"
    message = (r"rank \d failed: DistError: all_reduce #1 on ranks \[0, 1\]: the ranks called it with different "
               rf"messages \(every rank must pass the same number of elements, dtype and op\): {CALLS[case]}\n")
    assert len(re.findall(message, text)) == 1, output(result)
    assert "SIGSEGV" not in text and "unreachable" not in text, output(result)
