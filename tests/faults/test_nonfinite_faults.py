"""A NaN gradient under DDP, as a whole job: rank 1's gradient of 'mid.weight' turns NaN at
step 7 (tests/parallel/rank_nonfinite.py). With ``nonfinite="raise"`` the job ends within
seconds naming the rank, the parameter and the step; with the default ("skip") one line,
from rank 0, says so and the job trains on to a clean exit.

``SCENARIOS`` is also read by tests/faults/table.py to render the docs' table.
"""
import re
import subprocess
import sys
import time

import pytest

from comm_helpers import ROOT, clean_env, require_mpi

NPROC = "python -m dtrain.launch --nproc 2"
SCRIPT = "tests/parallel/rank_nonfinite.py"
CULPRIT = r"step 7: non-finite gradient \(nan\) on rank 1 in 'mid.weight'"
RAISED = rf"rank \d failed: NonFiniteGradientError: {CULPRIT}; DistributedDataParallel\(nonfinite='raise'\) ends the job"
SKIPPED = rf"{CULPRIT}; all ranks skip this step\n"

# Under the launcher only: with "raise" every rank raises the same error at once (so that a
# script catching it behaves alike everywhere), and a plain mpiexec prints each rank's report.
SCENARIOS = [
    {"scenario": "NaN gradient on rank 1 at step 7, DDP(nonfinite='raise')", "launcher": NPROC, "exit_code": "1",
     "max_seconds": 15.0, "message": RAISED},
    {"scenario": "NaN gradient on rank 1 at step 7, DDP default (nonfinite='skip')", "launcher": NPROC,
     "exit_code": "0", "max_seconds": 15.0, "message": SKIPPED},
]


@pytest.mark.parametrize("case", SCENARIOS, ids=[f"{c['scenario']} | {c['launcher']}" for c in SCENARIOS])
def test_nonfinite_gradient_job(case):
    """The job ends within max_seconds with the expected exit code, its output carrying the
    message exactly once (one rank reports; under "skip" every rank trains all 10 steps)."""
    require_mpi()
    mode = "raise" if "raise" in case["scenario"] else "skip"
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "dtrain.launch", "--nproc", "2", SCRIPT, mode], cwd=ROOT, env=clean_env(), capture_output=True,
                                text=True, timeout=case["max_seconds"] + 15)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{case['scenario']} under {case['launcher']}: the job hung\n{e.stdout}\n{e.stderr}")
    seconds = time.perf_counter() - start
    text = result.stdout + result.stderr
    report = f"exit code {result.returncode} after {seconds:.2f} s\n{text}"
    assert seconds < case["max_seconds"], report
    assert result.returncode == int(case["exit_code"]), report
    assert len(re.findall(case["message"], text)) == 1, report
    trained = re.findall(r"rank (\d): trained 10 steps", text)
    assert sorted(trained) == (["0", "1"] if mode == "skip" else []), report
