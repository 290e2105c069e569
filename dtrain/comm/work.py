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

from ..timing import phase, trace_name, traced
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
        with phase("comm-wait"):
            finished = self._wait(limit)
        if not finished:
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
    While a caller waits in ``wait()`` its lane's thread knows somebody is idle (see ``CommThread.complete``)."""

    def __init__(self, name, timeout=None, explain=None, thread=None):
        super().__init__(name, timeout, explain)
        self.trace_name = trace_name(name)  # e.g. "all_reduce_coalesced (bucket 2)": the trace's label (DTRAIN_TRACE)
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
    """The process's communication threads: one per lane, each running its lane's tasks in
    submission order. A lane is a process group (its key: the group's id), and its thread
    is made on the group's first async collective and ended by :meth:`close_lane` (the
    group's destroy) or :meth:`stop` (the world's); tasks given no lane share one.

    Submission order within a group is the same on every rank (collectives are issued in
    program order), so each thread issues its group's MPI collectives in the same order
    everywhere, as MPI requires. Groups do not wait for each other: with one thread for
    every group, rank 1 of groups {0, 1} and {1, 2} could not start {0, 1}'s all-reduce
    before {1, 2}'s had ended, so a program in which rank 2 reaches {1, 2}'s only after
    rank 0's {0, 1} has finished (a barrier, a message) deadlocked where PyTorch's
    per-group threads finish it. Each lane's group has its own communicator (the group's
    async duplicate), so the threads' MPI calls never share one.

    A blocking MPI call spins until the peers' threads arrive; while the callers compute on
    every core (DDP's backward on a CPU node) those threads get a core late and the spinning
    one holds its own, so the operation finishes late (``benchmarks/comm_progress.py``;
    figures in benchmarks/RESULTS.md). So a thread starts an all-reduce nonblocking and
    tests it every ``poll_s`` seconds (:meth:`complete`) until somebody waits for a result
    of its lane; from then on it blocks in MPI, at full speed. ``DTRAIN_COMM_POLL_US`` sets
    the pause in microseconds; 0 turns this off (blocking calls on the thread).
    """

    poll_s = float(os.environ.get("DTRAIN_COMM_POLL_US", "50")) * 1e-6

    def __init__(self):
        self.lanes = {}  # lane key -> _Lane
        self.lock = threading.Lock()  # callers on several threads may open lanes at once
        self.current = threading.local()  # .lane: the _Lane whose thread this is

    def submit(self, name, fn, timeout=None, explain=None, lane=None):
        """Run ``fn()`` on ``lane``'s thread (made now if it has none) after the lane's earlier
        tasks; returns its :class:`FutureWork` (``explain(limit)``: its timeout message)."""
        with self.lock:
            runner = self.lanes.get(lane)
            if runner is None:
                runner = self.lanes[lane] = _Lane(lane, self.current)
        work = FutureWork(name, timeout, explain, runner)
        runner.tasks.put((fn, work))
        return work

    @property
    def waiting(self):
        """Tokens of the callers blocked in ``FutureWork.wait()``, on any lane."""
        return set().union(*(runner.waiting for runner in list(self.lanes.values())))

    def complete(self, request):
        """Finish an MPI request started on one of these threads: test it every ``poll_s``
        seconds while no caller waits for this lane's work (the caller's computation keeps
        the CPU), then block in Wait."""
        waiting = self.current.lane.waiting
        while not request.Test():
            if waiting:
                request.Wait()
                return
            time.sleep(self.poll_s)

    def is_current(self):
        """Whether the calling thread is one of these (then it uses the async communicators)."""
        return getattr(self.current, "lane", None) is not None

    def close_lane(self, lane):
        """Finish ``lane``'s queued tasks, then end its thread (no-op for a lane never used)."""
        with self.lock:
            runner = self.lanes.pop(lane, None)
        if runner is not None:
            runner.stop()

    def stop(self):
        """Finish every lane's queued tasks, then end the threads."""
        with self.lock:
            runners, self.lanes = list(self.lanes.values()), {}
        for runner in runners:
            runner.stop()


class _Lane:
    """One thread and its queue: the tasks of one lane, run in submission order."""

    def __init__(self, key, current):
        self.tasks = queue.SimpleQueue()
        self.waiting = set()  # a token per caller blocked in FutureWork.wait()
        self.current = current
        name = "dtrain-comm" if key is None else f"dtrain-comm-{key}"
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def stop(self):
        self.tasks.put(None)
        self.thread.join()

    def _loop(self):
        self.current.lane = self
        while True:
            item = self.tasks.get()
            if item is None:
                return
            fn, work = item
            try:
                with traced(work.trace_name):  # the trace's comm track (DTRAIN_TRACE)
                    fn()
            except BaseException as e:  # handed to the waiter: wait() re-raises it
                work.error = e
            work.done.set()
            item = fn = work = None  # else the last task's closure (its buffers) lives until the next task
