"""``dtrain.multiprocessing``: torch.multiprocessing's :func:`spawn`, on top of the launcher and MPI.

``spawn(fn, args, nprocs)`` starts ``nprocs`` ranks with ``python -m dtrain.launch --nproc
nprocs`` (mpiexec; one plain process for ``nprocs=1``); each imports the caller's ``__main__``
as a non-main module (``__mp_main__``, as Python's and PyTorch's spawn do, so the script's
``if __name__ == "__main__":`` block does not run again) and calls ``fn(rank, *args)``. The
program's own ``init_process_group("gloo", rank=rank, world_size=nprocs)`` inside ``fn``
joins the MPI world the launcher made; MASTER_ADDR/MASTER_PORT are accepted and unused.

The rest of Python's :mod:`multiprocessing` (``Process``, ``Queue``, ``get_context``,
``set_start_method``, ``cpu_count``, ...) is re-exported here, as torch.multiprocessing does.

Differs from PyTorch: inside ``fn`` the default process group already exists before the
program's ``init_process_group`` (which adopts it, or remakes it for another backend), so
``dist.is_initialized()`` is True there from the start.
"""
import multiprocessing
import multiprocessing.spawn as _stdlib_spawn
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from multiprocessing import *  # noqa: F401,F403 -- torch.multiprocessing re-exports Python's
from multiprocessing.reduction import ForkingPickler

__all__ = [*multiprocessing.__all__, "spawn", "start_processes", "ProcessContext", "ProcessException",
           "ProcessRaisedException", "ProcessExitedException"]

# files in the job's folder: what the parent passes, and what each rank leaves
PREPARATION, TARGET, REPORT = "preparation.pkl", "target.pkl", "report"
ERROR, EXIT, STARTED = "error.", "exit.", "started."  # + the rank


class ProcessException(Exception):
    """A spawned process failed (torch.multiprocessing's base class for the two below).

    Attributes:
        error_index: the rank that failed (-1 if the launcher could not tell).
        error_pid: its process id (the launcher's if unknown).
    """

    def __init__(self, msg, error_index, error_pid):
        super().__init__(msg)
        self.msg, self.error_index, self.error_pid = msg, error_index, error_pid

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.error_pid)


class ProcessRaisedException(ProcessException):
    """A spawned process raised; the message holds its traceback."""


class ProcessExitedException(ProcessException):
    """A spawned process exited with a non-zero code or was killed by a signal
    (``exit_code`` is then minus the signal number, ``signal_name`` its name)."""

    def __init__(self, msg, error_index, error_pid, exit_code, signal_name=None):
        super().__init__(msg, error_index, error_pid)
        self.exit_code, self.signal_name = exit_code, signal_name

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.error_pid, self.exit_code, self.signal_name)


