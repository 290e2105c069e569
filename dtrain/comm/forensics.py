"""Hang forensics: each group's last collectives with their call sites, every rank's stacks
written to the run directory on a timeout, and the sentence that names the rank whose
history diverges.

Every numbered collective of an MPI group goes into the group's ring of its last
``HISTORY`` (32) calls: number, operation, shape, dtype and the call site, the user's
``file:line`` outside dtrain (the first frame, walking out from the call, whose file is
not in the dtrain package; dtrain's own examples count as the user's). The walk costs about
0.1 us per frame (a cached look-up per file name) and the line is resolved only when a
report is written: a site is kept as ``(code object, instruction offset)``, not as the frame,
which would keep the caller's locals alive and whose line moves on as it runs.

On a timeout (see :mod:`.watchdog`) every rank writes, once, two files into
:func:`run_dir`:

* ``rank<N>.stacks.txt``: the Python stack of each of its threads;
* ``rank<N>.history.json``: ``{"rank", "pid", "host", "reason", "groups": [{"gid",
  "ranks", "calls", "history": [{"seq", "call", "site", "state"}]}], "threads": [{"name",
  "stack": [{"file", "line", "function"}]}]}`` (state: "in progress", "done" or "queued").

The folder is ``$DTRAIN_RUN_DIR/dtrain-hang-<job>`` (``DTRAIN_RUN_DIR`` defaults to the
system's temporary folder), ``<job>`` being rank 0's start time and pid, agreed by every rank
when the world group is made. The histories travel to the reporting rank over the
watchdog's private communicator, not through the files: the report is complete without a
shared filesystem, where each node's folder holds the files of its own ranks.
"""
import collections
import json
import os
import socket
import sys
import tempfile
import threading
import time
import traceback

HISTORY = 32  # collectives kept per group
RUN_DIR_ENV = "DTRAIN_RUN_DIR"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_EXAMPLES = os.path.join(_PACKAGE, "examples") + os.sep  # the built-in jobs are the user's scripts
# file name -> whether it is dtrain's own. Keyed by the name, not the code object: a str keeps its
# hash, a code object computes its own from its bytecode and constants at every look-up (tens of
# us for a large function: measured on DDP's hooks)
_inside = {}


def new_history():
    """An empty ring of a group's last HISTORY collectives."""
    return collections.deque(maxlen=HISTORY)


def _is_dtrain(code):
    inside = _inside.get(code.co_filename)
    if inside is None:
        path = os.path.abspath(code.co_filename)
        inside = _inside[code.co_filename] = path.startswith(_PACKAGE) and not path.startswith(_EXAMPLES)
    return inside


def call_site(depth=2):
    """``(code, instruction offset)`` of the innermost frame outside dtrain, looking from the
    frame ``depth`` levels above this function outward (1: its caller); None if there is none."""
    frame, known = sys._getframe(depth), _inside
    while frame is not None:
        code = frame.f_code
        inside = known.get(code.co_filename)  # the cache inline: this runs on every collective
        if inside is None:
            inside = _is_dtrain(code)
        if not inside:
            return code, frame.f_lasti
        frame = frame.f_back
    return None


def _line(code, offset):
    line = code.co_firstlineno
    for start, end, number in code.co_lines():
        if start <= offset < end and number is not None:
            return number
    return line


def site_text(site, full=False):
    """``train.py:88`` (``full``: the whole path) for a :func:`call_site`; "?" for None."""
    if site is None:
        return "?"
    code, offset = site
    return f"{code.co_filename if full else os.path.basename(code.co_filename)}:{_line(code, offset)}"


def run_dir(job):
    """The folder of this job's hang files (see the module docstring)."""
    return os.path.join(os.environ.get(RUN_DIR_ENV) or tempfile.gettempdir(), f"dtrain-hang-{job}")


