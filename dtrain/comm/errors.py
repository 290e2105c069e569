"""Errors of the comm layer, and the hook that stops a whole job when one rank fails."""
import os
import sys
import threading
import time
import traceback

from .launch_status import record_failure

# Outside the launcher (see launch_status), the pause between printing a report and
# MPI_Abort: Hydra may kill its I/O forwarding before a rank's last lines reach the terminal.
FLUSH_DELAY = 0.3


class DistError(RuntimeError):
    """A distributed operation failed or was misused (``torch.distributed.DistError``)."""


class DistBackendError(DistError):
    """The communication backend (MPI, NCCL) failed or is missing."""


class DistTimeoutError(DistError):
    """A collective did not finish within the process group's timeout."""


class AbortOnError:
    """An ``sys.excepthook`` that reports an uncaught exception and aborts every rank.

    Without it, one rank's exception leaves its peers blocked forever in their next
    collective. It reports ``rank N failed: <error>`` and the traceback once (under
    ``dtrain.launch --nproc``: once per job, printed by the launcher), then calls ``abort(1)``
    (``MPI.COMM_WORLD.Abort``), which ends every rank of the job.

    Args:
        rank: this process's global rank, named in the message.
        abort: called with the exit code after the report.
        host: this rank's host, named too (``rank 3 on host b failed: ...``) when given: in a
            job across hosts, where the MPI launchers' own reports name a pid and a host only.
    """

    def __init__(self, rank, abort, host=None):
        self.rank, self.abort, self.host = rank, abort, host
        self.previous = None
        self.pid = os.getpid()  # the rank's own process (see in_rank)
        self.fired = False
        self.lock = threading.Lock()

    def install(self):
        self.previous, sys.excepthook = sys.excepthook, self

    def in_rank(self):
        """False in a child the rank forked (``os.fork``): its errors and exits are its own, not the job's."""
        return os.getpid() == self.pid

    def uninstall(self):
        if sys.excepthook is self:
            sys.excepthook = self.previous

    def report(self, message, detail="", code=1):
        """End the job with ``rank N failed: message`` (then ``detail``, e.g. a traceback)."""
        where = f" on host {self.host}" if self.host else ""
        self.end(f"rank {self.rank}{where} failed: {message}", detail, code)

    def end(self, line, detail="", code=1):
        """Report ``line`` and ``detail`` (the first call only), then abort the job with ``code``.

        Under ``dtrain.launch --nproc`` the launcher prints the report of the first failing
        rank (see :func:`record_failure`); elsewhere it goes to stderr."""
        if not self.in_rank():
            return
        with self.lock:
            if self.fired:
                return
            self.fired = True
        sys.stdout.flush()
        if record_failure(f"{line}\n{detail}", code):
            sys.stderr.write(f"{line}\n{detail}")
            sys.stderr.flush()
            time.sleep(FLUSH_DELAY)
        self.abort(code)

    def __call__(self, exc_type, exc, tb):
        if not self.in_rank():
            return self.previous(exc_type, exc, tb)
        self.report(f"{exc_type.__name__}: {exc}", "".join(traceback.format_exception(exc_type, exc, tb)))
