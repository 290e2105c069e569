"""dtrain.multiprocessing.spawn as PyTorch's DDP tutorial uses it: from a plain ``python
script.py``, N ranks run ``fn(rank, *args)`` in one MPI job; failures come back as
torch.multiprocessing's exceptions, naming the rank."""
import json
import pickle

import pytest

import dtrain.multiprocessing as mp
from comm_helpers import output, python, require_mpi

JOBS = "tests/comm/spawn_jobs.py"


def spawn_job(*args):
    """Run spawn_jobs.py with ``args`` from a clean environment; returns (its JSON line, result)."""
    result = python(JOBS, *args, timeout=90)
    assert result.returncode == 0, output(result)
    return json.loads(result.stdout.strip().splitlines()[-1]), result


@pytest.mark.parametrize("nprocs", [1, 2])
def test_tutorial_ranks_run_fn_in_one_group(nprocs, tmp_path):
    """Each rank imports the script as __mp_main__ (its main block does not run again), gets
    the parent's argv, joins one group through init_process_group('gloo', rank, world_size),
    all-reduces, and trains the same DDP weights as every other rank; join=False returns a
    context whose join() is True once done (and again after)."""
    if nprocs > 1:
        require_mpi()
    seen, result = spawn_job("tutorial", str(nprocs), str(tmp_path))
    assert seen == {"returned": None, "context": "ProcessContext", "joined": True, "again": True, "pids": 1}
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(nprocs)]
    want_sum = [float(sum(range(1, nprocs + 1)))]
    for r, record in enumerate(ranks):
        assert record["rank"] == r and record["world"] == nprocs and record["module"] == "__mp_main__", record
        assert record["sum"] == want_sum and record["argv"] == ["tutorial", str(nprocs), str(tmp_path)], record
        assert record["weight"] == ranks[0]["weight"], "DDP left the ranks with different weights"
    assert json.loads((tmp_path / "nowait" / "rank0.json").read_text())["world"] == 1


def test_failures_name_the_rank():
    """A rank that raises gives ProcessRaisedException with PyTorch's header and the rank's
    traceback; sys.exit(3) and SIGKILL give ProcessExitedException with the code or signal; a
    collective timing out is the waiting rank's error, with the stack where it waited; the
    ranks waiting for the failed one do not hang."""
    require_mpi()
    seen, result = spawn_job("failures")
    raised = seen["raises"]
    assert raised["type"] == "ProcessRaisedException" and raised["index"] == 1, output(result)
    assert raised["message"].startswith("\n\n-- Process 1 terminated with the following error:\nTraceback")
    assert raised["message"].endswith("ValueError: bad value on rank 1\n") and "in raises" in raised["message"]
    assert seen["exits"] == {"type": "ProcessExitedException", "index": 1, "exit_code": 3, "signal": None,
                             "message": "process 1 terminated with exit code 3"}, output(result)
    assert seen["killed"] == {"type": "ProcessExitedException", "index": 1, "exit_code": -9, "signal": "SIGKILL",
                              "message": "process 1 terminated with signal SIGKILL"}, output(result)
    timed_out = seen["times_out"]
    assert timed_out["type"] == "ProcessRaisedException" and timed_out["index"] == 0, output(result)
    assert timed_out["message"].startswith("\n\n-- Process 0 terminated with the following error:\nDistTimeoutError: "
                                           "all_reduce(float64[2]) (collective #1 on ranks [0, 1]) did not finish "
                                           "within 1 s on rank 0"), timed_out["message"]
    assert "in times_out" in timed_out["message"]


def _nested_target():
    def inner(rank):
        pass
    return inner


@pytest.mark.parametrize("fn, message", [(lambda rank: None, "Can't pickle <function <lambda> at 0x"),
                                         (_nested_target(), "Can't pickle local object")])