def job_id():
    """A name for this job's run (called on rank 0, then shared): its start time and pid."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def entry(op, running):
    """One history entry as plain data: ``(seq, call, site, state)``; ``running``: the ops in flight."""
    state = "in progress" if op in running else "queued" if op.start is None and op.async_op else "done"
    return op.seq, str(op), site_text(op.site), state


def where_now(running=()):
    """Where the main thread is: in a collective among ``running`` (the ops in flight, any
    group: ``in barrier() (collective #5 on ranks [0, 1, 2]) from train.py:40``), else at its
    innermost frame outside dtrain (``at train.py:55 in main``)."""
    main = threading.main_thread().ident
    for op in list(running):
        if op.thread == main and op.seq is not None:
            return f"in {op.where()} from {site_text(op.site)}"
    frame = sys._current_frames().get(main)
    while frame is not None and _is_dtrain(frame.f_code):
        frame = frame.f_back
    if frame is None:
        return "at ?"
    return f"at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"


def dump(folder, rank, reason, groups, running):
    """Write this rank's stacks and collective histories into ``folder`` (see the module
    docstring); returns the two paths. ``groups``: the live groups, with ``gid``, ``ranks``,
    ``seq`` and ``history``."""
    os.makedirs(folder, exist_ok=True)
    threads = {t.ident: t.name for t in threading.enumerate()}
    stacks = []
    text = [f"rank {rank} (pid {os.getpid()} on {socket.gethostname()}): {reason}\n"]
    for ident, frame in sys._current_frames().items():
        name = threads.get(ident, f"thread {ident}")
        summary = traceback.extract_stack(frame)
        stacks.append({"name": name, "stack": [{"file": f.filename, "line": f.lineno, "function": f.name}
                                               for f in summary]})
        text.append(f"\nThread {name} ({ident}), most recent call last:\n{''.join(summary.format())}")
    record = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "reason": reason,
              "groups": [{"gid": repr(g.gid), "ranks": list(g.ranks), "calls": g.seq,
                          "history": [dict(zip(("seq", "call", "site", "state"), entry(op, running)))
                                      for op in list(getattr(g, "history", ()))]} for g in groups],
              "threads": stacks}
    paths = [os.path.join(folder, f"rank{rank}.{kind}") for kind in ("stacks.txt", "history.json")]
    for path, content in zip(paths, ("".join(text), json.dumps(record, indent=1))):
        draft = f"{path}.{os.getpid()}"
        with open(draft, "w") as f:
            f.write(content)
        os.replace(draft, path)  # a reader never sees half a file
    return paths


# ---- the report ---------------------------------------------------------------------------
def _ranks(ranks):
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def _sides(by_key, phrase):
    """``rank 2 <phrase>; ranks 0, 1, 3 <phrase>``: fewest ranks first (the odd one out leads)."""
    groups = sorted(by_key.items(), key=lambda kv: (len(kv[1]), kv[1]))
    return "; ".join(f"{_ranks(ranks)} {phrase(key, len(ranks) == 1)}" for key, ranks in groups)


def positions(reports):
    """Where each rank is, as one phrase: ``rank 2 is in barrier() #41 from train.py:95;
    ranks 0, 1, 3 are in all_reduce(float32[4]) #41 from train.py:88``.

    Args:
        reports: ``{global rank: (history entries (seq, call, site, state), where now)}``.
    """
    by_key = {}
    for rank, (history, now) in sorted(reports.items()):
        if not history:
            key = (None, None, None, "none", now)
        else:
            seq, call, site, state = history[-1]
            key = (seq, call, site, state, None if state == "in progress" else now)
        by_key.setdefault(key, []).append(rank)

    def phrase(key, one):
        seq, call, site, state, now = key
        verb = "is" if one else "are"
        if state == "none":
            return f"{verb} at no collective of this group yet (now {now})"
        if state == "in progress":
            return f"{verb} in {call} #{seq} from {site}"
        if state == "queued":
            return f"{verb} waiting to start {call} #{seq} from {site} (async; now {now})"
        return f"{verb} past {call} #{seq} from {site}, in no collective of this group (now {now})"
    return _sides(by_key, phrase)


def first_difference(histories):
    """The first call number at which the ranks' histories name different calls, and the
    phrase for it (``#41: rank 2 called barrier() from train.py:95; ranks 0, 1, 3 called
    all_reduce(float32[4]) from train.py:88``), or None if they agree where they overlap.

    Args:
        histories: ``{global rank: history entries (seq, call, site, state)}``.
    """
    calls = {rank: {seq: (call, site) for seq, call, site, _ in history} for rank, history in histories.items()}
    common = set.intersection(*(set(c) for c in calls.values())) if calls else set()
    for seq in sorted(common):
        by_call = {}
        for rank in sorted(calls):
            by_call.setdefault(calls[rank][seq][0], []).append(rank)
        if len(by_call) > 1:
            sites = {rank: calls[rank][seq][1] for rank in calls}
            keyed = {}
            for call, ranks in by_call.items():
                for site in sorted({sites[r] for r in ranks}):
                    keyed[(call, site)] = [r for r in ranks if sites[r] == site]
            text = _sides(keyed, lambda key, one: f"called {key[0]} from {key[1]}")
            return seq, f"#{seq}: {text}"
    return None
