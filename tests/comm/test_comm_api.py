"""The module-level API's error paths, the world of one process, Work handles and the
abort-on-error hook; in-process, no MPI needed (except where skipped)."""
import threading
import time

import numpy as np
import pytest

import dtrain
import dtrain.comm as dist
from comm_helpers import assert_all_checks_passed, clean_env, collective_checks, python
from dtrain.comm import nccl
from dtrain.comm.errors import AbortOnError
from dtrain.comm.launch_status import STATUS_ENV, read_failure
from dtrain.comm.watchdog import describe
from dtrain.comm.work import CommThread


@pytest.fixture
def lone(monkeypatch):
    """No process group, and a clean environment (no launcher variables); the group a test
    makes is destroyed afterwards."""
    if dist.is_initialized():  # left by another test file
        dist.destroy_process_group()
    monkeypatch.setattr("os.environ", clean_env())
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_collectives_before_init_say_to_init(lone):
    """Every function that needs the group tells the user to call init_process_group."""
    for call in (dist.get_rank, dist.barrier, lambda: dist.all_reduce(np.ones(2)), lambda: dist.new_group([0])):
        with pytest.raises(dist.DistError, match=r"call dtrain.comm.init_process_group\(\) first"):
            call()


def test_unknown_backend_lists_the_known_ones(lone):
    """A backend name that is not mpi, nccl or gloo is refused with the list of known ones."""
    with pytest.raises(ValueError, match="unknown backend 'ucc'; known backends: 'mpi', 'nccl', 'gloo'"):
        dist.init_process_group("ucc")


def test_nccl_without_cupy_says_how_to_install(lone, monkeypatch):
    """backend='nccl' without CuPy names what is missing and the pip command."""
    monkeypatch.setattr(nccl, "cupy", None)
    with pytest.raises(dist.DistBackendError, match=r"CuPy is not installed.*pip install dtrain\[cuda\]"):
        dist.init_process_group("nccl")


def test_nccl_without_gpu_says_so(lone, monkeypatch):
    """backend='nccl' with CuPy but no visible GPU says there is no CUDA device."""
    monkeypatch.setattr(nccl, "cupy", object())
    monkeypatch.setattr(nccl, "cuda_device_count", lambda: 0)
    with pytest.raises(dist.DistBackendError, match="CuPy sees no CUDA device"):
        dist.init_process_group("nccl")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(init_method="file:///tmp/init"), ValueError, "init_method 'file:///tmp/init' is not supported"),
    (dict(world_size=2), ValueError, "world_size=2 but the launcher's environment says 1"),
    (dict(rank=1), ValueError, "rank=1 but the launcher's environment says 0"),
    (dict(timeout=-5), ValueError, "timeout must be a positive number of seconds"),
])
def test_bad_init_arguments(lone, kwargs, error, message):
    """Arguments that contradict the environment or are unsupported are refused, quoting them."""
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        dist.init_process_group(**kwargs)


def test_init_twice_with_other_settings_is_an_error(lone):
    """A second init_process_group with other settings says to destroy the first group."""
    dist.init_process_group()
    with pytest.raises(dist.DistError, match="already initialized with other settings.*call destroy_process_group"):
        dist.init_process_group(timeout=5)
    dist.destroy_process_group()
    dist.init_process_group()  # allowed again after destroy


def test_lone_process_is_world_of_one(lone):
    """Without a launcher, init gives rank 0 of 1 whose collectives leave data as one rank would."""
    dist.init_process_group()
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank(), dist.get_local_world_size()) == (0, 1, 0, 1)
    assert dist.get_backend() == ("nccl" if dist.is_nccl_available() else "mpi")
    t = dtrain.tensor([1.0, 2.0])
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])
    out = [np.zeros(2)]
    dist.all_gather(out, np.array([3.0, 4.0]))
    np.testing.assert_array_equal(out[0], [3.0, 4.0])
    assert dist.get_process_group_ranks(dist.new_group([0])) == [0]


def test_new_group_names_invalid_ranks(lone):
    """new_group quotes the invalid ranks and the allowed interval; duplicates are refused."""
    dist.init_process_group()
    with pytest.raises(ValueError, match=r"invalid ranks \[1, -2\]: ranks should be in the interval \[0, 0\]"):
        dist.new_group([0, 1, -2])
    with pytest.raises(ValueError, match="contain duplicates"):
        dist.new_group([0, 0])