class ProcessContext:
    """The running ranks of a :func:`spawn` with ``join=False``.

    Example:
        >>> ctx = mp.spawn(work, nprocs=2, join=False)
        >>> while not ctx.join(timeout=1): print("still running")
    """

    def __init__(self, launcher, folder, nprocs):
        self.launcher, self.folder, self.nprocs = launcher, folder, nprocs
        self.done = False
        self.started = None  # {rank: pid}, read before the folder is removed

    def pids(self):
        """The process ids of the ranks that have started, in rank order."""
        started = self.started if self.started is not None else self._started()
        return [started[rank] for rank in sorted(started)]

    def _started(self):
        found = {}
        for name in os.listdir(self.folder) if os.path.isdir(self.folder) else ():
            if name.startswith(STARTED):
                found[int(name[len(STARTED):])] = int(_read(os.path.join(self.folder, name)) or -1)
        return found

    def join(self, timeout=None, grace_period=None):
        """Wait for every rank to finish (at most ``timeout`` seconds, None: no limit).

        Args:
            timeout: seconds to wait; None waits until the job ends.
            grace_period: accepted for PyTorch's signature; when a rank fails the launcher
                gives the others 10 s to end, then kills them.

        Returns:
            True when every rank has finished (also on later calls), False if ``timeout``
            passed first.

        Raises:
            ProcessRaisedException: a rank raised (the first one, with its traceback).
            ProcessExitedException: a rank exited non-zero or was killed by a signal.
        """
        if self.done:
            return True
        try:
            code = self.launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self.done = True
        self.started = self._started()
        try:
            if code != 0:
                raise self._failure(code)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def _failure(self, code):
        """The exception for the first rank that failed, from what the ranks and the launcher left."""
        errors = self._records(ERROR)
        if errors:
            return self._raised(*errors[0])
        exits = self._records(EXIT)
        if exits:
            return self._exited(exits[0][0], int(exits[0][1]))
        # the launcher's report of the first failure: "code\nrank N failed: ...\n<traceback>",
        # "... exited with code C" or "... was killed by SIGX" (see dtrain.launch)
        report = _read(os.path.join(self.folder, REPORT)) or ""
        found = re.match(r"\d+\nrank (\d+) (?:failed: (.*)|was killed by (SIG\w+)|exited with code (-?\d+))",
                         report, re.DOTALL)
        if found and found[2] is not None:
            return self._raised(int(found[1]), found[2])
        if found and found[3]:
            return self._exited(int(found[1]), -signal.Signals[found[3]].value, found[3])
        if found:
            return self._exited(int(found[1]), int(found[4]))
        if self.nprocs == 1:  # the launcher ran the only rank itself
            return self._exited(0, code, signal.Signals(-code).name) if code < 0 else self._exited(0, code)
        return ProcessExitedException(f"the launcher of the {self.nprocs} processes exited with code {code} "
                                      f"without naming a failed process (see its output above)", -1,
                                      self.launcher.pid, code)

    def _raised(self, rank, trace):
        return ProcessRaisedException(f"\n\n-- Process {rank:d} terminated with the following error:\n{trace}",
                                      rank, self.started.get(rank, -1))

    def _exited(self, rank, code, signal_name=None):
        how = f"exit code {code:d}" if signal_name is None else f"signal {signal_name}"
        return ProcessExitedException(f"process {rank:d} terminated with {how}", rank, self.started.get(rank, -1),
                                      code, signal_name)

    def _records(self, prefix):
        """``[(rank, text)]`` of the files ``prefix<rank>``, the earliest written first."""
        found = []
        for name in os.listdir(self.folder):
            if name.startswith(prefix):
                path = os.path.join(self.folder, name)
                found.append((os.stat(path).st_mtime_ns, int(name[len(prefix):]), _read(path)))
        return [(rank, text) for _, rank, text in sorted(found)]


def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """Run ``fn(rank, *args)`` in ``nprocs`` new processes, ranks 0 to ``nprocs - 1``, as
    ``torch.multiprocessing.spawn``.

    ``fn`` and ``args`` are pickled: ``fn`` must be defined at the top level of a module
    (a lambda or nested function raises pickle's error, as in PyTorch). The processes are
    the ranks of one MPI job, so ``fn`` may call ``init_process_group("gloo", rank=rank,
    world_size=nprocs)`` and the collectives. Call it from a plain ``python script.py``,
    under ``if __name__ == "__main__":``.

    Args:
        fn: the function each process runs, called as ``fn(rank, *args)``.
        args: the other arguments of ``fn`` (a tuple).
        nprocs: the number of processes (>= 1).
        join: wait for them; if False, return a :class:`ProcessContext` at once.
        daemon: accepted; the processes always end if the caller dies (SIGTERM, then
            SIGKILL after the launcher's grace period).
        start_method: only "spawn" (others warn, as PyTorch's spawn does, and use "spawn").

    Returns:
        None if ``join``, else a :class:`ProcessContext`.

    Raises:
        ProcessRaisedException: a process raised; the message names its rank and holds its
            traceback ("-- Process 1 terminated with the following error: ...").
        ProcessExitedException: a process exited non-zero or was killed by a signal.

    Example:
        >>> def train(rank, world_size):
        ...     dist.init_process_group("gloo", rank=rank, world_size=world_size)
        ...     ...
        >>> if __name__ == "__main__":
        ...     mp.spawn(train, args=(2,), nprocs=2, join=True)
    """
    if start_method != "spawn":
        warnings.warn(f"This method only supports start_method=spawn (got: {start_method}).\nTo use a different "
                      f"start_method use:\n\t\t dtrain.multiprocessing.start_processes(...)", FutureWarning,
                      stacklevel=2)
    return start_processes(fn, args, nprocs, join, daemon, "spawn")


