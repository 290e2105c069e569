"""The timing forensics (issue 15): the phase timer (dtrain.timing), the straggler report of
DDP (dtrain.parallel.stragglers) and the Chrome trace of DTRAIN_TRACE, each checked by
planting what it must find: a rank whose DataLoader sleeps is named, and the merged trace
validates against the Chrome trace event format with one process track per rank."""
import json
import os
import threading
import time

import pytest

from comm_helpers import clean_env, output, python, require_mpi
from dtrain import timing
from dtrain.parallel import stragglers
from dtrain.timing import phases, trace

STEPS, EVERY = 30, 10


# ---- the Chrome trace event format: the fields each phase type needs ----------------------
REQUIRED = {"X": ("name", "ts", "dur", "pid", "tid"), "B": ("name", "ts", "pid", "tid"), "E": ("ts", "pid", "tid"),
            "M": ("name", "pid", "args")}
METADATA = {"process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index"}


def chrome_trace_problems(trace_object):
    """What makes ``trace_object`` not a Chrome trace (the JSON Object Format): a list of
    messages, empty when it is one. Checks the top level, each event's phase type and the
    fields it needs with their types, metadata names, and that B/E events pair up per thread."""
    if not isinstance(trace_object, dict) or not isinstance(trace_object.get("traceEvents"), list):
        return ["not an object with a traceEvents list"]
    problems, open_ = [], {}
    for i, e in enumerate(trace_object["traceEvents"]):
        ph = e.get("ph")
        if ph not in REQUIRED:
            problems.append(f"event {i}: ph {ph!r} is none of {sorted(REQUIRED)}")
            continue
        problems += [f"event {i} ({ph}): no {f!r}" for f in REQUIRED[ph] if f not in e]
        for f in ("ts", "dur"):
            if f in e and (not isinstance(e[f], (int, float)) or e[f] < 0):
                problems.append(f"event {i}: {f} {e[f]!r} is not a number >= 0")
        for f in ("pid", "tid"):
            if f in e and not isinstance(e[f], int):
                problems.append(f"event {i}: {f} {e[f]!r} is not an integer")
        if "name" in e and not isinstance(e["name"], str):
            problems.append(f"event {i}: name {e['name']!r} is not a string")
        if ph == "M" and (e.get("name") not in METADATA or not isinstance(e.get("args"), dict)):
            problems.append(f"event {i}: metadata {e.get('name')!r} with args {e.get('args')!r}")
        if ph == "B":
            open_.setdefault((e.get("pid"), e.get("tid")), []).append(e)
        if ph == "E" and not open_.get((e.get("pid"), e.get("tid"))):
            problems.append(f"event {i}: E without a B on its thread")
        elif ph == "E":
            open_[(e["pid"], e["tid"])].pop()
    problems += [f"B event {e['name']!r} never ended" for stack in open_.values() for e in stack]
    return problems


def test_validator_rejects_what_is_no_chrome_trace():
    """The validator itself fails events missing a field, unknown phase types, negative
    durations, unpaired B/E and unknown metadata (so the trace test below can fail)."""
    good = {"traceEvents": [{"ph": "X", "name": "a", "ts": 1.5, "dur": 2, "pid": 0, "tid": 0},
                            {"ph": "B", "name": "b", "ts": 1, "pid": 0, "tid": 1},
                            {"ph": "E", "ts": 2, "pid": 0, "tid": 1},
                            {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "rank 0"}}]}
    assert chrome_trace_problems(good) == []
    bad = {"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "pid": 0, "tid": 0},
                           {"ph": "Q", "name": "a"},
                           {"ph": "X", "name": "a", "ts": 1, "dur": -1, "pid": 0, "tid": 0},
                           {"ph": "B", "name": "b", "ts": 1, "pid": 0, "tid": 1},
                           {"ph": "E", "ts": 1, "pid": 0, "tid": 2},
                           {"ph": "M", "name": "colour", "pid": 0, "args": {}}]}
    assert len(chrome_trace_problems(bad)) == 6, chrome_trace_problems(bad)
    assert chrome_trace_problems([]) == ["not an object with a traceEvents list"]


# ---- the phase timer, in this process ------------------------------------------------------
def test_phases_are_exclusive_and_nest():
    """Time inside a nested span is charged to it alone: backward around a comm-wait is
    charged the backward part only; the same phase nested in itself counts once."""
    before = timing.totals()
    with timing.phase("backward"):
        time.sleep(0.02)
        with timing.phase("comm-wait"):
            time.sleep(0.05)
        with timing.phase("backward"):
            time.sleep(0.02)
    after = timing.totals()
    backward = after["backward"] - before["backward"]
    wait = after["comm-wait"] - before["comm-wait"]
    assert 0.04 <= backward < 0.065 and 0.05 <= wait < 0.075, (backward, wait)