def test_roots_must_be_members(lone):
    """A src/dst that is not a rank of the group is named as such."""
    dist.init_process_group()
    with pytest.raises(ValueError, match="src=3 is not a member of the group of ranks"):
        dist.broadcast(np.ones(1), src=3)
    with pytest.raises(ValueError, match="gather_list must be given on the root rank 0"):
        dist.gather(np.ones(1), None, dst=0)


def test_world_of_one_needs_no_mpi():
    """With mpi4py unimportable, a lone process still runs every collective (the rank script)."""
    code = ("import sys, runpy; sys.modules['mpi4py'] = None; sys.argv = ['rank_collectives.py']; "
            "runpy.run_path('tests/comm/rank_collectives.py', run_name='__main__')")
    result = python("-c", code, timeout=60)
    assert_all_checks_passed(result, 1, collective_checks(1))


def test_work_wait_times_out_and_reraises():
    """wait(timeout) raises DistTimeoutError if not done; an error in the task is re-raised by wait."""
    thread = CommThread()
    release = threading.Event()
    slow = thread.submit("slow op", release.wait)
    with pytest.raises(dist.DistTimeoutError, match="slow op did not finish within 0.05 s"):
        slow.wait(timeout=0.05)
    assert not slow.is_completed()
    release.set()
    assert slow.wait(timeout=5) and slow.is_completed()
    failing = thread.submit("bad op", lambda: 1 / 0)
    with pytest.raises(dist.DistError, match="bad op failed: ZeroDivisionError") as e:
        failing.wait(timeout=5)
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    thread.stop()


def test_abort_hook_reports_once_and_aborts(capsys):
    """An uncaught exception prints 'rank N failed: <error>' with its traceback once, then aborts."""
    codes = []
    hook = AbortOnError(3, codes.append)
    try:
        raise ValueError("bad shape")
    except ValueError as e:
        hook(type(e), e, e.__traceback__)
        hook(type(e), e, e.__traceback__)
    err = capsys.readouterr().err
    assert err.startswith("rank 3 failed: ValueError: bad shape\nTraceback") and err.count("rank 3 failed") == 1
    assert codes == [1]


def test_async_work_of_a_lone_process_is_complete(lone):
    """async_op=True returns a Work that is already complete when the world has one rank."""
    dist.init_process_group()
    work = dist.all_reduce(np.ones(3), async_op=True)
    assert work.is_completed() and work.wait() is True
    start = time.perf_counter()
    dist.barrier()
    assert time.perf_counter() - start < 1


def test_timeout_comes_from_the_environment_then_the_argument(lone, monkeypatch):
    """DTRAIN_TIMEOUT (seconds) wins over timeout=, which wins over the 10-minute default;
    a timedelta is read as seconds; a bad DTRAIN_TIMEOUT is named."""
    from datetime import timedelta
    for env, arg, want in ((None, None, 600.0), (None, timedelta(seconds=90), 90.0), ("2.5", 7, 2.5)):
        if env is None:
            monkeypatch.delenv("DTRAIN_TIMEOUT", raising=False)
        else:
            monkeypatch.setenv("DTRAIN_TIMEOUT", env)
        dist.init_process_group(timeout=arg)
        assert dist.lifecycle._state.world.timeout == want
        dist.destroy_process_group()
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv("DTRAIN_TIMEOUT", bad)
        with pytest.raises(ValueError, match=f"DTRAIN_TIMEOUT='{bad}' must be a positive number of seconds"):
            dist.init_process_group()


@pytest.mark.parametrize("env, arg, on", [({}, None, False), ({"DTRAIN_DEBUG": "1"}, None, True),
                                         ({"DTRAIN_DISTRIBUTED_DEBUG": "DETAIL"}, None, True),
                                         ({"DTRAIN_DEBUG": "1"}, False, False), ({}, True, True)])
