"""Run a distributed job: ``python -m dtrain.launch [--nproc N] [-m] [script.py args...]``.

torchrun's habits work: ``--nproc_per_node=N`` is ``--nproc N``, ``--standalone`` and
``--nnodes=1`` are accepted, ``-m module`` runs a module as ``python -m`` would, and every
rank finds ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment (MASTER_* are informative: the ranks connect through MPI;
values already set are kept).

* Under a process manager (``mpirun -n 4 python -m dtrain.launch ...``, ``srun ...``),
  each rank initializes the process group, uses GPU ``cuda:(local_rank % device_count)``
  when CuPy sees GPUs (with one GPU visible per rank, each uses its own), and runs ``script.py`` as ``python script.py args`` would (``__name__ ==
  "__main__"``, ``sys.argv``, ``sys.path[0]`` = the script's folder). The script's own
  ``init_process_group(...)`` then adopts that group (applying its timeout and debug mode;
  another backend, e.g. "gloo" where the launcher chose "nccl", makes it again), so the same
  script also runs under a plain ``mpirun python script.py``.
* Standalone with ``--nproc N``, it starts the N ranks itself through ``mpiexec`` (the
  one the mpich wheel puts next to the Python executable, or the one on PATH: MPICH's
  Hydra or Open MPI's mpirun, which is allowed to run as root and to start more ranks
  than cores) and watches them: each rank runs under a small supervisor process that
  knows how it ended, so a rank killed by a signal is reported too. The first failure is
  printed once (``rank 1 failed: ValueError: boom``, ``rank 1 exited with code 3``,
  ``rank 1 was killed by SIGKILL``) and the launcher exits with that rank's code (128 + S
  for signal S); if mpiexec has not ended the other ranks 10 s later, it kills them. A
  rank that exits 0 while its peers still wait in a collective it never called is a
  failure too (``rank 1 exited (code 0) while ranks [0] were still in all_reduce (#17 ...)``,
  exit code 1; see :mod:`dtrain.comm.watchdog`), as is one that exits 0 without leaving its
  process group at all (native code calling ``_exit``). ``--nproc`` above 64 ranks per CPU
  core is refused (a typo, not a job), and ``$DTRAIN_MPIEXEC``, if set, must name an
  executable (no silent fallback to another mpiexec).
* SIGTERM or SIGINT to the launcher is forwarded to every rank, which may finish its
  step (e.g. save a checkpoint) and exit: after ``DTRAIN_TERM_GRACE`` seconds (default
  30) the ranks still running are killed. Ranks that saved a checkpoint and left through
  ``dtrain.preemption.exit_preempted`` make the launcher exit 75 (``EXIT_PREEMPTED``: resume
  with ``--resume auto``; a rank that exits 75 any other way is a failure, exit code 1: nothing
  says it saved); otherwise it exits 128 + the signal (143 for SIGTERM) even if the
  ranks exited 0, so a caller can tell a stopped job from a finished one. A second signal kills
  the ranks at once. When the launcher returns, no rank of the job is left running.
* With no script it runs a built-in job (``--job``, installed with dtrain as the package
  ``dtrain.examples``): ``gpt`` (the default, examples/gpt.py) trains a character-level GPT on
  Python's standard library with DistributedDataParallel, the global batch split over the
  ranks; rank 0 shows a progress bar, then prints the loss, tokens/s, ranks, wall time and a
  sample of generated text. ``digits`` (examples/ddp_digits.py) trains an MLP on the digits
  data set, each rank on its share of every epoch in batches of ``--batch-size``; rank 0
  prints the loss and test accuracy of every epoch, then the ranks, samples/s and wall time.

With ``--preflight`` the ranks run the pre-flight check instead of a job (:mod:`dtrain.preflight`:
GEMM, DataLoader and all-reduce rates, a model's predicted step; exit 1 naming an outlier rank
or pair). With ``DTRAIN_TRACE=dir`` set, ``--nproc`` merges the ranks' trace files into
``dir/trace.json`` when the job ends (:mod:`dtrain.timing.trace`).

Under an external ``mpiexec -n N python -m dtrain.launch script.py`` there is no supervisor:
a rank that raises or exits non-zero reports itself (``rank N failed: ...``, ``rank N exited
with code C``) and aborts the job; a rank killed by a signal is handled by the process
manager (MPICH's Hydra and Open MPI's mpirun end the job within seconds, with banners of
their own: measured in benchmarks/RESULTS.md, "Measurements moved from docstrings"), and
the collective timeout (``DTRAIN_TIMEOUT``) ends the job if it does not.
"""
import argparse
import ctypes
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .comm.launch_status import (STATUS_ENV, exit_report, has_left, left_preempted, mark_preempted, read_failure,
                                 record_failure, register_supervisor, supervisor_pids, was_preempted)
