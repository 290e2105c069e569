"""``python -m dtrain.launch``: the built-in job, scripts on N ranks, failures that end the
whole job, signal forwarding, and bad command lines."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from comm_helpers import ROOT, clean_env, output, python, require_mpi, run

LAUNCH = ("-m", "dtrain.launch")


def records(stdout):
    """The JSON objects rank_echo.py printed (the ranks' lines may interleave)."""
    return [json.loads(m) for m in re.findall(r"\{[^{}]*\}", stdout)]


def losses(stdout):
    return [float(x) for x in re.findall(r"train loss (\S+)", stdout)]


def test_builtin_job_matches_a_single_process():
    """The default job under mpiexec -n 2 reports test accuracy and the same losses as one process."""
    mpiexec = require_mpi()
    two = run([mpiexec, "-n", "2", sys.executable, *LAUNCH, "--epochs", "3"], timeout=60)
    one = python(*LAUNCH, "--epochs", "3", timeout=60)
    assert two.returncode == 0 and one.returncode == 0, output(two) + output(one)
    assert two.stdout.count("test accuracy") == 3 and "done: 2 rank(s)" in two.stdout, output(two)
    assert float(re.findall(r"test accuracy (\S+)", two.stdout)[-1]) > 0.85, output(two)
    assert losses(two.stdout) == pytest.approx(losses(one.stdout), rel=1e-5), output(two) + output(one)


def test_nproc_runs_a_script_on_every_rank():
    """--nproc 2 script.py args: each rank runs the script as __main__ with its argv and folder."""
    require_mpi()
    result = python(*LAUNCH, "--nproc", "2", "tests/comm/rank_echo.py", "--flag", "x", timeout=60)
    assert result.returncode == 0, output(result)
    seen = sorted(records(result.stdout), key=lambda r: r["rank"])
    assert [r["rank"] for r in seen] == [0, 1], output(result)
    for r in seen:
        assert r["name"] == "__main__" and r["argv"] == ["tests/comm/rank_echo.py", "--flag", "x"]
        assert r["path0"] == os.path.join(ROOT, "tests", "comm") and r["world"] == 2
        assert r["local_rank"] == r["rank"] and r["gathered"] == [0, 1]


@pytest.mark.parametrize("how, code", [("raise", 1), ("--exit", 3)])
def test_a_failing_rank_ends_the_job(how, code):
    """Rank 1 raising (or exiting 3) while rank 0 waits in all_reduce ends the job within 15 s
    with 'rank 1 failed' and rank 1's exit code."""
    require_mpi()
    start = time.perf_counter()
    result = python(*LAUNCH, "--nproc", "2", "tests/comm/rank_fails.py", how, timeout=15)
    assert time.perf_counter() - start < 15
    assert result.returncode == code, output(result)
    assert "rank 1 failed" in result.stderr and "unreachable" not in result.stdout, output(result)


def test_sigterm_reaches_every_rank():
    """SIGTERM to a standalone launcher stops its ranks and the launcher exits non-zero."""
    require_mpi()
    proc = subprocess.Popen([sys.executable, *LAUNCH, "--nproc", "2", "tests/comm/rank_echo.py", "--sleep"],
                            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = ""
        deadline = time.monotonic() + 30
        while seen.count("ready") < 2 and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert seen.count("ready") == 2, f"the ranks did not start:\n{seen}"
        pids = [r["pid"] for r in records(seen)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) != 0
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("args, message", [
    (["no/such/script.py"], "script 'no/such/script.py' does not exist"),
    (["--nproc", "0", "tests/comm/rank_echo.py"], "--nproc must be >= 1, got 0"),
    (["--nproc", "two"], "--nproc must be an integer >= 1, got 'two'"),
    (["--backend", "gloo"], "invalid choice: 'gloo'"),
])
def test_bad_command_lines_are_argparse_errors(args, message):
    """A missing script or a bad option value is a usage error (exit code 2) that quotes it."""
    result = python(*LAUNCH, *args)
    assert result.returncode == 2 and message in result.stderr, output(result)


def test_nproc_must_match_the_process_manager():
    """--nproc 3 under mpiexec -n 2 is refused: the process manager decides the rank count."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "2", sys.executable, *LAUNCH, "--nproc", "3", "tests/comm/rank_echo.py"], timeout=30)
    assert result.returncode != 0 and "--nproc 3 but MPICH/Hydra started 2 ranks" in result.stderr, output(result)
