"""All-reduce through an MPI-3 shared-memory window, for a group whose ranks share one node.

MPICH's own all-reduce of a few MiB between two processes of one machine copies the data
through its shared-memory cells several times (benchmarks/RESULTS.md). Here every rank owns
a window slot as large as the message, and the flat message is cut into one shard per rank:

1. every rank writes its values of the *other* ranks' shards into its slot;
2. barrier; rank r reduces shard r: its own values (still in its arrays) combined with
   the other ranks' copies of shard r, written to its own arrays and to its slot;
3. barrier; every rank copies the finished shards of the others out of their slots.

Each rank moves about twice its message instead of MPICH's several times; every shard is
reduced once, by its owner, so all ranks end with the same bits.

Before step 1 every rank writes its call's header (call number, length, dtype, op) to a small
shared window and meets the others at a barrier; then each compares every header with its
own. Ranks that called all_reduce with different lengths, dtypes or ops (a bug in the
program) would otherwise read past the end of a shorter slot (a segfault) or combine bytes
of different types (silently wrong); instead every rank raises the same :class:`DistError`,
naming each rank's call. A rank whose message is below the threshold takes MPI's own
all-reduce (dtrain/comm/mpi.py): :meth:`SharedMemoryAllReduce.announce` writes its header
all the same, and a rank waiting for it at the header barrier raises the error instead of
waiting for the timeout. The header barrier is also what makes step 1's writes safe: every
rank has finished the previous call's step 3, its last read of the slots. (Before the
headers, a call whose length and dtype repeated the previous call's needed no such barrier;
now every call has three.)

The barriers are counters in a small shared window: a rank bumps its own, wakes whoever
waits on it, then, after a few looks, sleeps on each peer's counter until it moves (a Linux
futex: the kernel wakes the sleeper). An MPI barrier spins for as long as it waits; where
the ranks and their comm threads outnumber the cores (DDP on a small CPU node, a loaded
machine) that spinning burnt the CPU time the peer's computation needed (benchmarks/RESULTS.md,
"DDP speed"). Without futexes (another OS or CPU) the wait polls, yielding between looks.

The window and the counters belong to one communicator, used by one thread: the group
keeps one instance for the caller's communicator and one for the comm thread's.
"""
import ctypes
import math
import os
import platform
import sys

import numpy

from .errors import DistError
from .finite_flags import squared_norm

CHUNK_BYTES = 256 * 1024  # step 2 works in pieces that stay in the core's cache
CONTROL_BYTES = 128  # a rank's control slot: its barrier counter (first cache line), its call's header (second)
HEADER = slice(64, 104)  # the header: 5 int64, indexed as below
FLAG = slice(104, 112)  # with ``check``: whether this rank's shard of the call's result is non-finite (int64)
CALL, LENGTH, DTYPE, OP, PATH = range(5)  # DTYPE: the dtype's char code; OP: its index in OPS
OPS = ("sum", "product", "min", "max", "avg")
SHM_PATH, MPI_PATH = 0, 1  # PATH: this class's all-reduce, or MPI's (announce)
PATH_NAMES = ("this shared-memory all-reduce", "MPI's all-reduce (below the shared-memory threshold)")
UFUNCS = {"sum": numpy.add, "product": numpy.multiply, "min": numpy.fmin, "max": numpy.fmax}
FUTEX_SYSCALL = {"x86_64": 202, "aarch64": 98}.get(platform.machine()) if sys.platform == "linux" else None
FUTEX_WAIT, FUTEX_WAKE = 0, 1  # not FUTEX_PRIVATE_FLAG: the waiters are in other processes
SPIN_LOOKS = 200  # looks (~30 us) before sleeping: a peer that is about to arrive costs no sleep and wake-up


def takes(arrays, op, min_bytes):
    """Whether an all-reduce of the flat NumPy ``arrays`` with op ``op`` (a name of OPS) goes
    through this module: integers and floats, an op it reduces, at least ``min_bytes``."""
    first = arrays[0]
    # bfloat16 (kind "V") is refused here: the process group reduces it as a float32 copy (see .bfloat16)
    return (type(first) is numpy.ndarray and first.dtype.kind in "fiu" and op in UFUNCS
            and sum(a.nbytes for a in arrays) >= min_bytes)


def _pieces(arrays, lo, hi):
    """``(view, start)`` for every part of the flat concatenation of ``arrays`` in ``[lo, hi)``."""
    for _, view, s0 in _indexed_pieces(arrays, lo, hi):
        yield view, s0


