"""Errors of the comm layer, and the hook that stops a whole job when one rank fails."""
import os
import sys
import threading
import traceback

# Set by ``python -m dtrain.launch --nproc N``: a folder where the first failing rank leaves
# its exit code and message, so that the job reports one failure once, with that code.
STATUS_ENV = "DTRAIN_LAUNCH_STATUS"


def claim_failure(line, code):
    """Record ``line`` and ``code`` as the job's failure; False if another rank did first.

    Outside ``dtrain.launch --nproc`` there is nothing to share and every claim succeeds.
    """
    folder = os.environ.get(STATUS_ENV)
    if not folder:
        return True
    try:
        fd = os.open(os.path.join(folder, "failure"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    except OSError:  # the launcher's folder is gone: report anyway
        return True
    with os.fdopen(fd, "w") as f:
        f.write(f"{code}\n{line}\n")
    return True


def read_failure(folder):
    """``(code, line)`` claimed in ``folder``, or None."""
    try:
        with open(os.path.join(folder, "failure")) as f:
            code, line = f.read().split("\n", 1)
        return int(code), line.strip()
    except (OSError, ValueError):
        return None


class DistError(RuntimeError):
    """A distributed operation failed or was misused (``torch.distributed.DistError``)."""


class DistBackendError(DistError):
    """The communication backend (MPI, NCCL) failed or is missing."""


class DistTimeoutError(DistError):
    """A collective did not finish within the process group's timeout."""


class AbortOnError:
    """An ``sys.excepthook`` that reports an uncaught exception and aborts every rank.

    Without it, one rank's exception leaves its peers blocked forever in their next
    collective. It prints ``rank N failed: <error>`` and the traceback to stderr, once
    (under ``dtrain.launch --nproc``: once per job), then calls ``abort(1)``
    (``MPI.COMM_WORLD.Abort``), which ends every rank of the job.

    Args:
        rank: this process's global rank, named in the message.
        abort: called with the exit code after the report.
    """

    def __init__(self, rank, abort):
        self.rank, self.abort = rank, abort
        self.previous = None
        self.fired = False
        self.lock = threading.Lock()

    def install(self):
        self.previous, sys.excepthook = sys.excepthook, self

    def uninstall(self):
        if sys.excepthook is self:
            sys.excepthook = self.previous

    def report(self, message, detail="", code=1):
        """End the job with ``rank N failed: message`` (then ``detail``, e.g. a traceback)."""
        self.end(f"rank {self.rank} failed: {message}", detail, code)

    def end(self, line, detail="", code=1):
        """Print ``line`` and ``detail`` (the first call only), then abort the job with ``code``."""
        with self.lock:
            if self.fired:
                return
            self.fired = True
        if claim_failure(line, code):
            sys.stdout.flush()
            sys.stderr.write(f"{line}\n{detail}")
            sys.stderr.flush()
        self.abort(code)

    def __call__(self, exc_type, exc, tb):
        self.report(f"{exc_type.__name__}: {exc}", "".join(traceback.format_exception(exc_type, exc, tb)))
