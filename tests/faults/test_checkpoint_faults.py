"""Fault injection for checkpoints and preemption: no lost runs.

Each scenario runs examples/digits_mlp.py in a subprocess (under ``python -m dtrain.launch
--nproc 2`` with DistributedDataParallel, or as one plain process), injects the fault,
and checks the exit code, the time to exit, the message, and that the newest intact
checkpoint loads and a ``--resume auto`` run continues the uninterrupted run's per-step
losses exactly. ``SCENARIOS`` (rendered into docs/faults.md by tests/faults/table.py)
holds what each test checks.
"""
import importlib.util
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import uuid
import warnings

import pytest

from dtrain.checkpoint import CheckpointManager, load_checkpoint
from dtrain.preemption import EXIT_PREEMPTED
from test_checkpoint_untrusted import add_deflate_bomb, tamper_structure

# the digits data set comes with scikit-learn (the children import it; this module need not)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS = os.path.join(ROOT, "examples", "digits_mlp.py")
LAUNCH = "python -m dtrain.launch --nproc 2"
PLAIN = "python (1 process)"
EPOCHS = {LAUNCH: "2", PLAIN: "3"}  # of 23 and 45 steps (digits: 1437 training images, batch 32 per rank)
RUN_TIMEOUT = 60  # hard limit of every subprocess, in seconds

SIGTERM_LAUNCHER = "SIGTERM to the launcher mid-training"
SIGTERM_RANK = "SIGTERM to rank 1 only, mid-training"
SIGTERM_PLAIN = "SIGTERM to a single-process run mid-training"
CORRUPT = "newest checkpoint bit-flipped, then --resume auto"
KILL_IN_SAVE = "SIGKILL inside a checkpoint save, then --resume auto"
CRAFTED = ("two newest checkpoints crafted, checksums recomputed (a 1 GiB deflate bomb in 1 MB; a malformed "
           "structure), then --resume auto")
DISK_FULL = "disk full (ENOSPC) inside a checkpoint save, then --resume auto"
BOMB_BYTES = 1 << 30
PEAK_RSS_LIMIT = 512 << 20  # the resumed run's peak memory: far below the bomb, so it never expanded

SCENARIOS = [
    # every rank exits EXIT_PREEMPTED, and so does the launcher
    {"scenario": SIGTERM_LAUNCHER, "launcher": LAUNCH, "exit_code": EXIT_PREEMPTED, "max_seconds": 10,
     "message": "dtrain.launch: got SIGTERM: forwarded to the 2 ranks ...; rank 0: preempted (signal 15) at "
                "step N; checkpoint .../ckpt-N.ckpt saved; resume with --resume auto (each rank exits 75)"},
    {"scenario": SIGTERM_RANK, "launcher": LAUNCH, "exit_code": EXIT_PREEMPTED, "max_seconds": 10,
     "message": "rank 1: preempted (signal 15) at step N; ... and rank 0: preempted (signal None) at step N; "
                "... (both ranks stop after the same step)"},
    {"scenario": SIGTERM_PLAIN, "launcher": PLAIN, "exit_code": EXIT_PREEMPTED, "max_seconds": 10,
     "message": "rank 0: preempted (signal 15) at step N; checkpoint .../ckpt-N.ckpt saved; resume with --resume auto"},
    {"scenario": CORRUPT, "launcher": PLAIN, "exit_code": 0, "max_seconds": 30,
     "message": "RuntimeWarning: skipping checkpoint .../ckpt-N.ckpt: ...: checksum mismatch: file is corrupted"},
    {"scenario": KILL_IN_SAVE, "launcher": PLAIN, "exit_code": 128 + signal.SIGKILL, "max_seconds": 10,
     "message": "none (killed); the resumed run prints: resumed from .../ckpt-N.ckpt (the previous one)"},
    {"scenario": CRAFTED, "launcher": PLAIN, "exit_code": 0, "max_seconds": 30,
     "message": "RuntimeWarning: skipping checkpoint .../ckpt-N.ckpt: ...: array aN is compressed (zip method 8): "
                "dtrain never writes compressed members ...; RuntimeWarning: skipping checkpoint .../ckpt-N.ckpt: "
                "...: file is corrupted: bad structure at [...]: tensor index 'N' is not an unused array index ...; "
                "resumed from the third newest, peak memory < 512 MiB"},
    {"scenario": DISK_FULL, "launcher": PLAIN, "exit_code": 1, "max_seconds": 10,
     "message": "OSError: [Errno 28] No space left on device: '.../ckpt-N.ckpt' (no temporary file left); the "
                "resumed run prints: resumed from .../ckpt-N.ckpt (the previous one)"},
]
EXPECTED = {s["scenario"]: s for s in SCENARIOS}

