"""Faults of the comm layer end the whole job, fast, with one message naming the rank and
the reason: a rank that raises, exits 3 or is killed; a collective one rank never calls
(blocking) or calls late (async, DDP's Work.wait path); a recv never matched; mismatched
collectives in debug mode. Each scenario runs tests/faults/comm_scripts/rank_fault.py on 2 ranks, under
``python -m dtrain.launch --nproc 2`` and, where the behaviour differs, under an external
``mpiexec -n 2 python -m dtrain.launch`` (MPICH's Hydra or Open MPI's mpirun).

``SCENARIOS`` is also read by tests/faults/table.py to render the docs' table.
"""
import os
import re
import subprocess
import sys
import time

import pytest

from comm_helpers import ROOT, clean_env, require_mpi

NPROC = "python -m dtrain.launch --nproc 2"
MPIEXEC = "mpiexec -n 2 python -m dtrain.launch"
TIMEOUT = "2"  # DTRAIN_TIMEOUT for the scenarios that time out

SCENARIOS = [
    {"scenario": "rank raises", "launcher": NPROC, "exit_code": "1", "max_seconds": 15.0,
     "message": r"rank 1 failed: ValueError: boom"},
    {"scenario": "rank raises", "launcher": MPIEXEC, "exit_code": "1", "max_seconds": 15.0,
     "message": r"rank 1 failed: ValueError: boom"},
    {"scenario": "rank calls sys.exit(3)", "launcher": NPROC, "exit_code": "3", "max_seconds": 15.0,
     "message": r"rank 1 exited with code 3"},
    {"scenario": "rank calls sys.exit(3)", "launcher": MPIEXEC, "exit_code": "3", "max_seconds": 15.0,
     "message": r"rank 1 exited with code 3"},
    {"scenario": "rank killed by SIGKILL", "launcher": NPROC, "exit_code": "137", "max_seconds": 15.0,
     "message": r"rank 1 was killed by SIGKILL"},
    # the process manager ends the job itself: MPICH's Hydra names the PID ("... Killed (signal 9)"),
    # Open MPI's mpirun the rank ("process rank 1 ... exited on signal 9 (Killed)"); the timeout is the backstop
    {"scenario": "rank killed by SIGKILL", "launcher": MPIEXEC, "exit_code": "non-zero", "max_seconds": 15.0,
     "message": r"Killed \(signal 9\)|exited on signal 9 \(Killed\)"},
    {"scenario": "collective missing on one rank (DTRAIN_TIMEOUT=2)", "launcher": NPROC, "exit_code": "1",
     "max_seconds": 15.0, "message": r"rank 0 failed: DistTimeoutError: all_reduce\(float32\[4\]\) \(collective #2 "
                                     r"on ranks \[0, 1\]\) did not finish within 2 s on rank 0; ranks that have "
                                     r"not called it: \[1\]"},
    {"scenario": "collective missing on one rank (DTRAIN_TIMEOUT=2)", "launcher": MPIEXEC, "exit_code": "1",
     "max_seconds": 15.0, "message": r"rank 0 failed: DistTimeoutError: all_reduce\(float32\[4\]\) \(collective #2 "
                                     r"on ranks \[0, 1\]\) did not finish within 2 s on rank 0; ranks that have "
                                     r"not called it: \[1\]"},
    {"scenario": "mismatched collectives (DTRAIN_DEBUG=1)", "launcher": NPROC, "exit_code": "1",
     "max_seconds": 15.0, "message": r"failed: DistError: collective mismatch \(debug mode\): rank 0 called "
                                     r"all_reduce\(float32\[4\]\); rank 1 called barrier\(\)"},
    {"scenario": "async collective times out in Work.wait (DTRAIN_TIMEOUT=2)", "launcher": NPROC,
     "exit_code": "1", "max_seconds": 15.0,
     "message": r"rank 0 failed: DistTimeoutError: all_reduce\(float32\[4\]\) \(collective #2 on ranks \[0, 1\]\) "
                r"did not finish within 2 s on rank 0; ranks that have not called it: \[1\]"},
    {"scenario": "blocking recv never matched (DTRAIN_TIMEOUT=2)", "launcher": NPROC, "exit_code": "1",
     "max_seconds": 15.0, "message": r"rank 0 failed: DistTimeoutError: recv\(float32\[4\], src=1\) did not finish "
                                     r"within 2 s on rank 0"},
]

# how each scenario is produced: rank_fault.py's mode and extra environment
MODES = {"rank raises": ("raise", {}), "rank calls sys.exit(3)": ("exit3", {}),
         "rank killed by SIGKILL": ("sigkill", {}),
         "collective missing on one rank (DTRAIN_TIMEOUT=2)": ("missing", {"DTRAIN_TIMEOUT": TIMEOUT}),
         "mismatched collectives (DTRAIN_DEBUG=1)": ("mismatch", {"DTRAIN_DEBUG": "1"}),
         "async collective times out in Work.wait (DTRAIN_TIMEOUT=2)": ("timeout", {"DTRAIN_TIMEOUT": TIMEOUT}),
         "blocking recv never matched (DTRAIN_TIMEOUT=2)": ("recv", {"DTRAIN_TIMEOUT": TIMEOUT})}

SCRIPT = os.path.join("tests", "faults", "comm_scripts", "rank_fault.py")


def _env(extra):
    """comm_helpers.clean_env (no launcher's rank variables; Open MPI may oversubscribe and run
    as root) without SLURM's or dtrain's own settings, plus ``extra``."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("SLURM_", "DTRAIN_"))}
    env.update(extra)
    return env


def _command(launcher, mode):
    mpiexec = require_mpi()
    launch = [sys.executable, "-m", "dtrain.launch"]
    if launcher == NPROC:
        return [*launch, "--nproc", "2", SCRIPT, mode]
    return [mpiexec, "-n", "2", *launch, SCRIPT, mode]


@pytest.mark.parametrize("case", SCENARIOS, ids=[f"{c['scenario']} | {c['launcher']}" for c in SCENARIOS])
def test_fault_ends_the_job(case):
    """The job ends within max_seconds, with the expected exit code, and its output carries
    the expected message exactly once (and no rank got past the broken collective)."""
    mode, extra = MODES[case["scenario"]]
    command = _command(case["launcher"], mode)
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, env=_env(extra), capture_output=True, text=True,
                                timeout=case["max_seconds"] + 15)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{case['scenario']} under {case['launcher']}: the job hung\n{e.stdout}\n{e.stderr}")
    seconds = time.perf_counter() - start
    text = result.stdout + result.stderr
    report = f"exit code {result.returncode} after {seconds:.2f} s\n{text}"
    print(f"{case['scenario']} | {case['launcher']}: exit {result.returncode} in {seconds:.2f} s")
    assert seconds < case["max_seconds"], report
    expected = case["exit_code"]
    assert result.returncode != 0 if expected == "non-zero" else result.returncode == int(expected), report
    assert len(re.findall(case["message"], text)) == 1, report
    assert "unreachable" not in text, report