from .comm.lifecycle import LAUNCHED_ENV, finish
from .preemption import EXIT_PREEMPTED
from .timing import merge as merge_trace
from .timing.phases import TRACE_ENV

TERM_GRACE_ENV = "DTRAIN_TERM_GRACE"
MPIEXEC_ENV = "DTRAIN_MPIEXEC"
FAILURE_GRACE = 10.0  # seconds mpiexec gets to end the other ranks after one failed
CHILD_ENV = "DTRAIN_LAUNCH_CHILD"  # set in a supervised rank: it must not supervise again
# a file where --nproc leaves the first failure ("code\nrank N ...") for the program that
# started the launcher (dtrain.multiprocessing.spawn names the failed rank from it)
REPORT_ENV = "DTRAIN_LAUNCH_REPORT"
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36  # <linux/prctl.h>
# the built-in jobs (examples/<name>.py, installed as dtrain.examples), run when no script is given
JOBS = {"gpt": "dtrain.examples.gpt", "digits": "dtrain.examples.ddp_digits"}
DEFAULT_JOB = "gpt"
# the job options: which jobs take each, and the flag the job's own parser knows it by
JOB_OPTIONS = {"steps": ("gpt",), "epochs": ("digits",), "batch_size": ("gpt", "digits"), "lr": ("gpt", "digits"),
               "seed": ("gpt", "digits"), "resume": ("gpt",), "quiet": ("gpt",)}

EPILOG = """examples:
  python -m dtrain.launch --nproc 2                   the built-in job (a GPT) on 2 local ranks
  python -m dtrain.launch --nproc 2 --job digits      the digits MLP instead
  python -m dtrain.launch --nproc 4 train.py --lr 0.1  train.py on 4 local ranks
  python -m dtrain.launch --standalone --nproc_per_node=4 train.py   the same, as torchrun says it
  python -m dtrain.launch --nproc 2 -m mypackage.train                a module, as python -m runs it
  python -m dtrain.launch --nproc 4 --preflight                       measure the ranks before a job
  mpirun -n 8 --hostfile hosts python -m dtrain.launch train.py
  srun -n 8 python -m dtrain.launch train.py"""


def _positive(flag):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= 1, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {value}")
        return value
    return parse


def _nproc(text):
    """--nproc: an integer >= 1, or torchrun's "gpu" (one rank per GPU), "cpu" (per core) or
    "auto" (per GPU if there are any, else per core)."""
    if text in ("gpu", "cpu", "auto"):
        from . import cuda
        if text == "gpu" and not cuda.is_available():
            raise argparse.ArgumentTypeError("--nproc gpu: no CUDA device is available (CuPy missing or no GPU)")
        return cuda.device_count() if text != "cpu" and cuda.is_available() else os.cpu_count()
    return _positive("--nproc")(text)


def _one_node(text):
    if text not in ("1", "1:1"):
        raise argparse.ArgumentTypeError(f"--nnodes {text}: this launcher starts ranks on one node; for several "
                                         f"nodes start them with mpirun --hostfile or srun (see launch/)")
    return text


def _no_hostfile(text):
    raise argparse.ArgumentTypeError(
        f"{text!r}: --nproc starts ranks on this machine only. To start them on the hosts of a hostfile, run "
        f"launch/mpirun_hostfile.sh {text} script.py (or mpirun --hostfile {text} python -m dtrain.launch "
        f"script.py); see docs/multinode.md")