# the child is killed inside its second save, after the temporary file is written and
# fsync'ed and before the rename that would publish it
SLOW_SAVE = """
import os, runpy, sys, time
real, calls = os.replace, [0]
def replace(src, dst):
    calls[0] += 1
    if calls[0] == 2:
        print(f"SAVING {dst}", flush=True)
        time.sleep(60)
    return real(src, dst)
os.replace = replace
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# the child's second save meets a full disk: its writes fail with ENOSPC (naming no file,
# as the kernel's does) after 4 kB
FULL_DISK_SAVE = """
import errno, os, runpy, sys
import numpy
real, calls = numpy.savez, [0]
class FullDisk:
    def __init__(self, f):
        self.f, self.room = f, 4096
    def write(self, data):
        if len(data) > self.room:
            print("DISK FULL", flush=True)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)
    def __getattr__(self, name):
        return getattr(self.f, name)
def savez(f, *args, **kwargs):
    calls[0] += 1
    return real(FullDisk(f) if calls[0] == 2 else f, *args, **kwargs)
numpy.savez = savez
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# reports the child's peak resident memory on stderr as it exits
PEAK_RSS = """
import atexit, resource, runpy, sys
atexit.register(lambda: print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} kB", file=sys.stderr))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def wrapped(wrapper, cmd):
    """``cmd`` (a plain python run) run through the Python source ``wrapper``."""
    return [sys.executable, "-c", wrapper, *cmd[1:]]


def command(launcher, *args):
    prefix = [sys.executable, "-m", "dtrain.launch", "--nproc", "2"] if launcher == LAUNCH else [sys.executable]
    return [*prefix, DIGITS, "--quiet", *args]


def child_env(marker=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="default")
    if marker:
        env["DTRAIN_FAULT_TEST"] = marker  # lets the test find this job's ranks
    return env


def run(cmd):
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=child_env(), cwd=ROOT)
    return proc, time.monotonic() - started


def losses(path):
    """``{step: loss}`` from a --loss-log file; a step logged twice is an error."""
    seen = {}
    with open(path) as f:
        for line in f:
            step, loss = line.split()
            assert int(step) not in seen, f"step {step} logged twice in {path}"
            seen[int(step)] = float(loss)
    return seen


def keep_log(path, steps):
    """Cut a --loss-log file to its first ``steps`` steps (those a checkpoint holds)."""
    with open(path) as f:
        lines = f.readlines()[:steps]
    with open(path, "w") as f:
        f.writelines(lines)


def wait_until(predicate, what, timeout=RUN_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def read_line(proc, prefix, timeout=RUN_TIMEOUT):
    """The first line of ``proc``'s stdout that starts with ``prefix`` (waiting at most ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            line = proc.stdout.readline()
            if not line:
                break  # the child closed its stdout: it ended
            if line.startswith(prefix):
                return line
    raise AssertionError(f"no line starting with {prefix!r} within {timeout} s; exit code {proc.poll()}")


