"""The status folder of ``python -m dtrain.launch --nproc N``: how the ranks, their
supervisors and the launcher tell each other how the job ended.

The launcher makes the folder and names it in ``DTRAIN_LAUNCH_STATUS`` for every rank. In it:

* ``failure``: the exit code and report of the first rank (or supervisor) that failed; the
  launcher prints it once, after the job has ended. Printing it from the rank instead loses
  it now and then: on MPI_Abort, Hydra may kill its I/O forwarding before a rank's last
  lines reach the terminal.
* ``preempted``: a rank exited ``EXIT_PREEMPTED`` (it saved a checkpoint and left on request).
* ``supervisor.<pid>``: a rank's supervisor is running; the launcher signals it directly.
"""
import os
import threading

STATUS_ENV = "DTRAIN_LAUNCH_STATUS"
FAILURE_FILE = "failure"
PREEMPTED_FILE = "preempted"
SUPERVISOR_PREFIX = "supervisor."  # + its pid


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


def mark_preempted():
    """Record that this job's ranks were preempted (best effort: outside the launcher, nothing)."""
    folder = os.environ.get(STATUS_ENV)
    if folder:
        try:
            open(os.path.join(folder, PREEMPTED_FILE), "w").close()
        except OSError:
            pass


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
