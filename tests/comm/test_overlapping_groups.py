"""Async collectives on overlapping sub-groups (issue #15): each process group's async work
runs on its own comm thread, in that group's program order, so groups never wait for each
other's collectives (dtrain/comm/work.py)."""
import sys
import threading
import time

import pytest

from comm_helpers import assert_all_checks_passed, clean_env, require_mpi, run
from dtrain.comm.work import CommThread

CHECKS = 5  # the checks.run calls of rank_overlapping_groups.py


def test_overlapping_groups_at_three_ranks():
    """Groups {0, 1} and {1, 2}: async all-reduces on both finish in seconds whichever rank 1
    issues first, also when rank 2 reaches {1, 2} only after rank 0's {0, 1} has finished
    (a barrier, a message), with shared-memory messages, and interleaved with the world's.
    DTRAIN_TIMEOUT=10: a deadlock fails the job, not the test's own timeout."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "3", sys.executable, "tests/comm/rank_overlapping_groups.py"], timeout=60,
                 env=clean_env(DTRAIN_TIMEOUT="10"))
    assert_all_checks_passed(result, 3, CHECKS)


def comm_threads():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("dtrain-comm"))


def test_a_lane_does_not_wait_for_another():
    """A task queued behind a blocked task of another lane runs at once; within a lane, in order."""
    threads = CommThread()
    release, order = threading.Event(), []
    blocked = threads.submit("all_reduce on {1, 2}", release.wait, lane=12)
    first = threads.submit("all_reduce on {0, 1}", lambda: order.append(1), lane=1)
    second = threads.submit("all_reduce on {0, 1}", lambda: order.append(2), lane=1)
    assert second.wait(timeout=5) and first.is_completed() and order == [1, 2]
    assert not blocked.is_completed()
    release.set()
    assert blocked.wait(timeout=5)
    threads.stop()


def test_a_thread_per_lane_ended_by_close_lane_and_stop():
    """One thread per lane that has run a task (not per task); close_lane ends its lane's thread
    after its queued tasks, stop ends the rest."""
    before = comm_threads()
    threads = CommThread()
    done = []
    for i in range(20):
        threads.submit("op", lambda i=i: done.append(i), lane=i % 2)
    threads.submit("op", lambda: done.append("no lane"))
    assert comm_threads() == sorted(before + ["dtrain-comm", "dtrain-comm-0", "dtrain-comm-1"])
    slow = threads.submit("op", lambda: (time.sleep(0.2), done.append("slow")), lane=1)
    threads.close_lane(1)
    assert slow.is_completed() and "slow" in done
    assert comm_threads() == sorted(before + ["dtrain-comm", "dtrain-comm-0"])
    threads.close_lane("never used")
    threads.stop()
    assert comm_threads() == before and len(done) == 22


class Request:
    """An MPI request that completes on its ``tests``-th Test; records the calls."""

    def __init__(self, tests):
        self.calls, self.tests = [], tests

    def Test(self):
        self.calls.append("Test")
        return len(self.calls) >= self.tests

    def Wait(self):
        self.calls.append("Wait")


def test_waiting_is_per_lane():
    """A caller waiting for one lane's work does not make another lane's thread block in MPI:
    that one keeps testing its request (CommThread.complete) until it completes."""
    threads = CommThread()
    release = threading.Event()
    work = threads.submit("op", release.wait, lane="a")
    waiter = threading.Thread(target=work.wait, kwargs={"timeout": 5})
    waiter.start()
    deadline = time.monotonic() + 5
    while not threads.waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(threads.lanes["a"].waiting) == 1
    request = Request(tests=5)
    polled = threads.submit("op", lambda: threads.complete(request), lane="b")
    while not polled.is_completed() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert request.calls == ["Test"] * 5
    release.set()
    waiter.join()
    assert not threads.waiting
    threads.stop()
