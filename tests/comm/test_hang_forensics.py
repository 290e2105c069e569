"""Hang forensics (dtrain/comm/forensics.py, watchdog.py): a rank stuck in another collective
than its peers is named, with both call sites, within the timeout and a few seconds, under
``python -m dtrain.launch --nproc`` and a plain ``mpiexec``; every rank's stacks and last
collectives are in DTRAIN_RUN_DIR and parse. The report's phrases are checked on their own
below, without MPI."""
import glob
import json
import os
import re
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from comm_helpers import ROOT, clean_env, output, require_mpi, run
from dtrain.comm import forensics
from dtrain.comm.watchdog import Op, Watchdog

SCRIPT = os.path.join("tests", "comm", "rank_divergent.py")
TIMEOUT = 3


def sites():
    """``{name: line}`` of rank_divergent.py's ``# site: name`` comments."""
    with open(os.path.join(ROOT, SCRIPT)) as f:
        return {line.split("# site: ")[1].strip(): i for i, line in enumerate(f, 1) if "# site: " in line}


def _ranks(ranks):
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


@pytest.mark.parametrize("launcher, n, mode, seq", [("--nproc", 4, "barrier", 3), ("mpiexec", 2, "skip", 5)])
def test_divergent_rank_is_named_with_both_call_sites(tmp_path, launcher, n, mode, seq):
    """barrier: rank 2 of 4 calls barrier() where the others all_reduce; skip: rank 1 of 2
    skips one all_reduce of a loop and meets the others' at the next barrier(). One report
    names the collective number where the calls first differ, each side's call and call site
    and where each rank is; every rank wrote rank<N>.stacks.txt and rank<N>.history.json."""
    mpiexec = require_mpi()
    line = sites()
    odd = 2 if n > 2 else 1
    others = [r for r in range(n) if r != odd]
    at_barrier, at_all_reduce = ((line["odd barrier"], line["all_reduce"]) if mode == "barrier" else
                                 (line["loop barrier"], line["loop all_reduce"]))
    command = ([sys.executable, "-m", "dtrain.launch", "--nproc", str(n), SCRIPT, mode] if launcher == "--nproc"
               else [mpiexec, "-n", str(n), sys.executable, SCRIPT, mode])
    env = clean_env(DTRAIN_TIMEOUT=str(TIMEOUT), DTRAIN_CHECK_EVERY="0", DTRAIN_RUN_DIR=str(tmp_path))
    result = run(command, timeout=90, env=env)
    end, text = time.time(), result.stdout + result.stderr
    diverged = [float(t) for t in re.findall(r"rank \d+ diverges at ([0-9.]+)", result.stdout)]
    assert len(diverged) == n, output(result)
    seconds = end - max(diverged)  # from the divergence to the end of the job (not its start: a loaded machine)
    assert result.returncode == 1 and seconds < TIMEOUT + 10, f"after {seconds:.1f} s: {output(result)}"
    sides = sorted([([odd], "barrier()", at_barrier), (others, "all_reduce(float32[4])", at_all_reduce)],
                   key=lambda side: (len(side[0]), side[0]))
    differ = "; ".join(f"{_ranks(r)} called {call} from rank_divergent.py:{at}" for r, call, at in sides)
    where = "; ".join(f"{_ranks(r)} {'is' if len(r) == 1 else 'are'} in {call} #{seq} from rank_divergent.py:{at}"
                      for r, call, at in sides)
    assert text.count(f"the ranks' calls differ at #{seq}: {differ}\nwhere each rank is: {where}\n") == 1, \
        output(result)
    assert text.count(" failed: DistTimeoutError: ") == 1, output(result)  # one report
    assert "unreachable" not in text, output(result)

    (folder,) = glob.glob(os.path.join(tmp_path, "dtrain-hang-*"))
    assert f"stacks and the last 32 collectives of each rank: {folder}/rank<N>.stacks.txt" in text, output(result)
    for rank in range(n):
        with open(os.path.join(folder, f"rank{rank}.stacks.txt")) as f:
            stacks = f.read()
        assert stacks.startswith(f"rank {rank} (pid ") and "Thread MainThread" in stacks, stacks
        assert f"rank_divergent.py\", line {at_barrier if rank == odd else at_all_reduce}" in stacks, stacks
        with open(os.path.join(folder, f"rank{rank}.history.json")) as f:
            record = json.load(f)
        assert record["rank"] == rank and record["pid"] > 0, record
        (world,) = record["groups"]
        assert world["ranks"] == list(range(n)) and world["calls"] == seq, world
        assert [e["seq"] for e in world["history"]] == list(range(1, seq + 1)), world
        last = world["history"][-1]
        call, at = ("barrier()", at_barrier) if rank == odd else ("all_reduce(float32[4])", at_all_reduce)
        assert last == {"seq": seq, "call": call, "site": f"rank_divergent.py:{at}", "state": "in progress"}, last
        assert world["history"][0]["site"] == f"rank_divergent.py:{line['warm-up']}", world
        assert "MainThread" in {t["name"] for t in record["threads"]}, record


# ---- the phrases, without MPI ---------------------------------------------------------------
def entries(*calls, state="done"):
    """History entries numbered from 1 for ``(call, site)`` pairs, the last one ``state``."""
    return [(i, call, site, state if i == len(calls) else "done") for i, (call, site) in enumerate(calls, 1)]


AR, BAR = ("all_reduce(float32[4])", "train.py:88"), ("barrier()", "train.py:95")