def test_other_threads_are_not_timed():
    """A span on another thread (a comm thread, a loader worker) charges nothing: its time
    overlaps the main thread's."""
    before = timing.totals()["forward"]
    worker = threading.Thread(target=lambda: timing.phase("forward").__enter__() and time.sleep(0.02))
    worker.start()
    worker.join()
    assert timing.totals()["forward"] == before


def test_unknown_phase_names_the_phases():
    with pytest.raises(ValueError, match="unknown phase 'io': the phases are data-wait, forward, backward, "
                                         "comm-wait, optimizer"):
        timing.phase("io")


def test_span_costs_about_a_microsecond():
    """The always-on timer is cheap: an empty span under 10 us even on a loaded machine (about
    0.6 us unloaded; 3 us at a load average of 19 on 2 cores)."""
    best = timing.span_seconds()
    assert best < 1e-5, f"{best * 1e6:.2f} us per span"


def test_traced_records_on_the_calling_threads_track(monkeypatch, tmp_path):
    """With tracing on, a traced() block on another thread becomes an X event on its own tid,
    named after the thread; write_rank names the file after the rank."""
    monkeypatch.setattr(phases, "events", [])
    monkeypatch.setattr(phases, "thread_names", {phases._main: "main"})

    def comm():
        with timing.traced("all_reduce"):
            time.sleep(0.01)
    worker = threading.Thread(target=comm, name="dtrain-comm-test")
    worker.start()
    worker.join()
    with timing.phase("optimizer"):
        pass
    path = timing.write_rank(str(tmp_path), rank=3)
    assert os.path.basename(path) == "rank3.json"
    with open(path) as f:
        written = json.load(f)
    assert chrome_trace_problems(written) == []
    spans = {e["name"]: e for e in written["traceEvents"] if e["ph"] == "X"}
    assert spans["optimizer"]["tid"] == 0 and spans["all_reduce"]["tid"] == 1
    assert spans["all_reduce"]["dur"] >= 1e4 and {e["pid"] for e in written["traceEvents"]} == {3}
    names = {e["tid"]: e["args"]["name"] for e in written["traceEvents"] if e["name"] == "thread_name"}
    assert names == {0: "main", 1: "dtrain-comm-test"}


def test_merge_command_makes_one_track_per_rank(monkeypatch, tmp_path):
    """``python -m dtrain.timing merge DIR`` (the merge under another process manager) joins
    the ranks' files: a process per rank, times from 0, a Chrome trace."""
    monkeypatch.setattr(phases, "events", [])
    for rank in (0, 1):
        with timing.phase("backward"):
            time.sleep(0.001)
        timing.write_rank(str(tmp_path), rank=rank)
    result = python("-m", "dtrain.timing", "merge", str(tmp_path))
    merged = os.path.join(str(tmp_path), "trace.json")
    assert result.returncode == 0 and result.stdout.startswith(merged), output(result)
    with open(merged) as f:
        merged = json.load(f)
    assert chrome_trace_problems(merged) == []
    spans = [e for e in merged["traceEvents"] if e["ph"] == "X"]
    assert sorted(e["pid"] for e in spans) == [0, 1, 1] and min(e["ts"] for e in spans) == 0


def test_merge_without_files_says_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no rank<R>.json trace files in '{tmp_path}': run the job with "
                                                f"DTRAIN_TRACE={tmp_path}"):
        trace.merge(str(tmp_path))
    result = python("-m", "dtrain.timing", "merge", str(tmp_path))
    assert result.returncode == 1 and "no rank<R>.json trace files" in result.stderr, output(result)
    result = python("-m", "dtrain.timing", "combine", str(tmp_path))
    assert result.returncode == 2 and "usage: python -m dtrain.timing merge DIR" in result.stderr, output(result)


# ---- the straggler rule ---------------------------------------------------------------------
def row(data=0.0, forward=1.0, backward=2.0, comm=0.5, optimizer=0.2, wall=4.0):
    return [data, forward, backward, comm, optimizer, wall]


def test_a_slow_phase_is_named_with_its_rank():
    """At 4 ranks, the one whose data-wait is 75% above the others' median is found; the
    ranks that waited for it (more comm-wait) are not blamed."""
    table = [row(data=0.4, comm=0.3), row(data=0.7, comm=0.0), row(data=0.4, comm=0.3), row(data=0.4, comm=0.3)]
    assert stragglers.find_stragglers(table, steps=10) == [(1, "data-wait", pytest.approx(0.07), pytest.approx(0.04))]
    line = stragglers.describe(1, "data-wait", 0.06, 0.04, 200)
    assert line == "rank 1: +50% data-wait over the last 200 steps (60.0 ms/step; the other ranks' median 40.0 ms/step)"


