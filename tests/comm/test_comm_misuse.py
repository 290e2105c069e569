"""Misuse gets dtrain's errors, naming what was wrong (issue #15, items 9, 11, 12): arrays
collectives cannot move, a group that is no group, a broadcast_object_list without a list,
a wrong DTRAIN_MPIEXEC, an absurd --nproc; and a rank's forked child does not end the job.
In-process (a world of one process) or through the launcher's command line; no MPI job."""
import os
import sys

import numpy as np
import pytest

import dtrain
import dtrain.comm as dist
from comm_helpers import clean_env, python
from dtrain.comm.errors import AbortOnError
from dtrain.launch import check_nproc, find_mpiexec, nproc_limit
from dtrain.multiprocessing import spawn


@pytest.fixture
def world_of_one(monkeypatch):
    """A world of one process (no launcher variables), destroyed afterwards."""
    if dist.is_initialized():  # left by another test file
        dist.destroy_process_group()
    monkeypatch.setattr("os.environ", clean_env())
    dist.init_process_group()
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("array, dtype", [(np.array([1, "a"], dtype=object), "object"),
                                          (np.array(["ab", "c"]), "<U2"),
                                          (np.array(["2026-01-01"], dtype="datetime64[D]"), r"datetime64\[D\]")])
@pytest.mark.parametrize("call", [lambda a: dist.all_reduce(a), lambda a: dist.broadcast(a, 0),
                                  lambda a: dist.all_gather([a.copy()], a)], ids=["all_reduce", "broadcast",
                                                                                  "all_gather"])
def test_arrays_of_non_numbers_are_refused_naming_the_dtype(world_of_one, array, dtype, call):
    """An object, string or datetime array is a TypeError naming the dtype and what to use
    instead (it reached MPI as a KeyError: "cannot map 'O' to MPI datatype")."""
    with pytest.raises(TypeError, match=rf"tensor has dtype {dtype}, which collectives cannot move: they take "
                                        rf"bool, integer, floating-point or complex tensors; send Python objects "
                                        rf"with broadcast_object_list"):
        call(array)


def test_numeric_arrays_still_pass(world_of_one):
    """bool, int, float and complex arrays and Tensors go through (a world of one keeps them)."""
    for a in (np.array([True, False]), np.arange(3), np.ones(2, np.float32), np.array([1 + 2j])):
        expected = a.copy()
        dist.all_reduce(a)
        np.testing.assert_array_equal(a, expected)
    t = dtrain.ones(2)
    dist.all_reduce(t)
    assert t.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("group", ["world", 0, [0]])
def test_a_group_that_is_no_group_is_a_type_error(world_of_one, group):
    """group='world' (or a rank, or a list of ranks) names the value and says what a group
    is (it was an AttributeError from deep inside: "'str' object has no attribute 'rank'")."""
    with pytest.raises(TypeError, match=rf"all_reduce: group must be a process group \(dist.group.WORLD, or one "
                                        rf"new_group returned\) or None for the default group, got "
                                        rf"{type(group).__name__} "):
        dist.all_reduce(np.ones(2), group=group)
    with pytest.raises(TypeError, match="get_rank: group must be a process group"):
        dist.get_rank(group)
    assert dist.get_rank(dist.group.WORLD) == 0  # the real one still works


@pytest.mark.parametrize("object_list", [5, "ab", (1, 2)])
def test_broadcast_object_list_needs_a_list(world_of_one, object_list):
    """broadcast_object_list(5) names the type it got (it was "'int' object is not iterable");
    a list still works."""
    with pytest.raises(TypeError, match=rf"broadcast_object_list: object_list must be a list \(its items are "
                                        rf"replaced by those of rank 0, the same length on every rank\), got "
                                        rf"{type(object_list).__name__}"):
        dist.broadcast_object_list(object_list)
    objects = [{"lr": 0.1}, "x"]
    dist.broadcast_object_list(objects)
    assert objects == [{"lr": 0.1}, "x"]


def test_a_wrong_dtrain_mpiexec_is_an_error_naming_it(monkeypatch):
    """DTRAIN_MPIEXEC that is no executable is an error naming it, from find_mpiexec and from
    the launcher (it fell back silently to another mpiexec); a command name on PATH works."""
    monkeypatch.setenv("DTRAIN_MPIEXEC", "/nonexistent/mpiexec")
    with pytest.raises(RuntimeError, match=r"DTRAIN_MPIEXEC='/nonexistent/mpiexec' is not an executable file"):
        find_mpiexec()
    result = python("-m", "dtrain.launch", "--nproc", "2", "-m", "json.tool", timeout=60,
                    env=clean_env(DTRAIN_MPIEXEC="/nonexistent/mpiexec"))
    assert result.returncode == 1, result.stderr
    assert "dtrain.launch: DTRAIN_MPIEXEC='/nonexistent/mpiexec' is not an executable file" in result.stderr
    monkeypatch.setenv("DTRAIN_MPIEXEC", "sh")  # a command on PATH is resolved to its path
    assert find_mpiexec() == __import__("shutil").which("sh")


def test_nproc_beyond_64_per_core_is_refused(monkeypatch):
    """--nproc above 64 ranks per CPU core (1000 on a small machine) is an argparse error
    naming the number, the bound and the core count; spawn refuses it too; the bound itself
    passes."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert nproc_limit() == 128
    check_nproc(128)
    with pytest.raises(ValueError, match=r"^--nproc 129: more than 128 ranks \(64 per CPU core; this machine has "
                                         r"2\)"):
        check_nproc(129)
    with pytest.raises(ValueError, match=r"^spawn: nprocs 1000: more than 128 ranks"):
        spawn(print, nprocs=1000)
    too_many = 64 * (os.cpu_count() or 1) + 1
    result = python("-m", "dtrain.launch", "--nproc", str(too_many), "-m", "json.tool", timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"--nproc {too_many}: more than {too_many - 1} ranks (64 per CPU core" in result.stderr


def test_the_abort_hook_acts_only_in_the_ranks_own_process():
    """In a child the rank forked (os.fork), the hook neither reports nor aborts: an uncaught
    exception goes to the previous excepthook, end() does nothing; in the rank it aborts."""
    codes, previous = [], []
    hook = AbortOnError(1, codes.append)
    hook.previous = lambda *exc: previous.append(exc[0])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what the hook did through the pipe, then leave at once
        try:
            hook(ValueError, ValueError("boom"), None)
            hook.end("rank 1 exited with code 3", code=3)
            os.write(write, f"{codes} {[e.__name__ for e in previous]} {hook.fired}".encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 200).decode() == "[] ['ValueError'] False" and os.waitstatus_to_exitcode(status) == 0
    os.close(read)
    hook.end("rank 1 exited with code 3", code=3)
    assert codes == [3]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
