"""Chrome-trace files of the phase timer's events (``DTRAIN_TRACE=dir``), one per rank, and
their merge into one timeline that Perfetto (https://ui.perfetto.dev) and chrome://tracing open.

Each rank writes ``dir/rank<R>.json`` when its process exits: a ``{"traceEvents": [...]}``
object of complete events (``"ph": "X"``, ``ts`` and ``dur`` in microseconds) for its spans
(data-wait, forward, backward, comm-wait, optimizer) on its main thread's track (``tid`` 0)
and for every collective its comm threads ran (each DDP bucket's all-reduce) on their own
tracks, plus metadata events (``"ph": "M"``) naming the process ``rank R`` and the threads.
``pid`` is the rank, so the merged file has one process track per rank.

Merging: ``python -m dtrain.launch --nproc N`` merges the ranks' files into ``dir/trace.json``
when the job ends; under another process manager run
``python -m dtrain.timing merge dir``. Timestamps are wall-clock microseconds
(``time.time()`` anchored once per process to ``perf_counter``), shifted at the merge so the
job starts at 0: exact between the ranks of one node, as good as the clocks' agreement
(NTP) across nodes.
"""
import atexit
import glob
import json
import os
import sys
import time

from . import phases

ANCHOR = (time.time(), time.perf_counter())  # one (wall, perf_counter) pair: perf_counter -> wall clock
MERGED = "trace.json"
_rank = [0]
_pid = os.getpid()  # a forked child (os.fork) inherits the events but must not write over its parent's file


def set_rank(rank):
    """The rank this process's trace file is named after (comm's init_process_group tells it)."""
    _rank[0] = int(rank)


def _us(t):
    return (ANCHOR[0] + t - ANCHOR[1]) * 1e6


def rank_trace(rank=None):
    """This process's events as a Chrome-trace object (``pid`` = ``rank``, default: set_rank's)."""
    rank = _rank[0] if rank is None else rank
    tids = {phases._main: 0}
    for _, thread, _, _ in phases.events or ():
        tids.setdefault(thread, len(tids))
    out = [{"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "ts": 0, "args": {"name": f"rank {rank}"}},
           {"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0, "ts": 0, "args": {"sort_index": rank}}]
    out += [{"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "ts": 0,
             "args": {"name": phases.thread_names.get(thread, f"thread {tid}")}} for thread, tid in tids.items()]
    out += [{"ph": "X", "name": name, "cat": "phase" if thread == phases._main else "comm", "pid": rank,
             "tid": tids[thread], "ts": round(_us(start), 3), "dur": round((end - start) * 1e6, 3)}
            for name, thread, start, end in list(phases.events or ())]
    return {"traceEvents": out, "displayTimeUnit": "ms", "otherData": {"rank": rank, "dropped": phases.dropped[0]}}


def write_rank(directory, rank=None):
    """Write this process's trace to ``directory/rank<R>.json`` (atomically); returns the path."""
    trace = rank_trace(rank)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"rank{trace['otherData']['rank']}.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(trace, f)
    os.replace(tmp, path)
    return path


def merge(directory, since=None):
    """Merge the ranks' files of ``directory`` into ``directory/trace.json``: one process
    track per rank, times shifted so the earliest event is at 0. Returns the path.

    Args:
        since: only files written at or after this ``time.time()`` (the launcher passes its
            start, so files an earlier, larger job left there are not merged).

    Raises:
        FileNotFoundError: no ``rank<R>.json`` in ``directory`` (newer than ``since``).
    """
    paths = sorted(glob.glob(os.path.join(directory, "rank*.json")))
    if since is not None:
        paths = [p for p in paths if os.path.getmtime(p) >= since]
    if not paths:
        raise FileNotFoundError(f"no rank<R>.json trace files in {directory!r}"
                                f"{' written by this job' if since is not None else ''}: run the job with "
                                f"DTRAIN_TRACE={directory}")
    events = []
    for p in paths:
        with open(p) as f:
            events += json.load(f)["traceEvents"]
    timed = [e["ts"] for e in events if e["ph"] == "X"]
    origin = min(timed) if timed else 0
    for e in events:
        if e["ph"] == "X":
            e["ts"] = round(e["ts"] - origin, 3)
    out = os.path.join(directory, MERGED)
    with open(out, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    return out


def _write_at_exit():
    if not phases.events or os.getpid() != _pid:  # the launcher and its supervisors time nothing: they must
        return                                       # not overwrite rank 0's file; nor may a forked child its parent's
    try:
        write_rank(os.environ[phases.TRACE_ENV])
    except OSError as e:  # the job's result matters more than its trace
        print(f"dtrain: could not write the trace to {os.environ[phases.TRACE_ENV]!r}: {e}", file=sys.stderr)


if phases.events is not None:
    atexit.register(_write_at_exit)

