"""Deadlines for MPI collectives, and the answer to "which ranks have not arrived?".

A blocking MPI call cannot be interrupted, and running every collective on the comm thread
so that the caller can wait with a deadline costs a thread hand-off per call, several times
a small all-reduce itself. So collectives run where they always did (inline, or on the comm
thread for ``async_op=True``) and register an :class:`Op` with the process's
:class:`Watchdog`: one small object, a set insert and a clock read per call, a small part
of the cheapest collective (both measured: benchmarks/RESULTS.md, "Measurements moved from
docstrings"). The watchdog thread wakes every ``tick`` (0.1 s); a blocking collective or
send/recv past its deadline ends the job at once through the abort hook, with the stack of
the thread stuck in it; an async one is first reported by ``Work.wait()`` as a
``DistTimeoutError`` in the waiting thread, and the watchdog ends the job ``ASYNC_GRACE``
seconds later even if that error was caught (the communicator is stuck for good; MPI cannot
cancel a collective).

Arrival costs nothing until a timeout: every rank counts the collectives it has called on
each group (program order, the same on every rank). The rank that timed out asks every
peer's watchdog, over a private duplicate of COMM_WORLD, which collective it called last,
and the message names the ranks that have not called this one. A peer that does not answer
within ``QUERY_WAIT`` seconds is reported as dead or stuck; a rank answers its peers' queries
while it asks its own (with 3 or more ranks, the ranks waiting in the same collective time
out and ask at the same moment). Of the ranks waiting in it, the lowest reports: the others
leave the report to it (one per job) and report themselves only if the job has not ended
``DEFER_WAIT`` seconds later.

The report also says where the ranks' calls first differ ("the ranks' calls differ at #3:
rank 2 called barrier() from train.py:95; ranks 0, 1, 3 called all_reduce(float32[4]) from
train.py:88") and where each rank is: the query asks each peer for its group's history (its
last 32 collectives with their call sites, :mod:`.forensics`) and where its main thread is,
and every rank of the job, asked or timed out itself, first writes its stacks and history to
the run folder (once). The history travels in the answer, so the report needs no shared
filesystem.

A rank that leaves the job (exits with code 0, or destroys its group) tells every peer's
watchdog how many collectives it called on each group (:meth:`Watchdog.announce_exit`): a
peer waiting in a later collective of such a group, or calling one, ends the job at once
("rank 1 exited (code 0) while ranks [0] were still in all_reduce (#17 ...)") instead of
waiting out the timeout.

NCCL operations run on a CUDA stream: the host never blocks in them, so their :class:`Op`
carries the CUDA event that marks their end and stays watched until the event has passed
(not until the call returns). While one is in flight the watchdog also asks the NCCL
communicator for an asynchronous error (a dead peer, a network failure). On a timeout or
such an error it first aborts the communicator, so that a host thread blocked on the
stream (``.item()``, ``synchronize()``) returns, then ends the job with the same report.
"""
import itertools
import os
import sys
import threading
import time
import traceback
from typing import NamedTuple

from . import forensics

QUERY, REPLY, LEFT = 7001, 7002, 7003
ASYNC_GRACE = 1.0  # seconds between Work.wait()'s DistTimeoutError and the end of the job
QUERY_WAIT = 1.0
# a rank that sees a lower rank waiting in the same stuck collective leaves the report to it
# (one report per job) and reports itself only if the job has not ended this long after
DEFER_WAIT = 3.0
_group_ids = itertools.count()


def next_group_id():
    """An id for a new group, the same on every rank: groups are created in the same order
    everywhere (new_group is called by every rank, members or not)."""
    return next(_group_ids)


def describe(name, array=None, **args):
    """``all_reduce(float32[4])``, ``barrier()``, ``broadcast(float64[2, 3], src=1)``."""
    parts = [] if array is None else [f"{array.dtype}[{', '.join(map(str, array.shape))}]"]
    parts += [f"{k}={v}" for k, v in args.items() if v is not None]
    return f"{name}({', '.join(parts)})"