def _indexed_pieces(arrays, lo, hi):
    """``(k, view, start)``: as :func:`_pieces`, with the index of the array the part is of."""
    start = 0
    for k, a in enumerate(arrays):
        s0, s1 = max(lo, start), min(hi, start + a.size)
        if s0 < s1:
            yield k, a[s0 - start:s1 - start], s0
        start += a.size


def _piece_norm(dtype):
    """``piece -> its squared norm, a Python float`` for 1-D contiguous pieces of ``dtype`` (one
    BLAS dot: NaN and inf propagate; a float is a few us per piece cheaper than NumPy scalars)."""
    if dtype.itemsize < 4:  # float16's squares pass its range: in float32
        return lambda piece: float(squared_norm(numpy, piece))
    dot = numpy.dot
    return lambda piece: float(dot(piece, piece))


class _Window:
    """A shared window of one slot of ``nbytes`` per rank (a collective to create and free)."""

    def __init__(self, comm, MPI, nbytes):
        self.win = MPI.Win.Allocate_shared(nbytes, 1, comm=comm)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.slots = [numpy.frombuffer(self.win.Shared_query(j)[0], numpy.uint8, nbytes)
                      for j in range(comm.Get_size())]
        self.nbytes = nbytes

    def free(self):
        self.slots = None
        self.win.Unlock_all()
        self.win.Free()


