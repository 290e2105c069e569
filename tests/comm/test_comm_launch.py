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


@pytest.mark.parametrize("ranks", [1, 2])
def test_builtin_gpt_job(ranks, tmp_path):
    """With no script, mpiexec -n 2 (or one plain process) runs examples/gpt.py with the job
    options: rank 0 alone prints the model, then the loss, tokens/s, ranks and wall time, then
    a sample of generated text. (Run in a scratch folder: the job writes runs/gpt/ there.)"""
    command = [sys.executable, *LAUNCH, "--steps", "4", "--quiet"]
    command = [require_mpi(), "-n", "2", *command] if ranks == 2 else command
    env = dict(clean_env(), PYTHONPATH=ROOT)  # dtrain from this checkout, whatever the folder
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (tmp_path / "runs" / "gpt" / "gpt-4.ckpt").is_file(), output(result)
    assert result.returncode == 0, output(result)
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("GPT: 4 layers, 4 heads, 128 wide, block 64") and \
        lines[0].endswith(f"{ranks} rank(s) x batch {16 // ranks}"), output(result)
    final = [line for line in lines if line.startswith("loss ")]
    assert len(final) == 1 and re.search(rf"\| tokens/s [\d,]+ \| ranks {ranks} \| wall", final[0]), output(result)
    assert lines.index(final[0]) + 1 == lines.index("sample:"), output(result)


def test_builtin_job_options_are_checked():
    """An option of the other built-in job is an error naming the job that takes it."""
    result = python(*LAUNCH, "--job", "digits", "--steps", "3", timeout=30)
    assert result.returncode == 2 and "--steps is an option of the built-in job gpt, not of --job digits" \
        in result.stderr, output(result)


@pytest.mark.parametrize("ranks", [1, 2])
def test_builtin_digits_job(ranks):
    """--job digits: mpiexec -n 2 (or one plain process) runs examples/ddp_digits.py with the
    job options: rank 0 alone prints a line per epoch with the loss and test accuracy, then
    one with the ranks, samples/s and wall time; 5 epochs reach 90% test accuracy."""
    command = [sys.executable, *LAUNCH, "--job", "digits", "--epochs", "5", "--batch-size", "16"]
    result = run([require_mpi(), "-n", "2", *command] if ranks == 2 else command, timeout=60)
    assert result.returncode == 0, output(result)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"DDP on the digits MLP: {ranks} rank(s) x batch 16, 5 epochs", output(result)
    epochs = [line for line in lines if "test accuracy" in line and line.startswith("epoch")]
    assert len(epochs) == 5 and all(re.search(r"loss \d", line) for line in epochs), output(result)
    final = re.fullmatch(r"ranks (\d+)  samples/s (\d+)  wall (\S+) s  final test accuracy (\S+)", lines[-1])
    assert final and int(final[1]) == ranks and float(final[3]) > 0 and float(final[4]) > 0.9, output(result)
    assert len(lines) == 7, output(result)


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


@pytest.mark.parametrize("how, code, message", [
    ("raise", 1, "rank 1 failed: RuntimeError: boom on purpose"),
    ("--exit", 3, "rank 1 exited with code 3"),
    ("--exit-text", 1, "rank 1 exited with code 1: bad setting on purpose"),
    ("--raise-exit-text", 1, "rank 1 exited with code 1: bad setting on purpose")])
def test_a_failing_rank_ends_the_job(how, code, message):
    """Rank 1 raising (or exiting 3) while rank 0 waits in all_reduce ends the job within 15 s
    with the reason, once, and rank 1's exit code."""
    require_mpi()
    start = time.perf_counter()
    result = python(*LAUNCH, "--nproc", "2", "tests/comm/rank_fails.py", how, timeout=15)
    assert time.perf_counter() - start < 15
    assert result.returncode == code, output(result)
    assert result.stderr.count(message) == 1 and "unreachable" not in result.stdout, output(result)


def test_an_exit_message_survives_the_abort_under_mpiexec():
    """sys.exit("text") on rank 1 under a plain mpiexec: the job ends with the text in its
    report (Python prints it only at exit, after the abort that ends the peers)."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "2", sys.executable, "tests/comm/rank_fails.py", "--exit-text"], timeout=30)
    assert result.returncode != 0, output(result)
    assert "rank 1 exited with code 1: bad setting on purpose" in result.stderr, output(result)


def test_sigterm_reaches_every_rank():
    """SIGTERM to a standalone launcher stops its ranks and the launcher exits non-zero."""
    require_mpi()
    proc, seen = _start_until_ready("tests/comm/rank_echo.py", "--sleep")
    try:
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


def _start_until_ready(script, *script_args, env=None):
    """Start ``script`` on 2 ranks under the launcher; returns (process, output so far) once
    both ranks have printed "ready" (the process is killed if they do not within 30 s)."""
    proc = subprocess.Popen([sys.executable, *LAUNCH, "--nproc", "2", script, *script_args],
                            cwd=ROOT, env=env or clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen = ""
    deadline = time.monotonic() + 30
    while seen.count("ready") < 2 and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    if seen.count("ready") < 2:
        proc.kill()
        proc.wait()
    assert seen.count("ready") == 2, f"the ranks did not start:\n{seen}"
    return proc, seen


def _start_then_term(*script_args, env=None):
    """Start rank_sigterm.py on 2 ranks, SIGTERM the launcher once both are ready; returns
    (exit code, seconds from SIGTERM to exit, output)."""
    proc, seen = _start_until_ready("tests/comm/rank_sigterm.py", *script_args, env=env)
    try:
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        return proc.returncode, time.perf_counter() - start, seen + rest
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_lets_ranks_finish_their_step():
    """SIGTERM is forwarded, not a kill: ranks that handle it finish (both print 'saved'), and
    the launcher exits 143 (128 + SIGTERM) so a caller can tell a preempted job from a finished one."""
    require_mpi()
    code, seconds, text = _start_then_term()
    assert code == 143 and "rank 0 saved" in text and "rank 1 saved" in text, text
    assert "got SIGTERM: forwarded to the 2 ranks" in text and "failed" not in text, text


def test_ranks_ignoring_sigterm_are_killed_after_the_grace_period():
    """Ranks that ignore SIGTERM are killed DTRAIN_TERM_GRACE (here 1 s) later, not waited for."""
    require_mpi()
    code, seconds, text = _start_then_term("--ignore", env=clean_env(DTRAIN_TERM_GRACE="1"))
    assert code == 143 and 1 <= seconds < 10, f"{seconds:.1f} s\n{text}"
    assert "did not exit within 1 s of SIGTERM: killing them" in text, text


def test_bad_term_grace_is_refused():
    """A DTRAIN_TERM_GRACE that is not a number of seconds is named in the error."""
    require_mpi()
    result = python(*LAUNCH, "--nproc", "2", "tests/comm/rank_echo.py", env=clean_env(DTRAIN_TERM_GRACE="soon"))
    assert result.returncode == 1 and "DTRAIN_TERM_GRACE='soon' must be a number of seconds" in result.stderr, \
        output(result)


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
    assert result.returncode != 0, output(result)
    assert re.search(r"--nproc 3 but (MPICH/Hydra|Open MPI) started 2 ranks", result.stderr), output(result)
