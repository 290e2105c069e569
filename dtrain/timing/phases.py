"""The phase timer: where each rank's time goes (waiting for data, forward, backward,
waiting for communication, the optimizer step), recorded by one-line spans in the layers
that do the work.

Always on, and cheap: a span is two ``perf_counter`` reads, a list append and pop and a float
add (its objects are made once, at import). Time is charged *exclusively* to the innermost
open phase, so the wait for the last buckets at the end of ``backward()`` counts as
``comm-wait``, not ``backward``: a rank that waits for a slow peer shows more ``comm-wait``,
not a slower backward, and the slow peer is the one whose own phase grew
(:mod:`dtrain.parallel.stragglers`).

Only the main thread is timed: the comm threads, DataLoader workers and DataParallel replicas
run while the main thread waits, and their time would count twice. With ``DTRAIN_TRACE=dir``
every span, and every task of a comm thread (:func:`traced`), is also kept as a trace event
(:mod:`dtrain.timing.trace` writes them out).

Example:
    >>> from dtrain.timing import phase, totals
    >>> with phase("forward"):
    ...     out = model(x)
    >>> totals()["forward"]   # seconds in forward, this process, so far
"""
import os
import threading
import time

PHASES = ("data-wait", "forward", "backward", "comm-wait", "optimizer")
TRACE_ENV = "DTRAIN_TRACE"
MAX_EVENTS = 2_000_000  # per process: past it the trace stops growing (and says so)

_now = time.perf_counter
_ident = threading.get_ident
_main = threading.main_thread().ident
_totals = [0.0] * len(PHASES)  # seconds charged to each phase (exclusive), main thread only
_open = []  # the main thread's open spans, innermost last: [phase index, name, start]
_mark = [0.0]  # when time was last charged (a transition between spans)
events = [] if os.environ.get(TRACE_ENV) else None  # (name, thread id, start, end) when tracing
thread_names = {_main: "main"}  # thread id -> its name, for the threads that left events
dropped = [0]  # events past MAX_EVENTS, not kept


class _Span:
    """A context manager charging the time inside it to one phase; made once per phase (and
    name), reentrant: the start times live in ``_open``, not here."""
    __slots__ = ("index", "name")

    def __init__(self, index, name):
        self.index, self.name = index, name

    def __enter__(self):
        if _ident() != _main:
            return self
        t = _now()
        if _open:
            _totals[_open[-1][0]] += t - _mark[0]
        _mark[0] = t
        _open.append((self.index, self.name, t))
        return self

    def __exit__(self, *exc):
        if _ident() != _main or not _open:
            return False
        t = _now()
        index, name, start = _open.pop()
        _totals[index] += t - _mark[0]
        _mark[0] = t
        if events is not None:
            _keep(name, _main, start, t)
        return False


_SPANS = {name: _Span(i, name) for i, name in enumerate(PHASES)}


def phase(name):
    """The context manager timing phase ``name`` (one of :data:`PHASES`).

    Raises:
        ValueError: an unknown phase (the known ones are listed).
    """
    try:
        return _SPANS[name]
    except KeyError:
        raise ValueError(f"unknown phase {name!r}: the phases are {', '.join(PHASES)}") from None


def totals():
    """Seconds each phase has taken on this process's main thread so far, by phase name."""
    return dict(zip(PHASES, _totals))


def totals_list():
    """:func:`totals` as a list in :data:`PHASES`' order (a fresh copy: no dict made)."""
    return list(_totals)


def span_seconds(span=None, n=20_000, rounds=5):
    """What ``with span: pass`` costs on this machine, in seconds: the best of ``rounds``
    rounds of ``n`` (default span: a phase's, as timed on the main thread)."""
    span = _SPANS["forward"] if span is None else span
    best = float("inf")
    for _ in range(rounds):
        t = _now()
        for _ in range(n):
            with span:
                pass
        best = min(best, (_now() - t) / n)
    return best


class _Traced:
    __slots__ = ("name", "start")

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.start = _now()
        return self

    def __exit__(self, *exc):
        end, thread = _now(), _ident()
        if thread not in thread_names:  # named now: the thread may be gone when the trace is written
            thread_names[thread] = threading.current_thread().name
        _keep(self.name, thread, self.start, end)
        return False


class _Untraced:
    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_UNTRACED = _Untraced()


def traced(name):
    """A context manager keeping what runs inside it as one trace event named ``name`` on the
    calling thread's track (with ``DTRAIN_TRACE``; otherwise it does nothing). For threads
    whose time is not a phase of the step: the comm threads' collectives."""
    return _UNTRACED if events is None else _Traced(name)


_label = [None]  # what the main thread is submitting work for (see labelled)


class _Labelled:
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __enter__(self):
        _label[0] = self.text
        return self

    def __exit__(self, *exc):
        _label[0] = None
        return False


def labelled(text):
    """A context manager naming, in the trace, the comm-thread work submitted inside it
    (DDP: ``with labelled(f"bucket {i}")`` around a bucket's launch): see :func:`trace_name`.
    Nothing is made when tracing is off."""
    return _UNTRACED if events is None else _Labelled(text)


def trace_name(name):
    """The trace's name for work ``name`` submitted now: ``name`` and the current label."""
    return name if _label[0] is None else f"{name} ({_label[0]})"


def _keep(name, thread, start, end):
    if len(events) < MAX_EVENTS:
        events.append((name, thread, start, end))  # list.append is atomic under the GIL
    else:
        dropped[0] += 1