def make_parser():
    p = argparse.ArgumentParser(prog="python -m dtrain.launch", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Run a script (or the built-in job) on every rank of a distributed job.")
    p.add_argument("--nproc", "--nproc_per_node", "--nproc-per-node", dest="nproc", type=_nproc,
                   default=None, help="ranks to start through mpiexec (standalone): N, or as torchrun 'gpu', "
                                      "'cpu' or 'auto'; under mpirun/srun it must match their count "
                                      "(--nproc_per_node: torchrun's name)")
    p.add_argument("--standalone", action="store_true", help="accepted for torchrun's habit (always standalone)")
    p.add_argument("--nnodes", type=_one_node, default="1",
                   help="torchrun's node count: only 1 (for more nodes, start the ranks with mpirun or srun)")
    p.add_argument("--hostfile", "--machinefile", type=_no_hostfile, default=None,
                   help="refused: this launcher is single-host (use launch/mpirun_hostfile.sh, docs/multinode.md)")
    p.add_argument("-m", "--module", action="store_true",
                   help="run the script argument as a module name, as python -m does")
    p.add_argument("--backend", choices=("mpi", "nccl"), default=None,
                   help="communication backend (default: nccl when CuPy sees a GPU, else mpi)")
    job = p.add_argument_group("the built-in job (when no script is given); unset options take the job's defaults")
    job.add_argument("--job", choices=sorted(JOBS), default=DEFAULT_JOB,
                     help="gpt: a character-level GPT (examples/gpt.py); digits: an MLP on the digits "
                          "(examples/ddp_digits.py); default: %(default)s")
    job.add_argument("--steps", type=_positive("--steps"), default=None, help="gpt: training steps (600)")
    job.add_argument("--epochs", type=_positive("--epochs"), default=None, help="digits: epochs (10)")
    job.add_argument("--batch-size", type=_positive("--batch-size"), default=None,
                     help="gpt: the global batch, split over the ranks (16); digits: per rank (32)")
    job.add_argument("--lr", type=float, default=None, help="learning rate (gpt: AdamW 3e-3; digits: SGD 0.05)")
    job.add_argument("--seed", type=int, default=None, help="gpt: 1337; digits: 0")
    job.add_argument("--resume", choices=["auto"], default=None,
                     help="gpt: continue from the newest checkpoint in runs/gpt, if any")
    job.add_argument("--quiet", action="store_true", help="gpt: no progress bar")
    check = p.add_argument_group("the pre-flight check (--preflight: measure every rank, then exit; see dtrain.preflight)")
    check.add_argument("--preflight", action="store_true",
                       help="measure GEMM GFLOP/s and DataLoader samples/s per rank and the all-reduce busbw of all "
                            "ranks and of every pair, predict --model's step time; exit 1 naming any rank or pair "
                            "below --threshold x the median")
    check.add_argument("--model", default="mlp",
                       help="the model whose step time is predicted: 'mlp' (the reference MLP), 'file.py:factory' "
                            "or 'package.module:factory' (a callable returning a Module)")
    check.add_argument("--flops-per-sample", type=float, default=None,
                       help="the model's training FLOPs per sample (default: 6 x its parameters)")
    check.add_argument("--model-batch", type=_positive("--model-batch"), default=None,
                       help="samples per rank per step for the prediction (mlp: 256)")
    check.add_argument("--threshold", type=float, default=0.5,
                       help="an outlier is below this fraction of the other ranks' median (default 0.5)")
    p.add_argument("script", nargs="?", help="the Python script every rank runs")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    return p


def find_mpiexec():
    """``$DTRAIN_MPIEXEC``, else the mpiexec beside this Python (the mpich wheel's, which
    matches mpi4py's MPI library), else the one on PATH; None if there is none.

    Raises:
        RuntimeError: ``$DTRAIN_MPIEXEC`` is set but is not an executable (no fallback to
        another mpiexec: the one asked for may be the only one that matches the MPI library).
    """
    chosen = os.environ.get(MPIEXEC_ENV)
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise RuntimeError(f"{MPIEXEC_ENV}={chosen!r} is not an executable file (nor a command on PATH); "
                               f"point it at an mpiexec, or unset it to use the one beside {sys.executable} "
                               f"or on PATH")
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    for candidate in (beside, shutil.which("mpiexec")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def nproc_limit():
    """The most ranks ``--nproc`` (and ``spawn``) start on this machine: 64 per CPU core. A
    rank is a whole Python process with its own copy of the model; far beyond the cores,
    a number like 1000 is a typo, and starting it would exhaust memory or process limits
    before any rank reports."""
    return 64 * (os.cpu_count() or 1)


def check_nproc(n, what="--nproc"):
    """Raise ValueError, naming ``n`` and the bound, if ``n`` ranks exceed :func:`nproc_limit`."""
    if n > nproc_limit():
        raise ValueError(f"{what} {n}: more than {nproc_limit()} ranks (64 per CPU core; this machine has "
                         f"{os.cpu_count()}) would start {n} Python processes on this machine; for more ranks, "
                         f"start them with mpirun --hostfile or srun over several nodes")


def open_mpi_env():
    """What Open MPI's mpirun needs to start ranks on one machine: it refuses more ranks than
    cores, and running as root (containers), unless told. MPICH's Hydra ignores these."""
    env = {"OMPI_MCA_rmaps_base_oversubscribe": "1"}
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def spawn(nproc, argv):
    """Run ``python -m dtrain.launch argv`` on ``nproc`` ranks through mpiexec and watch them.

    Returns:
        128 + S if the launcher got signal S, else the exit code of the first rank that
        failed, else mpiexec's.
    """
    try:
        mpiexec = find_mpiexec()
    except RuntimeError as e:
        sys.exit(f"dtrain.launch: {e}")
    if mpiexec is None:
        sys.exit("dtrain.launch: --nproc needs mpiexec, found neither on PATH nor beside "
                 f"{sys.executable}: pip install dtrain[mpi] (mpi4py + the mpich wheel)")
    grace = _term_grace()
    started = time.time()
    status = tempfile.mkdtemp(prefix="dtrain-launch-")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # N ranks x all-core BLAS threads would oversubscribe the CPUs
    for name, value in open_mpi_env().items():
        env.setdefault(name, value)
    env[STATUS_ENV] = status
    env.pop(CHILD_ENV, None)
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(_free_port()))
    command = [mpiexec, "-n", str(nproc), sys.executable, "-m", "dtrain.launch", *argv]
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # ranks orphaned by Hydra's cleanup become our children, reaped below
    # its own session: a signal reaches mpiexec once, from us, and mpiexec passes it to every rank
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    signalled = []  # (signal, time) of the signals we got

    def forward(signum, frame):
        if signalled:  # a second Ctrl-C or SIGTERM: do not wait any longer
            _kill(proc)
            return
        signalled.append((signum, time.monotonic()))
        _say(f"got {signal.Signals(signum).name}: forwarded to the {nproc} ranks, which have {grace:g} s "
             f"to exit before SIGKILL ({TERM_GRACE_ENV})")
        # straight to the supervisors: Open MPI's mpirun would not pass SIGTERM on but end the job
        # (SIGTERM 1 s later, SIGKILL 1 s after that; it cannot be told to forward SIGTERM)
        supervisors = supervisor_pids(status)
        if len(supervisors) < nproc:  # still starting: mpiexec passes the signal on or ends the job
            proc.send_signal(signum)
            return
        for pid in supervisors:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = _watch(proc, status, signalled, grace)
        _reap_orphans()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        failure = read_failure(status)
        preempted = was_preempted(status)
        shutil.rmtree(status, ignore_errors=True)
    if os.environ.get(TRACE_ENV):
        _merge_trace(os.environ[TRACE_ENV], started)
    if failure is not None:  # the first failing rank's report, once, after mpiexec's own output
        sys.stderr.write(failure[1])
        sys.stderr.flush()
        if os.environ.get(REPORT_ENV):
            with open(os.environ[REPORT_ENV], "w") as f:
                f.write(f"{failure[0]}\n{failure[1]}")
    if preempted and failure is None:
        _say(f"the ranks were preempted: checkpoint saved, exit code {EXIT_PREEMPTED} (resume with --resume auto)")
        return EXIT_PREEMPTED
    if signalled:  # what the ranks did after a forwarded signal does not change why the job ended
        return 128 + signalled[0][0]
    if failure is not None:
        return failure[0]
    if code != 0:  # no rank reported (e.g. Open MPI, no supervisor): say what we know
        _say(f"mpiexec exited with code {code} without a rank reporting a failure "
             f"(a rank killed by a signal, or mpiexec itself failed)")
    return code


def _merge_trace(directory, started):
    """Merge the trace files the ranks wrote at exit (DTRAIN_TRACE) into one timeline."""
    try:
        _say(f"trace: {merge_trace(directory, since=started)} (one track per rank: open it in https://ui.perfetto.dev)")
    except (OSError, ValueError) as e:  # a rank killed before writing its file, a full disk: the job's code stands
        _say(f"trace: not merged: {e}")


def _watch(proc, status, signalled, grace):
    """Wait for mpiexec; kill the job when the ranks outlive a signal's grace period or a
    failure by FAILURE_GRACE. Returns mpiexec's exit code (128 + S if killed by signal S)."""
    failed_at = None
    while True:
        try:
            code = proc.wait(timeout=0.1)
            return code if code >= 0 else 128 - code
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if signalled and now > signalled[0][1] + grace:
            _say(f"the ranks did not exit within {grace:g} s of {signal.Signals(signalled[0][0]).name}: "
                 f"killing them")
            _kill(proc)
            signalled[0] = (signalled[0][0], float("inf"))
        if failed_at is None and read_failure(status) is not None:
            failed_at = now
        if failed_at is not None and now > failed_at + FAILURE_GRACE:
            _say(f"mpiexec did not end the other ranks within {FAILURE_GRACE:g} s of the failure: killing them")
            _kill(proc)
            failed_at = float("inf")


def _reap_orphans(limit=5.0):
    """Wait (up to ``limit`` s) for the ranks orphaned to us (see PR_SET_CHILD_SUBREAPER):
    when the launcher returns, no rank is left running or unreaped."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def _kill(proc):
    """SIGKILL mpiexec's process group (its proxies; the ranks die with their supervisors)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _say(text):
    sys.stderr.write(f"dtrain.launch: {text}\n")
    sys.stderr.flush()


def _term_grace():
    text = os.environ.get(TERM_GRACE_ENV, "30")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        sys.exit(f"dtrain.launch: {TERM_GRACE_ENV}={text!r} must be a number of seconds >= 0")
    return value


def supervise(argv, rank):
    """Run this rank as a child process and report how it ended, if nobody else did.

    A rank killed by a signal cannot report itself; its supervisor can. The child inherits
    Hydra's PMI connection (``PMI_FD``), or Open MPI's PMIx variables, so to MPI it is the
    rank. Under Hydra the supervisor keeps its own copy of that descriptor until it has
    reported: Hydra sees the rank gone only then, and its cleanup cannot kill the supervisor
    before the report (Open MPI waits for the supervisor itself). SIGTERM and SIGINT are
    passed to the child; a rank that ends because of them is not a failure (the supervisor
    exits 0, so Hydra does not kill the ranks still finishing their step).

    Returns:
        the child's exit code (128 + S if it was killed by signal S).
    """
    _die_with_parent()
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    pmi_fds = (int(os.environ["PMI_FD"]),) if "PMI_FD" in os.environ else ()
    child = subprocess.Popen([sys.executable, "-m", "dtrain.launch", *argv], env=env, pass_fds=pmi_fds,
                             preexec_fn=_die_with_parent)
    stopping = []

    def forward(signum, frame):
        stopping.append(signum)
        child.send_signal(signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, forward)
    registered = register_supervisor(os.environ[STATUS_ENV])  # the launcher signals us directly (see spawn)
    code = child.wait()
    os.remove(registered)
    if stopping and code == -stopping[0]:
        code = 0  # ended by the signal we passed on: not a failure Hydra should kill the job for
    preempted = code == EXIT_PREEMPTED and left_preempted(os.environ[STATUS_ENV], child.pid)
    if preempted:  # stopped on request with its checkpoint saved: not a failure
        mark_preempted()
        code = 0  # nor one Hydra should kill the other ranks (still saving) for
    if code == 0 and not stopping and not has_left(os.environ[STATUS_ENV], child.pid):
        line = (f"rank {rank} exited (code 0) without leaving its process group (os._exit(0), or its "
                f"interpreter was ended): the other ranks would wait for it in their next collective")
        if record_failure(f"{line}\n", 1):
            _say(line)
        code = 1
    elif code != 0 and not stopping:
        line, code = exit_report(rank, code) if code > 0 else (f"rank {rank} was killed by "
                                                              f"{signal.Signals(-code).name}", code)
        if record_failure(f"{line}\n", code if code > 0 else 128 - code):
            _say(line)
    for fd in pmi_fds:
        os.close(fd)
    return code if code >= 0 else 128 - code


def _die_with_parent():
    """Ask Linux to SIGKILL this process when its parent dies (no orphaned ranks)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def prctl(option, value):
    """Linux's prctl; elsewhere nothing (the process manager must clean up)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, int(value))
    except (OSError, AttributeError):
        pass


def run_rank(args):
    """This rank's part: join the group, pick the device, run the script or the built-in job."""
    from . import cuda
    from . import comm as dist

    dist.init_process_group(backend=args.backend)
    dist.mark_launched()
    os.environ.update(torchrun_env(dist))
    if cuda.is_available():
        cuda.set_device(dist.get_local_rank() % cuda.device_count())
    code = 0
    try:
        if args.preflight:
            from . import preflight
            code = preflight.run(args.model, args.flops_per_sample, args.model_batch, args.threshold)
        elif args.script and args.module:
            run_module(args.script, args.script_args)
        elif args.script:
            run_script(args.script, args.script_args)
        else:
            run_default_job(*job_argv(None, args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code and dist.is_initialized():  # peers may be waiting in a collective: end them too
            message = None if isinstance(e.code, int) else str(e.code)  # Python prints it only after the abort
            dist.abort_job(*exit_report(dist.get_rank(), code, message))
        raise
    if dist.is_initialized():
        finish()  # the peers learn this rank exited: one still in a collective reports it
    return code


def torchrun_env(dist):
    """The variables torchrun sets for a rank, from the initialized group ``dist``: RANK,
    LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, and MASTER_ADDR/MASTER_PORT unless set
    (rank 0's address, 127.0.0.1 on one node, and a free port, sent to every rank)."""
    env = {"RANK": dist.get_rank(), "LOCAL_RANK": dist.get_local_rank(), "WORLD_SIZE": dist.get_world_size(),
           "LOCAL_WORLD_SIZE": dist.get_local_world_size(), LAUNCHED_ENV: 1}
    master = (os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"))
    if None in master:
        if dist.get_rank() == 0:
            one_node = dist.get_local_world_size() == dist.get_world_size()
            master = (master[0] or ("127.0.0.1" if one_node else socket.gethostname()), master[1] or str(_free_port()))
        if dist.get_world_size() > 1:  # through MPI itself: the group's collectives (and their numbers) are the script's
            from .comm.mpi import mpi
            master = mpi().COMM_WORLD.bcast(master, root=0)
    env["MASTER_ADDR"], env["MASTER_PORT"] = master
    return {name: str(value) for name, value in env.items()}


def _free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _check_preflight(parser, args):
    """--preflight's options, checked before any rank starts."""
    if args.script is not None:
        parser.error(f"--preflight runs the check, not a script: drop {args.script!r} (or --preflight)")
    if not 0 < args.threshold < 1:
        parser.error(f"--threshold must be between 0 and 1 (a fraction of the median), got {args.threshold:g}")
    from . import preflight
    try:
        preflight.model_size(args.model)
    except (ValueError, OSError, ImportError) as e:
        parser.error(str(e))


def run_module(name, module_args):
    """Run module ``name`` as ``python -m name args`` would, in this process."""
    sys.argv = [name, *module_args]
    runpy.run_module(name, run_name="__main__", alter_sys=True)  # sets sys.argv[0] to its file


def run_script(script, script_args):
    """Run ``script`` as ``python script args`` would, in this process."""
    sys.argv = [script, *script_args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")  # sets sys.argv[0] to its argument


def job_argv(parser, args):
    """The built-in job's module and command line from the job options (an error for an option
    the chosen job does not take)."""
    argv = []
    for name, jobs in JOB_OPTIONS.items():
        value = getattr(args, name)
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if args.script is not None or args.job not in jobs:
            parser.error(f"{flag} is an option of the built-in job{'s' if len(jobs) > 1 else ''} "
                         f"{' and '.join(jobs)}" + ("; give the script its own options after its name"
                                                    if args.script is not None else f", not of --job {args.job}"))
        argv += [flag] if value is True else [flag, str(value)]
    return JOBS[args.job], argv


def run_default_job(module, argv):
    """Run a built-in job, as ``python -m dtrain.examples.<job> argv...`` would."""
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)  # sets sys.argv[0] to its file


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.module and args.script is None:
        parser.error("-m/--module needs a module name")
    if args.script is not None and not args.module and not os.path.isfile(args.script):
        parser.error(f"script {args.script!r} does not exist (or is not a file)")
    job_argv(parser, args)  # a job option that does not apply is an error here, before any rank starts
    if args.preflight:
        _check_preflight(parser, args)
    from .comm import env
    info = env.discover()
    if info is None:
        if args.nproc is not None and args.nproc > 1:
            try:
                check_nproc(args.nproc)
            except ValueError as e:
                parser.error(str(e))
            return spawn(args.nproc, argv)
    elif args.nproc is not None and args.nproc != info.world_size:
        parser.error(f"--nproc {args.nproc} but {info.source} started {info.world_size} ranks: "
                     f"drop --nproc when a process manager starts the ranks")
    elif os.environ.get(STATUS_ENV) and not os.environ.get(CHILD_ENV):
        return supervise(argv, info.rank)  # started by our own --nproc
    return run_rank(args)


if __name__ == "__main__":
    sys.exit(main())