def test_unpicklable_fn_raises_pickles_error(fn, message):
    """A lambda or a nested function fails in the parent, before any process starts, with
    pickle's error (what torch.multiprocessing.spawn raises)."""
    with pytest.raises((pickle.PicklingError, AttributeError), match=message):
        mp.spawn(fn, nprocs=2)


def test_lambda_error_matches_pytorch():
    """Spawning a lambda raises the same exception type and message as PyTorch (but for the address)."""
    torch_mp = pytest.importorskip("torch.multiprocessing")
    errors = []
    for spawn in (torch_mp.spawn, mp.spawn):
        with pytest.raises(Exception) as e:
            spawn(lambda rank: None, nprocs=1)
        errors.append((type(e.value), str(e.value).split(" at 0x")[0], str(e.value).split(">", 1)[1]))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(nprocs=0), ValueError, "spawn: nprocs must be an integer >= 1, got 0"),
    (dict(nprocs=2, args=[1]), TypeError, "spawn: args must be a tuple"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    """A bad nprocs or args is refused before anything starts, quoting it."""
    with pytest.raises(error, match=message):
        mp.spawn(print, **kwargs)


def test_spawn_inside_a_launched_rank_says_what_to_do(monkeypatch):
    """Called in a rank of a running 2-rank job, spawn refuses, naming the job and the fix."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"already rank 1 of 2 started by RANK/WORLD_SIZE.*plain python"):
        mp.spawn(print, nprocs=2)


def test_start_method_other_than_spawn_warns():
    """As in PyTorch, spawn(start_method='fork') warns (FutureWarning) and spawns anyway; the
    warning comes before the start, so a bad target shows it without starting anything."""
    with pytest.warns(FutureWarning, match=r"only supports start_method=spawn \(got: fork\)"):
        with pytest.raises(AttributeError, match="Can't pickle local object"):
            mp.spawn(_nested_target(), start_method="fork")


def test_python_multiprocessing_names_are_reexported():
    """torch.multiprocessing's habit: Python's multiprocessing names are there too."""
    import multiprocessing
    assert mp.Queue is multiprocessing.Queue and mp.get_context is multiprocessing.get_context
    assert mp.cpu_count() == multiprocessing.cpu_count()
    assert {"spawn", "ProcessRaisedException", "ProcessExitedException", "ProcessContext"} <= set(mp.__all__)


def test_several_processes_without_mpiexec_say_what_to_install(monkeypatch):
    """nprocs > 1 needs mpiexec; without one, spawn says so and what to install."""
    monkeypatch.setattr("dtrain.launch.find_mpiexec", lambda: None)
    with pytest.raises(RuntimeError, match=r"spawn: nprocs=2 needs mpiexec.*pip install dtrain\[mpi\]"):
        mp.spawn(print, nprocs=2)


def test_reachable_as_torch_multiprocessing_but_imported_on_first_use():
    """dtrain.multiprocessing works after a plain `import dtrain`, which does not import it
    (its spawned ranks run it with -m, which warns if it is already imported)."""
    code = ("import sys, dtrain; assert 'dtrain.multiprocessing' not in sys.modules; "
            "assert dtrain.multiprocessing.spawn is sys.modules['dtrain.multiprocessing'].spawn")
    result = python("-W", "error", "-c", code)
    assert result.returncode == 0, output(result)


def test_failures_of_a_single_process():
    """With nprocs=1 (no mpiexec) a raise and a SIGKILL come back as with several ranks."""
    seen, result = spawn_job("alone")
    raised = seen["alone_raises"]
    assert raised["type"] == "ProcessRaisedException" and raised["index"] == 0, output(result)
    assert raised["message"].startswith("\n\n-- Process 0 terminated with the following error:\nTraceback")
    assert raised["message"].endswith("KeyError: 0\n"), raised["message"]
    assert seen["alone_killed"] == {"type": "ProcessExitedException", "index": 0, "exit_code": -9,
                                    "signal": "SIGKILL", "message": "process 0 terminated with signal SIGKILL"}