class Spec(NamedTuple):
    """What a description needs of an array, without keeping the array alive."""
    dtype: object
    shape: tuple


class Op:
    """One collective a rank has called: group, description, sequence number, timing.

    ``with op:`` marks the time the backend runs it; the watchdog checks the deadline from then.

    Args:
        arrays: the operation's arrays; the last one (the input, for most collectives) is described.
        seq: its number among the group's collectives (None: a send/recv, not numbered).
        label: the description to use instead.
    """
    __slots__ = ("group", "name", "spec", "seq", "label", "async_op", "start", "thread", "event", "backend", "site")

    def __init__(self, group, name, arrays, seq, async_op, label=None):
        self.group, self.name, self.seq, self.async_op, self.label = group, name, seq, async_op, label
        self.spec = (arrays[-1].dtype, arrays[-1].shape) if arrays else None  # a plain tuple: cheapest
        self.start = self.thread = None
        self.backend = None  # a device operation: its communicator, with abort() and check_async_error()
        self.event = None  # then: the CUDA event that marks its end, once recorded (see watch_device)
        self.site = None  # where the user called it (forensics.call_site), for the group's history

    def watch_device(self, backend):
        """Watch this operation, about to be launched on a CUDA stream with communicator
        ``backend`` (aborted if it times out or fails), until the event set as ``self.event``
        after the launch has passed. Watched from before the launch: a launch may block."""
        self.thread = threading.get_ident()
        self.start = time.monotonic()
        self.backend = backend
        if self.group.watchdog is not None:
            self.group.watchdog.ops.add(self)

    def __str__(self):
        if self.label is not None:
            return self.label
        return describe(self.name, None if self.spec is None else Spec(*self.spec))

    def __enter__(self):
        self.thread = threading.get_ident()
        self.start = time.monotonic()
        if self.group.watchdog is not None:
            self.group.watchdog.ops.add(self)
        return self

    def __exit__(self, *exc):
        if self.group.watchdog is not None:
            self.group.watchdog.ops.discard(self)

    def where(self):
        """``all_reduce(float32[4]) (collective #3 on ranks [0, 1])``: the operation, as reports name it."""
        g = self.group
        return f"{self}" if self.seq is None else f"{self} (collective #{self.seq} on ranks {g.ranks})"

    def timeout_message(self, limit):
        """Why this collective is stuck, as far as the peers' answers tell."""
        g = self.group
        if self.seq is None:  # point to point: not numbered, no arrivals to ask about
            return f"{self} did not finish within {limit:g} s on rank {g.ranks[g.rank()]}"
        text = f"{self.where()} did not finish within {limit:g} s on rank {g.ranks[g.rank()]}"
        if g.watchdog is None:
            return f"{text}; which ranks have not called it is unknown (MPI lacks MPI_THREAD_MULTIPLE)"
        text = f"{text}; {g.watchdog.arrivals(g, self.seq, f'timed out in {self.where()}')}"
        g.watchdog.defer_to_lower(g, g.watchdog.waiting)  # one report per job (blocking and Work.wait() alike)
        return text


