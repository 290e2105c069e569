"""Errors of the comm layer, and the hook that stops a whole job when one rank fails."""
import sys
import traceback


class DistError(RuntimeError):
    """A distributed operation failed or was misused (``torch.distributed.DistError``)."""


class DistBackendError(DistError):
    """The communication backend (MPI, NCCL) failed or is missing."""


class DistTimeoutError(DistError):
    """A collective did not finish within the process group's timeout."""


class AbortOnError:
    """An ``sys.excepthook`` that reports an uncaught exception and aborts every rank.

    Without it, one rank's exception leaves its peers blocked forever in their next
    collective. It prints ``rank N failed: <error>`` and the traceback to stderr, once,
    then calls ``abort(1)`` (``MPI.COMM_WORLD.Abort``), which ends every rank of the job.

    Args:
        rank: this process's global rank, named in the message.
        abort: called with the exit code after the report.
    """

    def __init__(self, rank, abort):
        self.rank, self.abort = rank, abort
        self.previous = None
        self.fired = False

    def install(self):
        self.previous, sys.excepthook = sys.excepthook, self

    def uninstall(self):
        if sys.excepthook is self:
            sys.excepthook = self.previous

    def report(self, message, exc_info=None, code=1):
        """Print ``rank N failed: message`` (and the traceback) once, then abort the job with ``code``."""
        if self.fired:
            return
        self.fired = True
        text = f"rank {self.rank} failed: {message}\n"
        if exc_info is not None:
            text += "".join(traceback.format_exception(*exc_info))
        sys.stdout.flush()
        sys.stderr.write(text)
        sys.stderr.flush()
        self.abort(code)

    def __call__(self, exc_type, exc, tb):
        self.report(f"{exc_type.__name__}: {exc}", (exc_type, exc, tb))