def test_debug_mode_switches(lone, monkeypatch, env, arg, on):
    """debug= wins; else DTRAIN_DEBUG=1 or its alias DTRAIN_DISTRIBUTED_DEBUG=DETAIL turn it on;
    collectives still work with the check (in a world of one)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    dist.init_process_group(debug=arg)
    assert dist.lifecycle._state.debug is on
    t = np.ones(3, np.float32)
    dist.all_reduce(t)
    dist.broadcast(t, src=0)
    dist.barrier()
    np.testing.assert_array_equal(t, np.ones(3))


def test_calls_are_described_as_in_mismatch_errors():
    """Debug mode and timeouts describe a call as name(dtype[shape], root=...)."""
    assert describe("all_reduce", np.ones(4, np.float32)) == "all_reduce(float32[4])"
    assert describe("barrier") == "barrier()"
    assert describe("broadcast", np.ones((2, 3)), src=1) == "broadcast(float64[2, 3], src=1)"
    assert describe("all_reduce", np.float32(1), op=None) == "all_reduce(float32[])"


class FakeRequest:
    """An MPI request that finishes after ``tests`` calls of Test(), or at once in Wait()."""

    def __init__(self, tests):
        self.left, self.calls = tests, []

    def Test(self):
        self.calls.append("Test")
        self.left -= 1
        return self.left <= 0

    def Wait(self):
        self.calls.append("Wait")


def test_comm_thread_polls_until_somebody_waits():
    """Unwaited, the comm thread tests its request with pauses (no spinning in MPI); once a
    caller waits for the work it blocks in Wait instead."""
    thread = CommThread()
    unwaited = FakeRequest(tests=5)
    work = thread.submit("all_reduce", lambda: thread.complete(unwaited))
    deadline = time.monotonic() + 5
    while not work.is_completed() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert unwaited.calls == ["Test"] * 5
    started, waited = threading.Event(), FakeRequest(tests=10**9)
    work = thread.submit("all_reduce", lambda: (started.set(), thread.complete(waited)))
    started.wait(5)
    assert work.wait(timeout=5) and waited.calls[-1] == "Wait" and "Wait" not in waited.calls[:-1]
    assert not thread.waiting  # the waiter has left
    thread.stop()


def test_timed_out_work_explains_itself():
    """A Work given an explanation raises DistTimeoutError with it (the collective, its
    number and the ranks that have not called it)."""
    thread = CommThread()
    release = threading.Event()
    work = thread.submit("all_reduce", release.wait, explain=lambda limit: f"all_reduce #3 late after {limit} s")
    with pytest.raises(dist.DistTimeoutError, match="all_reduce #3 late after 0.05 s"):
        work.wait(timeout=0.05)
    release.set()
    thread.stop()


def test_only_the_first_failing_rank_reports_under_the_launcher(monkeypatch, tmp_path, capsys):
    """Under dtrain.launch --nproc, ranks share a status folder: the first failure's report and
    code are left there for the launcher to print; a later rank's failure only aborts."""
    monkeypatch.setenv(STATUS_ENV, str(tmp_path))
    codes = []
    AbortOnError(1, codes.append).end("rank 1 exited with code 3", code=3)
    AbortOnError(0, codes.append).report("DistTimeoutError: all_reduce", "details")
    assert capsys.readouterr().err == "" and codes == [3, 1]
    assert read_failure(str(tmp_path)) == (3, "rank 1 exited with code 3\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failure"]


def test_all_reduce_coalesced_world_of_one(lone):
    """With one rank, all_reduce_coalesced leaves SUM and AVG results equal to the inputs,
    applies ``scale``, writes into Tensors and strided arrays, and names bad input."""
    dist.init_process_group()
    t, a = dtrain.tensor(np.arange(6.0).reshape(2, 3)), np.arange(8.0)[::2]
    dist.all_reduce_coalesced([t, a], op=dist.ReduceOp.AVG)
    np.testing.assert_array_equal(t.numpy(), np.arange(6.0).reshape(2, 3))
    dist.all_reduce_coalesced([t, a], scale=0.5)
    np.testing.assert_array_equal(t.numpy(), np.arange(6.0).reshape(2, 3) / 2)
    np.testing.assert_array_equal(a, np.arange(8.0)[::2] / 2)
    with pytest.raises(TypeError, match="one dtype"):
        dist.all_reduce_coalesced([np.zeros(2), np.zeros(2, np.float32)])
    with pytest.raises(TypeError, match="scale needs floating-point"):
        dist.all_reduce_coalesced([np.zeros(2, np.int64)], scale=0.5)


@pytest.mark.parametrize("tensors, error, message", [
    ([], ValueError, "must be a non-empty list of tensors, got \\[\\]"),
    ([np.zeros(2, bool)], TypeError, "bool tensors are not supported; use all_reduce"),
    ("not a list", ValueError, "must be a non-empty list of tensors, got 'not a list'"),
    ([np.zeros(2), "x"], TypeError, "must be a dtrain Tensor, a NumPy array or a CuPy array, got str"),
])
def test_all_reduce_coalesced_names_bad_input(lone, tensors, error, message):
    """Bad tensor lists are refused with a message naming what was wrong."""
    dist.init_process_group()
    with pytest.raises(error, match=message):
        dist.all_reduce_coalesced(tensors)
