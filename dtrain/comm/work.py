"""Work handles of asynchronous operations, and the thread that runs MPI collectives.

Why a thread: the MPI library here (MPICH, and Open MPI by default) only advances a
nonblocking collective (``Iallreduce``) while the caller is inside an MPI call, so an
``Iallreduce`` started before a long NumPy computation barely overlaps with it, while the
same all-reduce run on a second thread does (NumPy and MPI release the GIL). The overlap
table of ``benchmarks/allreduce.py`` measures it; the figures are in benchmarks/RESULTS.md.
"""
import os
import queue
import threading
import time
from datetime import timedelta

from .errors import DistError, DistTimeoutError


def seconds(timeout):
    """A timeout given as seconds or a ``datetime.timedelta``, in seconds (None stays None)."""
    if isinstance(timeout, timedelta):
        return timeout.total_seconds()
    if timeout is None or isinstance(timeout, (int, float)) and timeout > 0:
        return timeout
    raise ValueError(f"timeout must be a positive number of seconds or a datetime.timedelta, got {timeout!r}")


class Work:
    """Handle of an operation started with ``async_op=True`` (``torch.distributed.Work``).

    Example:
        >>> work = dist.all_reduce(t, async_op=True)
        >>> ...  # compute while the reduction runs
        >>> work.wait()  # t now holds the sum
    """

    def __init__(self, name, timeout=None, explain=None):
        self.name, self.timeout, self.explain = name, timeout, explain

    def wait(self, timeout=None):
        """Block until the operation has finished; re-raise its error. Returns True.

        Args:
            timeout: seconds (or timedelta) to wait; default: the process group's timeout.

        Raises:
            DistTimeoutError: not finished in time.
            DistError: the operation failed (its error is the ``__cause__``).
        """
        limit = seconds(timeout) if timeout is not None else self.timeout
        if not self._wait(limit):
            if self.explain is not None:  # names the collective, its number and the ranks not there
                raise DistTimeoutError(self.explain(limit))
            raise DistTimeoutError(f"{self.name} did not finish within {limit} s (a rank may have failed or "
                                   f"be stuck before this collective)")
        error = self.exception()
        if error is not None:
            raise DistError(f"{self.name} failed: {type(error).__name__}: {error}") from error
        return True

    def is_completed(self):
        """True once the operation has finished (successfully or not); never blocks."""
        raise NotImplementedError

    def exception(self):
        """The error the operation raised, or None."""
        return None

    def _wait(self, limit):
        raise NotImplementedError


class CompletedWork(Work):
    """The handle of an operation that ran to completion before it was returned."""

    def is_completed(self):
        return True

    def _wait(self, limit):
        return True


class FutureWork(Work):
    """The handle of a task run by :class:`CommThread`; completion is a threading.Event.
    While a caller waits in ``wait()`` the thread knows somebody is idle (see ``CommThread.complete``)."""

    def __init__(self, name, timeout=None, explain=None, thread=None):
        super().__init__(name, timeout, explain)
        self.done = threading.Event()
        self.error = None
        self.thread = thread

    def is_completed(self):
        return self.done.is_set()

    def exception(self):
        return self.error

    def _wait(self, limit):
        if self.thread is None or self.done.is_set():
            return self.done.wait(limit)
        token = object()
        self.thread.waiting.add(token)  # set.add and set.discard are atomic under the GIL
        try:
            return self.done.wait(limit)
        finally:
            self.thread.waiting.discard(token)


class PollWork(Work):
    """The handle of an operation whose completion is polled (an MPI request, a CUDA event).

    Args:
        name: the operation, for messages.
        test: returns True once the operation has finished.
        on_complete: called once, in the waiting thread, after completion (copy-back).
    """

    def __init__(self, name, test, on_complete=None, timeout=None):
        super().__init__(name, timeout)
        self.test, self.on_complete = test, on_complete
        self.finished = False

    def is_completed(self):
        if not self.finished and self.test():
            self.finished = True
            if self.on_complete is not None:
                self.on_complete()
        return self.finished

    def _wait(self, limit):
        deadline = None if limit is None else time.monotonic() + limit
        pause = 1e-6
        while not self.is_completed():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)
        return True


class CommThread:
    """One background thread that runs submitted tasks in submission order.

    Submission order is the same on every rank (collectives are issued in program order),
    so the thread issues MPI collectives in the same order everywhere, as MPI requires.

    A blocking MPI call spins until the peers' threads arrive; while the callers compute on
    every core (DDP's backward on a CPU node) those threads get a core late and the spinning
    one holds its own, so the operation finishes late (``benchmarks/comm_progress.py``;
    figures in benchmarks/RESULTS.md). So the thread starts an all-reduce
    nonblocking and tests it every ``poll_s`` seconds (:meth:`complete`) until somebody waits
    for a result; from then on it blocks in MPI, at full speed. ``DTRAIN_COMM_POLL_US`` sets
    the pause in microseconds; 0 turns this off (blocking calls on the thread).
    """

    poll_s = float(os.environ.get("DTRAIN_COMM_POLL_US", "50")) * 1e-6

    def __init__(self):
        self.tasks = queue.SimpleQueue()
        self.waiting = set()  # a token per caller blocked in FutureWork.wait()
        self.thread = threading.Thread(target=self._loop, name="dtrain-comm", daemon=True)
        self.thread.start()

    def submit(self, name, fn, timeout=None, explain=None):
        """Run ``fn()`` on the thread; returns its :class:`FutureWork` (``explain(limit)``: its
        timeout message)."""
        work = FutureWork(name, timeout, explain, self)
        self.tasks.put((fn, work))
        return work

    def complete(self, request):
        """Finish an MPI request started on this thread: test it every ``poll_s`` seconds
        while no caller waits (the caller's computation keeps the CPU), then block in Wait."""
        while not request.Test():
            if self.waiting:
                request.Wait()
                return
            time.sleep(self.poll_s)

    def is_current(self):
        return threading.current_thread() is self.thread

    def stop(self):
        """Finish the queued tasks, then end the thread."""
        self.tasks.put(None)
        self.thread.join()

    def _loop(self):
        while True:
            item = self.tasks.get()
            if item is None:
                return
            fn, work = item
            try:
                fn()
            except BaseException as e:  # handed to the waiter: wait() re-raises it
                work.error = e
            work.done.set()