class Watchdog:
    """The thread that enforces collective deadlines and answers peers' arrival queries.

    Args:
        ctl: a private duplicate of COMM_WORLD for the queries.
        on_timeout: called with the report (first line + the stuck thread's stack); ends the job.
        tick: seconds between checks.
        job: the job's name, the same on every rank: the folder of the hang files
            (:func:`.forensics.run_dir`).
    """

    def __init__(self, ctl, on_timeout, tick=0.1, job=None):
        self.ctl, self.on_timeout, self.tick, self.job = ctl, on_timeout, tick, job
        self.dumped = None  # the phrase naming this rank's hang files, once written (see dump)
        self.dump_lock = threading.Lock()
        self.groups = {}
        self.ops = set()
        self.fired = False
        self.departed = {}  # global rank -> (how it left, {group id: collectives it had called})
        self.waiting = []  # the ranks found waiting in the collective of the last arrivals() query
        self.sends = []
        self.sends_lock = threading.Lock()  # the watchdog thread and a timed-out Work.wait() both send
        self.serve_lock = threading.Lock()  # ... and both answer queries while they ask (see _ask)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="dtrain-watchdog", daemon=True)
        self.thread.start()

    def stop(self):
        """End the thread and free the query communicator (before MPI_Finalize)."""
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.stopping.set()
            self.thread.join()
        for request in self.sends:
            request.Wait()
        self.ctl.Free()

    # ---- the thread ---------------------------------------------------------------------
    def _loop(self):
        while not self.stopping.wait(self.tick):
            self._serve_quietly()
            now = time.monotonic()
            for op in list(self.ops):
                if op.backend is not None and self._device_done(op):
                    continue
                if self.departed and self._report_departure(op):
                    return
                timeout = op.group.timeout
                if timeout is None or op.start is None:
                    continue
                if now > op.start + timeout + (ASYNC_GRACE if op.async_op else 0):
                    self._expire(op, timeout)
                    return

    def _device_done(self, op):
        """For an operation on a CUDA stream: True (and unwatched) once its event has passed;
        ends the job if its communicator reports an asynchronous error."""
        if op.event is not None and op.event.done:
            self.ops.discard(op)
            return True
        try:
            op.backend.check_async_error()
        except Exception as e:  # NCCL's error for a dead peer, a broken network, an abort
            self.fired = True
            self.ops.clear()
            _abort_quietly(op.backend)
            g = op.group
            self.on_timeout(f"DistBackendError: {op.where()} failed on rank {g.ranks[g.rank()]}: the NCCL "
                            f"communicator reports {type(e).__name__}: {e} (a peer may have died); the "
                            f"communicator was aborted", self._stack(op, "the thread that launched it"))
            return True
        return False

    def _expire(self, op, timeout):
        self.fired = True
        if op.backend is not None:  # abort first: a host sync on the stuck stream then returns
            _abort_quietly(op.backend)
            where = "the thread that launched it on the GPU"
        else:
            where = "the comm thread (async_op=True)" if op.async_op else "this thread"
        self.on_timeout(f"DistTimeoutError: {op.timeout_message(timeout)}", self._stack(op, where))

    def _report_departure(self, op):
        """End the job if a member of ``op``'s group left (exited, or destroyed its group)
        before calling ``op``: the collective can never complete. True if it did."""
        g = op.group
        if op.seq is None or op.start is None:  # point to point; or not started
            return False
        gone = [(r, self.departed[r]) for r in g.ranks if r in self.departed
                and self.departed[r][1].get(g.gid, 0) < op.seq]
        if not gone:
            return False
        self.fired = True
        rank, (how, calls) = gone[0]
        try:
            answers, _ = self._ask(g)
        except Exception:  # e.g. MPI reports another dead peer: report what is known
            answers = {}
        waiting = _waiting(g, answers, op.seq)
        self.defer_to_lower(g, waiting)
        self.on_timeout(f"DistError: {_left_while_waiting(rank, how, waiting, op.seq, g, str(op), calls.get(g.gid, 0))}",
                        self._stack(op, "the thread waiting in it"))
        return True

    def peers_ahead(self):
        """For a rank about to leave: the report of the peers that wait in a collective it
        never called (asked on each of its groups), or None if no peer does."""
        me = self.ctl.Get_rank()
        for g in list(self.groups.values()):
            try:
                answers, _ = self._ask(g)
            except Exception:  # a peer that died or left: it waits in nothing
                continue
            ahead = {r: a for r, a in answers.items() if a is not None and a[0] > g.seq}
            if ahead:
                seq, label = min(a for a in ahead.values())
                waiting = sorted(r for r, a in ahead.items() if a[0] == seq)
                return _left_while_waiting(me, "exited (code 0)", waiting, seq, g, label, g.seq)
        return None

    def defer_to_lower(self, group, waiting):
        """If a lower rank than this one waits in the same collective, it reports: answer
        queries and wait (the job ends meanwhile), reporting here only after DEFER_WAIT s."""
        me = group.ranks[group.rank()]
        if not waiting or min(waiting) >= me:
            return
        deadline = time.monotonic() + DEFER_WAIT
        while time.monotonic() < deadline:
            self._serve_quietly()
            time.sleep(self.tick)

    def announce_exit(self, how):
        """Tell every peer that this rank leaves the job (``how``: "exited (code 0)"), and
        how many collectives it called on each group: a peer still waiting in a later one
        reports it at once instead of waiting out the timeout."""
        calls = {gid: g.seq for gid, g in self.groups.items()}
        me, size = self.ctl.Get_rank(), self.ctl.Get_size()
        for r in range(size):
            if r != me:
                self._send((how, calls), r, LEFT)

    @staticmethod
    def _stack(op, where):
        frame = sys._current_frames().get(op.thread)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        return f"stack of {where}, {'now' if op.backend is not None else 'waiting'} in {op.name}:\n{stack}"

    def _serve(self):
        """Answer every pending query: (calls so far, last call) of the asked group, plus its
        history and where the main thread is when the query asks for forensics (then this rank
        first writes its hang files: see dump); record every peer's notice that it left (see
        announce_exit).

        Probed rather than posted as a receive: nothing is left to cancel when the watchdog
        stops, and a query from a rank that has died leaves no request behind. One thread
        at a time (a probed message is received once)."""
        if not self.serve_lock.acquire(blocking=False):
            return
        try:
            MPI = self._mpi()
            status = MPI.Status()
            while self.ctl.iprobe(source=MPI.ANY_SOURCE, tag=LEFT, status=status):
                source = status.Get_source()
                self.departed[source] = self.ctl.recv(source=source, tag=LEFT)
            while self.ctl.iprobe(source=MPI.ANY_SOURCE, tag=QUERY, status=status):
                source = status.Get_source()
                gid, forensics_wanted = self.ctl.recv(source=source, tag=QUERY)
                if forensics_wanted:  # written before the answer: the asking rank ends the job once it has them all
                    self.dump(f"asked by rank {source}, where a collective timed out")
                group = self.groups.get(gid)
                answer = None if group is None else (group.seq, str(group.last_op))
                if group is not None and forensics_wanted:
                    answer += (self._history(group), forensics.where_now(self.ops))
                self._send(answer, source, REPLY)
        finally:
            self.serve_lock.release()

    def _serve_quietly(self):
        try:
            self._serve()
        except Exception:  # a peer died mid-query (MPI error): answering is best effort
            pass

    def _send(self, obj, dest, tag):
        with self.sends_lock:
            self.sends = [r for r in self.sends if not r.Test()]
            self.sends.append(self.ctl.isend(obj, dest=dest, tag=tag))

    # ---- the asking side ------------------------------------------------------------------
    def arrivals(self, group, seq, reason="a collective timed out"):
        """Which ranks of ``group`` have not called its collective #``seq``, as a phrase,
        then (on lines of their own) where each rank is and where the hang files are: this
        rank writes its own (``reason`` heads them) and asks every peer to write theirs."""
        self.waiting = []
        try:
            return self._arrivals(group, seq, reason)
        except Exception as e:  # e.g. MPI reports a dead peer: the timeout must still be reported
            return f"which ranks have not called it is unknown ({type(e).__name__}: {e})"

    def _ask(self, group, forensics_wanted=False):
        """Ask every live peer of ``group`` (not those that left) for (calls so far, last
        call) on it; with ``forensics_wanted``, also for its history and where it is, and
        every live rank of the job (members or not) to write its hang files. Answers the
        peers' own queries meanwhile: with 3 or more ranks, the others that wait in the same
        collective ask at the same moment, and a rank busy asking must not look dead to them.
        Returns ``(answers by rank, ranks of the group that did not answer)``."""
        me = group.ranks[group.rank()]
        everyone = range(self.ctl.Get_size()) if forensics_wanted else group.ranks
        peers = [r for r in everyone if r != me and r not in self.departed]
        for r in peers:
            self._send((group.gid, forensics_wanted), r, QUERY)
        pending = {r: self.ctl.irecv(source=r, tag=REPLY) for r in peers}
        answers = {}
        deadline = time.monotonic() + QUERY_WAIT
        while pending and time.monotonic() < deadline:
            self._serve_quietly()
            for r, request in list(pending.items()):
                done, answer = request.test()
                if done:
                    answers[r] = answer
                    del pending[r]
            time.sleep(0.005)
        for request in pending.values():
            request.Cancel()
        members = set(group.ranks)
        return {r: a for r, a in answers.items() if r in members}, sorted(r for r in pending if r in members)

    def _arrivals(self, group, seq, reason):
        self.dump(reason)
        answers, pending = self._ask(group, forensics_wanted=True)
        self.waiting = _waiting(group, answers, seq)
        behind = {r: a for r, a in answers.items() if a is None or a[0] < seq}
        parts = []
        if behind:
            detail = "; ".join(f"rank {r} " + (f"last called {a[1]} (#{a[0]})" if a and a[0] else
                                               "has called no collective on this group")
                               for r, a in sorted(behind.items()))
            parts.append(f"ranks that have not called it: {sorted(behind)} ({detail})")
        if pending:
            parts.append(f"no answer from ranks {sorted(pending)} within {QUERY_WAIT:g} s (dead, or stuck "
                         f"outside Python)")
        me = group.ranks[group.rank()]
        reports = {me: (self._history(group), forensics.where_now(self.ops)),
                   **{r: a[2:] for r, a in answers.items() if a is not None and len(a) == 4}}
        differ = forensics.first_difference({r: history for r, (history, _) in reports.items()})
        if differ is not None:
            parts.append(f"the ranks' calls differ at {differ[1]}")
        elif not parts:
            parts.append("every rank has called it (ranks may have called collectives in different orders; "
                         "DTRAIN_DEBUG=1 checks every call)")
        where = f"where each rank is: {forensics.positions(reports)}\n" if hasattr(group, "history") else ""
        return f"{'; '.join(parts)}\n{where}{self.dumped}"

    def _history(self, group):
        """``group``'s last collectives as plain data (see forensics.entry)."""
        return [forensics.entry(op, self.ops) for op in list(getattr(group, "history", ()))]

    def dump(self, reason):
        """Write this rank's stacks and collective histories into the job's run folder, once
        (the first reason counts); ``self.dumped`` then names them, or why they are missing."""
        with self.dump_lock:
            if self.dumped is not None:
                return
            me = self.ctl.Get_rank()
            folder = forensics.run_dir(self.job)
            try:
                forensics.dump(folder, me, reason, list(self.groups.values()), self.ops)
                self.dumped = (f"stacks and the last {forensics.HISTORY} collectives of each rank: "
                               f"{os.path.join(folder, 'rank<N>.stacks.txt')}, rank<N>.history.json")
            except OSError as e:
                self.dumped = f"this rank's stacks and history could not be written to {folder}: {e}"

    def _mpi(self):
        from .mpi import mpi
        return mpi()


def _left_while_waiting(rank, how, waiting, seq, group, label, called):
    """``rank 1 exited (code 0) while ranks [0] were still in all_reduce (#2 on ranks [0, 1]:
    all_reduce(float32[4])); rank 1 had called collectives up to #1 on this group``."""
    name = label.split("(", 1)[0]
    return (f"rank {rank} {how} while ranks {waiting} were still in {name} (#{seq} on ranks {group.ranks}: "
            f"{label}); rank {rank} had called {f'collectives up to #{called}' if called else 'no collective'} "
            f"on this group")


def _waiting(group, answers, seq):
    """The ranks of ``group`` waiting in its collective #``seq``: this one, and the peers whose
    answer (calls so far, last call) says they have called it."""
    me = group.ranks[group.rank()]
    return sorted({me} | {r for r, a in answers.items() if a is not None and a[0] >= seq})


def _abort_quietly(communicator):
    """Abort an NCCL communicator; an error from the abort itself changes nothing in the report."""
    try:
        communicator.abort()
    except Exception:
        pass