def start_processes(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """:func:`spawn` (PyTorch's general form; every start method starts fresh processes here)."""
    from .comm import env
    from .launch import check_nproc, find_mpiexec
    if not isinstance(nprocs, int) or isinstance(nprocs, bool) or nprocs < 1:
        raise ValueError(f"spawn: nprocs must be an integer >= 1, got {nprocs!r}")
    check_nproc(nprocs, "spawn: nprocs")
    if not isinstance(args, tuple):
        raise TypeError(f"spawn: args must be a tuple (fn is called as fn(rank, *args)), got {type(args).__name__}")
    info = env.discover()
    if info is not None and info.world_size > 1:
        raise RuntimeError(f"spawn: this process is already rank {info.rank} of {info.world_size} started by "
                           f"{info.source}; spawn starts its own {nprocs} processes: run the script with plain "
                           f"python (python script.py), or drop spawn and call fn(rank, *args) in each rank")
    target = ForkingPickler.dumps((fn, args))  # a lambda or nested function fails here, as in PyTorch
    if nprocs > 1 and find_mpiexec() is None:
        raise RuntimeError(f"spawn: nprocs={nprocs} needs mpiexec, found neither on PATH nor beside "
                           f"{sys.executable}: pip install dtrain[mpi] (mpi4py + the mpich wheel)")
    folder = tempfile.mkdtemp(prefix="dtrain-spawn-")
    try:
        preparation = _stdlib_spawn.get_preparation_data("SpawnProcess")
        preparation.pop("authkey")  # a secret that must not be written to disk; the ranks do not need it
        with open(os.path.join(folder, PREPARATION), "wb") as f:
            pickle.dump(preparation, f)
        with open(os.path.join(folder, TARGET), "wb") as f:
            f.write(target)
        launcher = subprocess.Popen(
            [sys.executable, "-m", "dtrain.launch", "--nproc", str(nprocs), "-m", __spec__.name, folder],
            env=_child_environment(folder), preexec_fn=_end_with_caller)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    context = ProcessContext(launcher, folder, nprocs)
    if not join:
        return context
    while not context.join():
        pass
    return None


def _child_environment(folder):
    """This environment without any launcher's rank variables (a spawned job is a new job),
    with the launcher's failure report going to ``folder``."""
    from .comm.env import SOURCES
    from .comm.launch_status import STATUS_ENV
    from .comm.lifecycle import LAUNCHED_ENV
    from .launch import CHILD_ENV, REPORT_ENV
    rank_vars = {v for _, rank, sizes, local, local_sizes in SOURCES for v in (rank, *sizes, local, *local_sizes)}
    rank_vars |= {STATUS_ENV, LAUNCHED_ENV, CHILD_ENV}

    def of_a_launcher(name):
        if name in rank_vars or name.startswith(("PMI_", "PMIX_", "HYDRA_")):
            return True
        return name.startswith("OMPI_") and not name.startswith(("OMPI_MCA_", "OMPI_ALLOW_RUN_AS_ROOT"))
    environ = {k: v for k, v in os.environ.items() if not of_a_launcher(k)}
    environ[REPORT_ENV] = os.path.join(folder, REPORT)
    return environ


def _end_with_caller():
    """In the launcher: SIGTERM when the caller dies (the launcher then stops the ranks)."""
    from .launch import PR_SET_PDEATHSIG, prctl
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path, text):
    """Write ``text`` to ``path`` whole (a reader never sees part of it)."""
    with open(f"{path}.tmp", "w") as f:
        f.write(text)
    os.replace(f"{path}.tmp", path)


def _run_child(folder):
    """One spawned rank (run by the launcher as ``-m dtrain.multiprocessing folder``): import
    the caller's ``__main__`` as ``__mp_main__``, then call ``fn(rank, *args)``."""
    from . import distributed as dist
    from .comm.lifecycle import LAUNCHED_ENV
    rank = dist.get_rank()
    os.environ.pop(LAUNCHED_ENV, None)  # spawned, not launched: as under torch.multiprocessing
    _write(os.path.join(folder, f"{STARTED}{rank}"), str(os.getpid()))
    try:
        with open(os.path.join(folder, PREPARATION), "rb") as f:
            _stdlib_spawn.prepare(pickle.load(f))  # may run the caller's module-level code: inside the try
        multiprocessing.current_process().name = f"SpawnProcess-{rank + 1}"
        with open(os.path.join(folder, TARGET), "rb") as f:
            fn, args = pickle.load(f)
        fn(rank, *args)
    except KeyboardInterrupt:
        pass  # the caller or the terminal stopped the job: as torch's spawn, not a failure
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code:
            _write(os.path.join(folder, f"{EXIT}{rank}"), str(code))
        raise
    except Exception as e:
        _write(os.path.join(folder, f"{ERROR}{rank}"), traceback.format_exc())
        if dist.is_initialized():  # end the ranks waiting for this one; the caller gets the traceback
            dist.abort_job(f"rank {rank} failed: {type(e).__name__}: {e}", 1)
        sys.exit(1)


if __name__ == "__main__":
    _run_child(sys.argv[1])