def log_lines(path):
    return sum(1 for _ in open(path)) if os.path.exists(path) else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Per-step losses of uninterrupted runs: ``{launcher: {step: loss}}``."""
    out = {}
    for launcher, epochs in EPOCHS.items():
        d = tmp_path_factory.mktemp("reference")
        proc, _ = run(command(launcher, "--epochs", epochs, "--checkpoint-dir", str(d), "--loss-log",
                              str(d / "loss.log")))
        assert proc.returncode == 0, proc.stderr
        out[launcher] = losses(d / "loss.log")
    return out


def preempt(tmp_path, kill, launcher=LAUNCH):
    """Start a run, call ``kill(proc, marker)`` after 8 steps; return (proc, stderr, seconds to exit)."""
    log, marker = tmp_path / "loss.log", uuid.uuid4().hex
    proc = subprocess.Popen(command(launcher, "--epochs", EPOCHS[launcher], "--checkpoint-dir", str(tmp_path),
                                    "--loss-log", str(log), "--step-delay", "0.05"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(marker), cwd=ROOT)
    try:
        wait_until(lambda: log_lines(log) >= 8 or proc.poll() is not None, "8 training steps")
        assert proc.poll() is None, "the run ended before it could be preempted"
        signalled = time.monotonic()
        kill(proc, marker)
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        return proc, err, time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=RUN_TIMEOUT)


def check_resume_continues(tmp_path, launcher, epochs, reference, from_step, wrapper=None):
    """--resume auto (run through ``wrapper`` if given) exits 0, says where it resumed, and
    the concatenated per-step losses equal the uninterrupted run's, step for step."""
    cmd = command(launcher, "--epochs", epochs, "--checkpoint-dir", str(tmp_path), "--loss-log",
                  str(tmp_path / "loss.log"), "--resume", "auto")
    proc, _ = run(cmd if wrapper is None else wrapped(wrapper, cmd))
    assert proc.returncode == 0, proc.stderr
    assert f"resumed from {tmp_path / f'ckpt-{from_step}.ckpt'}" in proc.stdout
    assert losses(tmp_path / "loss.log") == reference  # exact: same state, same arithmetic
    return proc


def check_preempted(tmp_path, proc, err, seconds, scenario, reference, launcher=LAUNCH):
    """The exit code and time are the scenario's; every rank stopped after the same step,
    saved there and said so; --resume auto continues exactly."""
    expected = EXPECTED[scenario]
    assert proc.returncode == expected["exit_code"], err
    assert seconds < expected["max_seconds"], f"took {seconds:.1f} s to exit after the signal"
    assert "failed" not in err, err
    steps = losses(tmp_path / "loss.log")
    last = max(steps)
    assert last < len(reference), "the run was not stopped mid-training"
    assert list(steps) == list(range(1, last + 1))  # every rank-0 step up to the stop, then nothing
    for rank in range(2 if launcher == LAUNCH else 1):
        assert re.search(rf"rank {rank}: preempted \(signal \w+\) at step {last}; checkpoint ", err), err
    assert f"{tmp_path / f'ckpt-{last}.ckpt'} saved; resume with --resume auto" in err
    check_resume_continues(tmp_path, launcher, EPOCHS[launcher], reference, from_step=last)


def test_sigterm_to_launcher_saves_and_resumes(tmp_path, reference):
    """SIGTERM to `dtrain.launch --nproc 2` (forwarded to both DDP ranks): the job saves a
    checkpoint at the next step boundary and exits 75 within max_seconds; --resume auto
    continues the uninterrupted run's per-step losses exactly."""
    proc, err, seconds = preempt(tmp_path, lambda proc, marker: proc.send_signal(signal.SIGTERM))
    assert "got SIGTERM: forwarded to the 2 ranks" in err and "(signal 15)" in err, err
    check_preempted(tmp_path, proc, err, seconds, SIGTERM_LAUNCHER, reference[LAUNCH])


