"""The status folder of ``python -m dtrain.launch --nproc N``: how the ranks, their
supervisors and the launcher tell each other how the job ended.

The launcher makes the folder and names it in ``DTRAIN_LAUNCH_STATUS`` for every rank. In it:

* ``failure``: the exit code and report of the first rank (or supervisor) that failed; the
  launcher prints it once, after the job has ended. Printing it from the rank instead loses
  it now and then: on MPI_Abort, Hydra may kill its I/O forwarding before a rank's last
  lines reach the terminal.
* ``preempted.<pid>``: the rank process ``pid`` is leaving through
  ``dtrain.preemption.exit_preempted`` (it saved a checkpoint and leaves on request); its
  supervisor counts its exit code 75 as a preemption only then.
* ``preempted``: a rank exited that way (the job was preempted).
* ``left.<pid>``: the rank process ``pid`` left its process group (its exit 0 is clean).
* ``supervisor.<pid>``: a rank's supervisor is running; the launcher signals it directly.
"""
import os
import threading

STATUS_ENV = "DTRAIN_LAUNCH_STATUS"
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: distinct from 1 (an error) and from 128 + N (killed by signal N)
FAILURE_FILE = "failure"
PREEMPTED_FILE = "preempted"
SUPERVISOR_PREFIX = "supervisor."  # + its pid
LEFT_PREFIX = "left."  # + a rank process's pid


def record_failure(text, code):
    """Leave ``text`` and ``code`` for the launcher as the job's failure, unless a rank did first.

    Returns:
        True if the caller must print ``text`` itself: outside ``dtrain.launch --nproc``, or
        if the launcher's folder is gone.
    """
    folder = os.environ.get(STATUS_ENV)
    if not folder:
        return True
    path = os.path.join(folder, FAILURE_FILE)
    draft = f"{path}.{os.getpid()}.{threading.get_ident()}"
    try:
        with open(draft, "w") as f:
            f.write(f"{code}\n{text}")
        os.link(draft, path)  # atomic, and the content is complete: a rank killed mid-write claims nothing
    except FileExistsError:
        pass
    except OSError:
        return True
    finally:
        try:
            os.unlink(draft)
        except OSError:
            pass
    return False


def read_failure(folder):
    """``(code, text)`` recorded in ``folder``, or None."""
    try:
        with open(os.path.join(folder, FAILURE_FILE)) as f:
            code, text = f.read().split("\n", 1)
        return int(code), text
    except (OSError, ValueError):
        return None


def mark_preempted(pid=None):
    """Record that this job's ranks were preempted, or with ``pid``, that the rank process
    ``pid`` leaves through the preemption path (best effort: outside the launcher, nothing)."""
    folder = os.environ.get(STATUS_ENV)
    if folder:
        try:
            open(os.path.join(folder, PREEMPTED_FILE if pid is None else f"{PREEMPTED_FILE}.{pid}"), "w").close()
        except OSError:
            pass


def mark_left(pid):
    """Record that the rank process ``pid`` left its process group (best effort): its exit
    code 0 is then a clean end, not an ``os._exit(0)`` out from under its peers."""
    folder = os.environ.get(STATUS_ENV)
    if folder:
        try:
            open(os.path.join(folder, f"{LEFT_PREFIX}{pid}"), "w").close()
        except OSError:
            pass


def has_left(folder, pid):
    """Whether the rank process ``pid`` left its group before exiting (see mark_left)."""
    return os.path.exists(os.path.join(folder, f"{LEFT_PREFIX}{pid}"))


def left_preempted(folder, pid):
    """Whether the rank process ``pid`` marked its exit as a preemption (see mark_preempted)."""
    return os.path.exists(os.path.join(folder, f"{PREEMPTED_FILE}.{pid}"))


def was_preempted(folder):
    """Whether a rank of the job in ``folder`` was preempted."""
    return os.path.exists(os.path.join(folder, PREEMPTED_FILE))


def register_supervisor(folder):
    """Announce this process as a running supervisor; returns the file to remove when it ends."""
    path = os.path.join(folder, f"{SUPERVISOR_PREFIX}{os.getpid()}")
    open(path, "w").close()
    return path


def supervisor_pids(folder):
    """The pids of the supervisors running in the job of ``folder``."""
    return [int(name[len(SUPERVISOR_PREFIX):]) for name in os.listdir(folder) if name.startswith(SUPERVISOR_PREFIX)]


def exit_report(rank, code, message=None):
    """``(line, the job's exit code)`` for rank ``rank`` exiting with non-zero ``code`` while
    its group is still initialized. 75 there is no preemption (``exit_preempted`` leaves the
    group first and marks its exit, see mark_preempted): a restart script must not take the
    job for one and resume from a checkpoint nobody saved, so the job exits 1.

    ``message``: the text of ``sys.exit("...")`` / ``raise SystemExit("...")``, which Python
    would print at exit: the job is aborted before that, so the report carries it."""
    line = f"rank {rank} exited with code {code}" + ("" if message is None else f": {message}")
    if code != EXIT_PREEMPTED:
        return line, code
    return (f"{line} ({EXIT_PREEMPTED} is the code of a preemption, but the rank did not leave through "
            f"dtrain.preemption.exit_preempted, so no checkpoint is known to be saved: the job exits 1)"), 1