def test_the_odd_rank_leads():
    """The rank whose call differs comes first, then the ranks that agree."""
    histories = {r: entries(AR, AR, state="in progress") for r in (0, 1, 3)}
    histories[2] = entries(AR, BAR, state="in progress")
    reports = {r: (h, "at train.py:1 in main") for r, h in histories.items()}
    assert forensics.positions(reports) == ("rank 2 is in barrier() #2 from train.py:95; ranks 0, 1, 3 are in "
                                            "all_reduce(float32[4]) #2 from train.py:88")
    assert forensics.first_difference(histories) == (2, "#2: rank 2 called barrier() from train.py:95; ranks 0, 1, 3 "
                                                         "called all_reduce(float32[4]) from train.py:88")


def test_a_rank_outside_collectives_and_one_behind():
    """A rank past its last collective is shown with where its main thread is; histories
    that agree where they overlap have no first difference."""
    reports = {0: (entries(AR, AR, state="in progress"), "at train.py:1 in main"),
               1: (entries(AR), "at train.py:70 in load_batch"), 2: ([], "at train.py:5 in <module>")}
    assert forensics.positions(reports) == (
        "rank 0 is in all_reduce(float32[4]) #2 from train.py:88; rank 1 is past all_reduce(float32[4]) #1 from "
        "train.py:88, in no collective of this group (now at train.py:70 in load_batch); rank 2 is at no "
        "collective of this group yet (now at train.py:5 in <module>)")
    assert forensics.first_difference({r: h for r, (h, _) in reports.items()}) is None


def test_same_call_from_other_sites_is_no_difference():
    """Ranks may make the same call from different lines (rank 0's branch and the others'):
    only the calls are compared; the sites are shown where the calls differ."""
    assert forensics.first_difference({0: entries(AR), 1: entries(("all_reduce(float32[4])", "train.py:90"))}) is None
    other = {0: entries(AR, AR), 1: entries(("all_reduce(float32[4])", "train.py:90"), BAR)}
    assert forensics.first_difference(other)[0] == 2


def _site_and_line():
    """The call site of this function's caller, and the line it calls from (read from its frame)."""
    return forensics.call_site(2), sys._getframe(1).f_lineno


def test_call_site_is_the_callers_line():
    """A call site is the innermost frame outside dtrain, resolved to file:line only when shown."""
    site, line = _site_and_line()
    assert forensics.site_text(site) == f"test_hang_forensics.py:{line}"
    assert forensics.site_text(site, full=True) == f"{os.path.abspath(__file__)}:{line}"
    assert forensics.site_text(None) == "?"


def _group_with_history(calls):
    """A stand-in group whose history holds ``calls`` all_reduces, called from this file."""
    group = SimpleNamespace(gid=0, ranks=[0, 1], seq=calls, history=forensics.new_history(), watchdog=None)
    site, line = _site_and_line()
    for seq in range(1, calls + 1):
        op = Op(group, "all_reduce", [np.zeros(4, np.float32)], seq, False)
        op.site = site
        group.history.append(op)
    return group, line


def test_dump_writes_whole_parseable_files(tmp_path):
    """A rank's dump: its threads' stacks as text, its groups' last 32 collectives (the ring
    drops older ones) and the stacks again as JSON; no draft left behind."""
    group, line = _group_with_history(40)
    running = {group.history[-1]}
    stacks, history = forensics.dump(str(tmp_path / "hang"), 3, "a test", [group], running)
    assert sorted(os.listdir(tmp_path / "hang")) == ["rank3.history.json", "rank3.stacks.txt"]
    with open(stacks) as f:
        text = f.read()
    assert text.startswith(f"rank 3 (pid {os.getpid()} on ") and "a test" in text and "Thread MainThread" in text
    with open(history) as f:
        record = json.load(f)
    (entry,) = record["groups"]
    assert entry["calls"] == 40 and [e["seq"] for e in entry["history"]] == list(range(9, 41)), entry
    assert entry["history"][-1] == {"seq": 40, "call": "all_reduce(float32[4])",
                                    "site": f"test_hang_forensics.py:{line}", "state": "in progress"}
    assert {e["state"] for e in entry["history"][:-1]} == {"done"}
    assert any(frame["function"] == "test_dump_writes_whole_parseable_files" for t in record["threads"]
               for frame in t["stack"])


def test_unwritable_run_dir_is_named_in_the_report(tmp_path, monkeypatch):
    """When the hang files cannot be written, the report says so, naming the folder and the error."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(forensics.RUN_DIR_ENV, str(blocker))
    dog = Watchdog.__new__(Watchdog)  # no thread, no communicator: only what dump needs
    dog.ctl, dog.job, dog.dumped, dog.dump_lock = SimpleNamespace(Get_rank=lambda: 1), "job", None, threading.Lock()
    dog.groups, dog.ops = {}, set()
    dog.dump("a test")
    assert dog.dumped.startswith(f"this rank's stacks and history could not be written to {blocker}/dtrain-hang-job: ")


def test_where_now_names_a_collective_of_another_group():
    """A rank's main thread in a collective of any group is shown as that collective (the rank
    waits there, not in the stuck group's); otherwise as its innermost frame outside dtrain."""
    group, line = _group_with_history(3)
    op = group.history[-1]
    op.thread = threading.get_ident()  # the tests run on the main thread
    assert forensics.where_now({op}) == (f"in all_reduce(float32[4]) (collective #3 on ranks [0, 1]) from "
                                         f"test_hang_forensics.py:{line}")
    name = sys._getframe().f_code.co_name
    here = sys._getframe().f_lineno + 1
    assert forensics.where_now(set()) == f"at test_hang_forensics.py:{here} in {name}"