def test_small_or_close_differences_are_not_stragglers():
    """Below SLOWER (20%) relative, or below SHARE (5%) of the step in absolute terms, is noise."""
    assert stragglers.find_stragglers([row(forward=1.0), row(forward=1.15)], steps=10) == []  # 15%
    assert stragglers.find_stragglers([row(optimizer=0.01), row(optimizer=0.1)], steps=10) == []  # 2% of the step
    assert stragglers.find_stragglers([row(comm=0.0), row(comm=3.0)], steps=10) == []  # waiting is no fault


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("DTRAIN_STRAGGLER_STEPS", "0")
    assert stragglers.straggler_interval() == 0
    monkeypatch.setenv("DTRAIN_STRAGGLER_STEPS", "ten")
    with pytest.raises(ValueError,
                       match=r"DTRAIN_STRAGGLER_STEPS='ten' must be a whole number >= 0: steps between straggler checks"):
        stragglers.straggler_interval()


# ---- planted in a 2-rank DDP job ----------------------------------------------------------
@pytest.fixture(scope="module")
def slow_data_job(tmp_path_factory):
    """tests/timing_job.py under ``dtrain.launch --nproc 2``: 30 steps, rank 1's collate_fn
    sleeps 50 ms, stragglers gathered every 10 steps, traced."""
    require_mpi()
    trace_dir = str(tmp_path_factory.mktemp("trace"))
    env = clean_env(DTRAIN_TRACE=trace_dir, DTRAIN_STRAGGLER_STEPS=str(EVERY), SLOW_RANK="1", SLOW_DATA_S="0.05")
    result = python("-m", "dtrain.launch", "--nproc", "2", os.path.join("tests", "timing_job.py"), str(STEPS),
                    timeout=120, env=env)
    assert result.returncode == 0, output(result)
    return result, trace_dir


def test_a_rank_slowed_in_its_data_loader_is_named(slow_data_job):
    """Every window names rank 1's data-wait (about 50 ms a step against ~0 on rank 0)."""
    result, _ = slow_data_job
    named = [line for line in result.stderr.splitlines()
             if line.startswith("rank 1: +") and f"data-wait over the last {EVERY} steps" in line]
    assert len(named) == STEPS // EVERY, output(result)
    assert not any(line.startswith("rank 0: ") and "data-wait" in line for line in result.stderr.splitlines())


def test_the_merged_trace_is_a_chrome_trace_with_a_track_per_rank(slow_data_job):
    """DTRAIN_TRACE: each rank's file and the launcher's merge validate; the merge has one
    process (named "rank R") per rank, each with every phase on its main thread and each
    bucket's all-reduce (named with its bucket) on its comm thread's own track, in order:
    backward starts before the bucket's all-reduce, which ends before the step's optimizer."""
    result, trace_dir = slow_data_job
    assert sorted(os.listdir(trace_dir)) == ["rank0.json", "rank1.json", "trace.json"], output(result)
    assert f"trace: {os.path.join(trace_dir, 'trace.json')}" in result.stderr
    for name in os.listdir(trace_dir):
        with open(os.path.join(trace_dir, name)) as f:
            assert chrome_trace_problems(json.load(f)) == [], name
    with open(os.path.join(trace_dir, "trace.json")) as f:
        events = json.load(f)["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert processes == {0: "rank 0", 1: "rank 1"}
    assert min(e["ts"] for e in events if e["ph"] == "X") == 0
    for rank in (0, 1):
        spans = [e for e in events if e["ph"] == "X" and e["pid"] == rank]
        main = {n: [e for e in spans if e["tid"] == 0 and e["name"] == n] for n in timing.PHASES}
        counts = {n: len(v) for n, v in main.items()}
        assert all(counts[n] == STEPS for n in ("forward", "backward", "optimizer")), counts
        assert len(main["data-wait"]) == STEPS + 1  # the last one ends the loop
        buckets = sorted((e for e in spans if e["tid"] != 0 and e["name"] == "all_reduce_coalesced (bucket 0)"),
                         key=lambda e: e["ts"])
        assert len(buckets) == STEPS and {e["tid"] for e in buckets} == {1}
        for b, o, bucket in zip(main["backward"], main["optimizer"], buckets):
            assert b["ts"] <= bucket["ts"] and bucket["ts"] + bucket["dur"] <= o["ts"] + 1, (b, bucket, o)