def rank_pid(marker, rank):
    """The pid of this job's rank ``rank`` (found by the marker in its environment)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except OSError:
            continue
        rank_var = env.get(b"PMI_RANK", env.get(b"OMPI_COMM_WORLD_RANK"))  # MPICH's Hydra, Open MPI
        if env.get(b"DTRAIN_FAULT_TEST") == marker.encode() and rank_var == str(rank).encode():
            return int(pid)
    raise AssertionError(f"no process of rank {rank} found")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's pid in /proc")
def test_sigterm_to_one_rank_stops_all_at_the_same_step(tmp_path, reference):
    """SIGTERM to rank 1 alone: the ranks agree (an all-reduce at each step boundary) and
    both stop after the same step, rank 0 saves, the job exits 75; resume continues exactly."""
    proc, err, seconds = preempt(tmp_path, lambda proc, marker: os.kill(rank_pid(marker, 1), signal.SIGTERM))
    assert "rank 0: preempted (signal None)" in err and "rank 1: preempted (signal 15)" in err, err
    check_preempted(tmp_path, proc, err, seconds, SIGTERM_RANK, reference[LAUNCH])


def test_sigterm_to_single_process_saves_and_resumes(tmp_path, reference):
    """SIGTERM to a plain `python digits_mlp.py` run: it saves at the next step boundary and
    exits 75 (EXIT_PREEMPTED); --resume auto continues the per-step losses exactly."""
    proc, err, seconds = preempt(tmp_path, lambda proc, marker: proc.send_signal(signal.SIGTERM), PLAIN)
    check_preempted(tmp_path, proc, err, seconds, SIGTERM_PLAIN, reference[PLAIN], PLAIN)


def three_checkpoints(tmp_path):
    """Run 2 of 3 epochs of the plain run, keeping the checkpoints of steps 60, 80 and 90."""
    proc, _ = run(command(PLAIN, "--epochs", EPOCHS[PLAIN], "--stop-after", "2", "--save-every", "20",
                          "--keep-last", "3", "--checkpoint-dir", str(tmp_path), "--loss-log",
                          str(tmp_path / "loss.log")))
    assert proc.returncode == 0, proc.stderr
    steps = [s for s, _ in CheckpointManager(tmp_path).checkpoints()]
    assert steps == [60, 80, 90]


def test_corrupted_newest_checkpoint_is_skipped(tmp_path, reference):
    """A bit flipped in the newest checkpoint: --resume auto warns, naming it, loads the
    previous one, and continues the uninterrupted run's losses from there."""
    three_checkpoints(tmp_path)
    newest = tmp_path / "ckpt-90.ckpt"
    data = bytearray(newest.read_bytes())
    data[random.Random(0).randrange(len(data) // 4, len(data) - 100)] ^= 0x04
    newest.write_bytes(bytes(data))
    keep_log(tmp_path / "loss.log", 80)  # the steps after ckpt-80 are run again
    expected = EXPECTED[CORRUPT]
    started = time.monotonic()
    proc = check_resume_continues(tmp_path, PLAIN, EPOCHS[PLAIN], reference[PLAIN], from_step=80)
    assert time.monotonic() - started < expected["max_seconds"]
    assert proc.returncode == expected["exit_code"]
    assert "RuntimeWarning: skipping checkpoint" in proc.stderr and "ckpt-90.ckpt" in proc.stderr, proc.stderr
    assert "corrupted" in proc.stderr or "truncated" in proc.stderr, proc.stderr


def test_crafted_checkpoints_are_skipped_without_expanding(tmp_path, reference):
    """The newest checkpoint made a deflate bomb (a member that expands to 1 GiB from 1 MB)
    and the next one given a malformed structure, both with recomputed checksums: --resume
    auto warns for each, naming it and the reason, loads the third newest without ever
    expanding the bomb (peak memory < PEAK_RSS_LIMIT), and continues the losses exactly."""
    three_checkpoints(tmp_path)
    bomb, tampered = tmp_path / "ckpt-90.ckpt", tmp_path / "ckpt-80.ckpt"
    bomb.write_bytes(add_deflate_bomb(bomb.read_bytes(), nbytes=BOMB_BYTES))
    assert bomb.stat().st_size < BOMB_BYTES // 500
    tampered.write_bytes(tamper_structure(tampered.read_bytes()))
    keep_log(tmp_path / "loss.log", 60)
    expected = EXPECTED[CRAFTED]
    started = time.monotonic()
    proc = check_resume_continues(tmp_path, PLAIN, EPOCHS[PLAIN], reference[PLAIN], from_step=60, wrapper=PEAK_RSS)
    assert time.monotonic() - started < expected["max_seconds"] and proc.returncode == expected["exit_code"]
    assert re.search(rf"RuntimeWarning: skipping checkpoint {re.escape(str(bomb))}: .*: array a\d+ is compressed "
                     r"\(zip method 8\): dtrain never writes compressed members", proc.stderr), proc.stderr
    assert re.search(rf"RuntimeWarning: skipping checkpoint {re.escape(str(tampered))}: .*: file is corrupted: "
                     r"bad structure at \[.*\]: tensor index '\d+' is not an unused array index", proc.stderr), \
        proc.stderr
    peak_kb = int(re.search(r"peak RSS (\d+) kB", proc.stderr).group(1))
    assert peak_kb * 1024 < PEAK_RSS_LIMIT, f"the resumed run peaked at {peak_kb} kB"


def test_disk_full_inside_save_names_the_file_and_keeps_previous_checkpoint(tmp_path, reference):
    """The second checkpoint save meets a full disk (writes fail with ENOSPC): the run
    exits 1 within max_seconds naming the file it was saving, leaves no temporary file,
    and --resume auto continues exactly from the previous checkpoint."""
    expected = EXPECTED[DISK_FULL]
    cmd = wrapped(FULL_DISK_SAVE, command(PLAIN, "--epochs", EPOCHS[PLAIN], "--save-every", "10", "--checkpoint-dir",
                                          str(tmp_path), "--loss-log", str(tmp_path / "loss.log")))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    try:
        read_line(proc, "DISK FULL")
        failed = time.monotonic()
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        seconds = time.monotonic() - failed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=RUN_TIMEOUT)
    assert proc.returncode == expected["exit_code"] and seconds < expected["max_seconds"], err
    assert f"OSError: [Errno 28] No space left on device: '{tmp_path / 'ckpt-20.ckpt'}'" in err, err
    assert sorted(os.listdir(tmp_path)) == ["ckpt-10.ckpt", "loss.log"]
    keep_log(tmp_path / "loss.log", 10)
    check_resume_continues(tmp_path, PLAIN, EPOCHS[PLAIN], reference[PLAIN], from_step=10)


def test_sigkill_inside_save_keeps_previous_checkpoint(tmp_path, reference):
    """SIGKILL while a checkpoint is being saved (temporary file written, not yet renamed):
    the previous checkpoint is still the newest and loads without a warning, the temporary
    file is never picked, and --resume auto continues exactly (and removes the leftover)."""
    expected = EXPECTED[KILL_IN_SAVE]
    cmd = [sys.executable, "-c", SLOW_SAVE, *command(PLAIN, "--epochs", EPOCHS[PLAIN], "--save-every", "10",
                                                       "--checkpoint-dir", str(tmp_path), "--loss-log",
                                                       str(tmp_path / "loss.log"))[1:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    try:
        line = read_line(proc, "SAVING")  # the child is inside its second save
        assert line.strip().endswith("ckpt-20.ckpt"), line
        killed = time.monotonic()
        proc.kill()
        proc.communicate(timeout=RUN_TIMEOUT)
        seconds = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=RUN_TIMEOUT)
    assert 128 - proc.returncode == expected["exit_code"] and seconds < expected["max_seconds"]
    names = os.listdir(tmp_path)
    assert any(n.startswith(".ckpt-20.ckpt.") and n.endswith(".tmp") for n in names), names
    manager = CheckpointManager(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert manager.latest() == str(tmp_path / "ckpt-10.ckpt")
        assert load_checkpoint(manager.latest(), restore_rng=False)["step"] == 10
    keep_log(tmp_path / "loss.log", 10)
    check_resume_continues(tmp_path, PLAIN, EPOCHS[PLAIN], reference[PLAIN], from_step=10)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# ---- the preemption helper, in this process ------------------------------------------------

def test_handler_records_sigterm_and_restores_the_previous_handler():
    """Inside handler(), SIGTERM only sets `requested` (and `signum`); should_stop() says so
    in a world of one process; on leaving, the previous handler is back."""
    from dtrain import preemption
    before = signal.getsignal(signal.SIGTERM)
    with preemption.handler() as stop:
        assert not stop.requested and not stop.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: stop.requested, "the signal", timeout=5)
        assert stop.should_stop() and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_exit_preempted_exits_with_its_own_code(capsys):
    """exit_preempted prints its message to stderr and raises SystemExit(EXIT_PREEMPTED),
    a code distinct from an error (1) and from a death by signal (128 + N)."""
    from dtrain import preemption
    with pytest.raises(SystemExit) as info:
        preemption.exit_preempted("stopping at step 7")
    assert info.value.code == EXIT_PREEMPTED == 75
    assert "stopping at step 7" in capsys.readouterr().err


@pytest.mark.parametrize("signals, match", [((), "at least one signal"), ((10 ** 6,), "not a valid signal"),
                                            ((signal.SIGKILL,), "SIGKILL cannot be caught")])
def test_handler_validates_signals(signals, match):
    """handler() refuses an empty list, unknown numbers and uncatchable signals."""
    from dtrain import preemption
    with pytest.raises(ValueError, match=match):
        preemption.handler(signals)


# ---- CheckpointManager on 2 ranks -----------------------------------------------------------

MANAGER_SCRIPT = """
import os, sys, warnings
import dtrain, dtrain.comm as dist, dtrain.nn as nn
from dtrain.checkpoint import CheckpointManager
from dtrain.serialization import CheckpointError
rank, root = dist.get_rank(), sys.argv[1]
report = open(f"{root}.rank{rank}", "w")  # one file per rank: lines relayed by mpiexec can interleave
dtrain.manual_seed(rank)  # different weights on each rank: a load must give rank 0's chosen file
model = nn.Linear(3, 2)
manager = CheckpointManager(root, keep_last=2)
paths = [manager.save(step, model) for step in (1, 2, 3)]
print(f"saved {[os.path.basename(p) for p in paths]} sees {sorted(os.listdir(root))}", file=report)
if rank == 0:
    data = bytearray(open(paths[-1], "rb").read())
    data[len(data) // 2] ^= 1
    open(paths[-1], "wb").write(bytes(data))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    info = CheckpointManager(root).load(model)
print(f"loaded {os.path.basename(info['path'])} warned {len(caught)}", file=report)
print(f"weight {float(model.weight.sum().item()):.6f}", file=report)
open(os.path.join(root, "blocker"), "w").close()
try:
    CheckpointManager(os.path.join(root, "blocker", "sub")).save(4, model)
except (CheckpointError, OSError) as e:
    print(f"save error {type(e).__name__}: {e}", file=report)
"""


def test_manager_on_two_ranks(tmp_path):
    """Under 2 ranks: rank 0 alone writes and prunes, save returns the same path on both;
    load skips a corrupted newest file once (rank 0 decides, so only rank 0 warns) and both
    ranks load the same checkpoint; a failed write on rank 0 raises on every rank."""
    script = tmp_path / "manager.py"
    script.write_text(MANAGER_SCRIPT)
    root = tmp_path / "ckpts"
    proc = subprocess.run([sys.executable, "-m", "dtrain.launch", "--nproc", "2", str(script), str(root)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    reports = [(tmp_path / f"ckpts.rank{rank}").read_text().splitlines() for rank in (0, 1)]
    for lines in reports:
        assert lines[0] == "saved ['ckpt-1.ckpt', 'ckpt-2.ckpt', 'ckpt-3.ckpt'] sees ['ckpt-2.ckpt', 'ckpt-3.ckpt']"
    assert reports[0][1] == "loaded ckpt-2.ckpt warned 1" and reports[1][1] == "loaded ckpt-2.ckpt warned 0"
    assert reports[0][2] == reports[1][2], reports  # the same state on both ranks
    assert reports[0][3].startswith("save error NotADirectoryError"), reports[0]
    assert reports[1][3].startswith("save error CheckpointError: rank 0 failed to save checkpoint"), reports[1]