class SharedMemoryAllReduce:
    """In-place all-reduces over the flat concatenation of 1-D NumPy arrays.

    Constructing one is a collective over ``comm`` (it allocates the barrier's and the
    headers' window): every rank constructs it at the same point.

    Args:
        comm: an mpi4py intra-communicator whose ranks all share this node's memory.
        MPI: the ``mpi4py.MPI`` module.
    """

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.size, self.rank = comm.Get_size(), comm.Get_rank()
        # the global ranks, for messages
        group, world = comm.Get_group(), MPI.COMM_WORLD.Get_group()
        self.ranks = group.Translate_ranks(list(range(self.size)), world)
        group.Free()
        world.Free()
        self.window = None  # the _Window, grown when a message needs more
        self.barrier = _CountingBarrier(comm, MPI)
        self.headers = [slot[HEADER].view(numpy.int64) for slot in self.barrier.window.slots]
        self.flags = [slot[FLAG].view(numpy.int64) for slot in self.barrier.window.slots]
        self.calls = 0  # all-reduces on this communicator: the shared-memory ones and the announced ones

    def all_reduce(self, arrays, op="sum", scale=None, check=None):
        """Reduce the concatenation of ``arrays`` (1-D, contiguous, one dtype) across the ranks,
        in place. ``scale``: with op "sum", this rank's values are multiplied by it first (how
        DDP averages: divide, then sum).

        ``check`` (op "sum" of floats; a :class:`.finite_flags.FiniteCheck`): whether the result
        holds a NaN or inf, decided where it is made: in step 2 each rank takes the dot of
        every piece it has just summed (in cache; 1/N of the message per rank), writes
        whether any was non-finite to its control slot, and after the last barrier every rank
        reads them all into ``check.flag`` (the same on every rank). NaN and inf pass through
        a sum, so the result is non-finite iff some rank's values were (or the sum, or the
        dot, overflowed). Only for a non-finite piece (the rare path) are the ranks' own
        contributions to it looked at, still in place then (this rank's arrays before the
        result overwrites them, the others' slots): ``check.seen`` gets ``(group rank, array
        index) -> 1 (NaN) or 2 (inf)`` for each.

        Raises:
            DistError: the ranks' calls differ in length, dtype or op (on every rank), or a
                peer took MPI's all-reduce for this call (:meth:`announce`).
        """
        dtype = arrays[0].dtype
        n = sum(a.size for a in arrays)
        self._publish(n, dtype, op, SHM_PATH)
        self.barrier.wait(self._peer_took_mpi)  # also: every rank has done the previous call's reads
        self._check_headers()
        if n == 0:
            if check is not None:
                check.flag[0] = 0
            return
        ufunc, me = UFUNCS[op], self.rank
        window = self._window(n * dtype.itemsize)
        slots = window.slots
        mine = slots[me].view(dtype)
        bounds = [n * j // self.size for j in range(self.size + 1)]
        for j in range(self.size):
            if j != me:
                for a, s in _pieces(arrays, bounds[j], bounds[j + 1]):
                    if scale is None:
                        numpy.copyto(mine[s:s + a.size], a)
                    else:
                        numpy.multiply(a, scale, out=mine[s:s + a.size])
        self._barrier()
        others = [slots[j].view(dtype) for j in range(self.size) if j != me]
        step = max(1, CHUNK_BYTES // dtype.itemsize)
        with numpy.errstate(all="ignore"):  # overflow gives inf silently, as in MPI's own all-reduce
            bad = self._reduce_shard(arrays, bounds, mine, others, ufunc, scale, step, check)
        if check is not None:  # this rank's shard's verdict, read by the others after the barrier
            self.flags[me][0] = bad
        self._barrier()
        if check is not None:
            # read now: a peer writes its next flag only after the next call's header barrier,
            # which it passes only once this rank has returned from this call
            check.flag[0] = any(f[0] for f in self.flags)
        for j in range(self.size):
            if j != me:
                theirs = slots[j].view(dtype)
                for a, s in _pieces(arrays, bounds[j], bounds[j + 1]):
                    numpy.copyto(a, theirs[s:s + a.size])

    def announce(self, n, dtype, op):
        """Record that this rank's next all-reduce on the communicator, of ``n`` elements of
        ``dtype`` with ``op``, goes through MPI's all-reduce instead (below the threshold): a
        peer that takes this class's path for it raises the mismatch error instead of waiting."""
        self._publish(n, numpy.dtype(dtype), op, MPI_PATH)

    def _publish(self, n, dtype, op, path):
        """This rank's header for its next call; the call number is written last (a peer that
        reads it sees the rest), and ``Sync`` makes it visible."""
        self.calls += 1
        header = self.headers[self.rank]
        op_code = OPS.index(op) if op in OPS else -1
        header[LENGTH], header[DTYPE], header[OP], header[PATH] = n, ord(dtype.char), op_code, path
        header[CALL] = self.calls
        self.barrier.window.win.Sync()

    def _peer_took_mpi(self):
        """Between looks at the header barrier: raise if a peer announced this call on MPI's path.
        (This rank's barrier count is then ahead of the others': the job cannot go on, the
        peer waits in MPI's all-reduce for a call that never comes.)"""
        if any(h[CALL] == self.calls and h[PATH] == MPI_PATH for h in self.headers):
            raise DistError(self._mismatch())

    def _check_headers(self):
        """After the header barrier: every rank's header equals this one's, or every rank raises
        (after one more barrier, so that no rank's next header overwrites one still being read)."""
        mine = self._call(self.rank)
        if any(self._call(j) != mine for j in range(self.size)):
            message = self._mismatch()
            self.barrier.wait()
            raise DistError(message)

    def _call(self, j):
        """Rank ``j``'s header as (call number, length, dtype, op, path)."""
        call, n, char, op, path = (int(self.headers[j][field]) for field in (CALL, LENGTH, DTYPE, OP, PATH))
        try:
            dtype = numpy.dtype(chr(char))
        except (TypeError, ValueError):  # a type NumPy has no char code for: compared by code
            dtype = f"dtype code {char}"
        return call, n, dtype, op, path

    def _mismatch(self):
        """The error message: each rank's call, as far as the headers tell."""
        calls = [self._call(j) for j in range(self.size)]
        paths_differ = len({path for *_, path in calls}) > 1
        lines = []
        for j, (call, n, dtype, op, path) in enumerate(calls):
            if call != self.calls:
                lines.append(f"rank {self.ranks[j]}: not at this call (its all-reduce #{call} on this group)")
                continue
            name = OPS[op] if 0 <= op < len(OPS) else "another op"
            through = f", through {PATH_NAMES[path]}" if paths_differ else ""
            lines.append(f"rank {self.ranks[j]}: {n} elements of {dtype}, op {name}{through}")
        return (f"all_reduce #{self.calls} on ranks {self.ranks}: the ranks called it with different messages "
                f"(every rank must pass the same number of elements, dtype and op): " + "; ".join(lines))

    def _reduce_shard(self, arrays, bounds, mine, others, ufunc, scale, step, check=None):
        """Step 2: this rank's shard, combined in pieces of ``step`` elements. With ``check``,
        each piece's result is checked while in cache (see :meth:`all_reduce`); returns
        whether any was non-finite."""
        me, bad = self.rank, False
        norm = None if check is None else _piece_norm(mine.dtype)
        for k_array, a, s in _indexed_pieces(arrays, bounds[me], bounds[me + 1]):
            for k in range(0, a.size, step):
                src, lo = a[k:k + step], s + k
                out = mine[lo:lo + src.size]
                first = src
                if scale is not None:
                    numpy.multiply(src, scale, out=out)
                    first = out
                for i, other in enumerate(others):
                    ufunc(first if i == 0 else out, other[lo:lo + src.size], out=out)
                if norm is not None and not math.isfinite(norm(out)):
                    bad = True
                    self._contributors(check, k_array, src, [other[lo:lo + src.size] for other in others], norm)
                numpy.copyto(src, out)
        return bad

    def _contributors(self, check, k_array, own, theirs, norm):
        """The rare path: the ranks whose values in a non-finite piece of array ``k_array``
        were non-finite, or their squared norm (``norm``) was (``own``: this rank's, still
        unscaled; ``theirs``: the others', in their slots, in rank order without this rank),
        go into ``check.seen``."""
        peers = [j for j in range(self.size) if j != self.rank]
        for j, values in [(self.rank, own)] + list(zip(peers, theirs)):
            if not math.isfinite(norm(values)):
                kind = 1 if numpy.isnan(values).any() else 2
                check.seen[(j, k_array)] = min(kind, check.seen.get((j, k_array), kind))

    def _window(self, nbytes):
        """The window, with slots of at least ``nbytes`` (a collective when it must grow: every
        rank sees the same message sizes in the same order, so every rank grows it alike)."""
        if self.window is None or self.window.nbytes < nbytes:
            if self.window is not None:
                self.window.free()
            self.window = _Window(self.comm, self.MPI, -(-nbytes // (1 << 20)) << 20)  # whole MiB: fewer regrowths
        return self.window

    def _barrier(self):
        """Wait until every rank has reached this barrier (see the module docstring)."""
        self.barrier.wait()

    def free(self):
        """Release the windows (a collective over the communicator)."""
        for window in (self.window, self.barrier and self.barrier.window):
            if window is not None:
                window.free()
        self.window = self.barrier = None


class _CountingBarrier:
    """A barrier over the ranks of ``comm`` (which share one node) that sleeps instead of spinning.

    Every rank owns a 32-bit counter in a shared window: the number of barriers it has
    entered, modulo 2**32. A rank bumps its counter, wakes the ranks sleeping on it, then
    waits until every other counter has left the value it had before this barrier (a peer
    may already be one barrier further, never two: it cannot pass this one without us).
    """

    def __init__(self, comm, MPI):
        self.window = _Window(comm, MPI, CONTROL_BYTES)
        self.counts = [slot[:4].view(numpy.uint32) for slot in self.window.slots]
        self.addresses = [count.ctypes.data for count in self.counts]
        self.me = comm.Get_rank()
        self.mine = self.counts[self.me]
        self.window.slots[self.me][:] = 0  # shared memory is not promised to start zeroed
        self.window.win.Sync()
        comm.Barrier()
        self.entered = 0
        self.futex = _futex_call() if FUTEX_SYSCALL is not None else None

    def wait(self, look=None):
        """``look()``: called before each sleep while a peer is awaited; what it raises ends the wait."""
        before, self.entered = self.entered, (self.entered + 1) & 0xFFFFFFFF
        self.window.win.Sync()  # this rank's stores to the slots are visible before its count
        self.mine[0] = self.entered
        if self.futex is not None:
            self.futex(self.addresses[self.me], FUTEX_WAKE, 2**31 - 1)
        for count, address in zip(self.counts, self.addresses):
            looks = 0
            while count[0] == before:
                looks += 1
                if looks <= SPIN_LOOKS:
                    continue
                if look is not None:
                    look()
                if self.futex is not None:  # sleeps only while the count is still `before`
                    self.futex(address, FUTEX_WAIT, before)
                else:
                    os.sched_yield()
        self.window.win.Sync()  # and the others' stores are seen after their counts


def _futex_call():
    """``futex(address, op, value)`` through libc's ``syscall`` (ctypes releases the GIL
    while the thread sleeps); a wait gives up after 10 ms and the caller looks again."""
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    timeout = (ctypes.c_long * 2)(0, 10_000_000)  # struct timespec: 10 ms

    def futex(address, op, value):
        syscall(ctypes.c_long(FUTEX_SYSCALL), ctypes.c_void_p(address), ctypes.c_int(op), ctypes.c_uint(value),
                timeout, None, ctypes.c_int(0))
    return futex
