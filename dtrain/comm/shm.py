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

No third barrier is needed while the layout (length and dtype) stays the same: a slot's
region written in step 1 of the next call was last read before the previous call's second
barrier, and the region written in step 2 is read (step 3) before its reader enters the next
call's first barrier. A call whose layout differs from the previous one starts with a
barrier. (A window per layout would drop that barrier for DDP's alternating buckets; measured,
it saved no time and cost ~1% more CPU for the larger footprint: benchmarks/RESULTS.md.)

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
import os
import platform
import sys

import numpy

CHUNK_BYTES = 256 * 1024  # step 2 works in pieces that stay in the core's cache
COUNTER_STRIDE = 64  # bytes between two ranks' barrier counters: one cache line each
UFUNCS = {"sum": numpy.add, "product": numpy.multiply, "min": numpy.fmin, "max": numpy.fmax}
FUTEX_SYSCALL = {"x86_64": 202, "aarch64": 98}.get(platform.machine()) if sys.platform == "linux" else None
FUTEX_WAIT, FUTEX_WAKE = 0, 1  # not FUTEX_PRIVATE_FLAG: the waiters are in other processes
SPIN_LOOKS = 200  # looks (~30 us) before sleeping: a peer that is about to arrive costs no sleep and wake-up


def _pieces(arrays, lo, hi):
    """``(view, start)`` for every part of the flat concatenation of ``arrays`` in ``[lo, hi)``."""
    start = 0
    for a in arrays:
        s0, s1 = max(lo, start), min(hi, start + a.size)
        if s0 < s1:
            yield a[s0 - start:s1 - start], s0
        start += a.size


class _Window:
    """A shared window of one slot of ``nbytes`` per rank (a collective to create and free).

    ``layout`` is the (length, dtype) of the last call that used it."""

    def __init__(self, comm, MPI, nbytes):
        self.win = MPI.Win.Allocate_shared(nbytes, 1, comm=comm)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.slots = [numpy.frombuffer(self.win.Shared_query(j)[0], numpy.uint8, nbytes)
                      for j in range(comm.Get_size())]
        self.nbytes, self.layout = nbytes, None

    def free(self):
        self.slots = None
        self.win.Unlock_all()
        self.win.Free()


class SharedMemoryAllReduce:
    """In-place all-reduces over the flat concatenation of 1-D NumPy arrays.

    Args:
        comm: an mpi4py intra-communicator whose ranks all share this node's memory.
        MPI: the ``mpi4py.MPI`` module.
    """

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.size, self.rank = comm.Get_size(), comm.Get_rank()
        self.window = None  # the _Window, grown when a message needs more
        self.barrier = None  # a _CountingBarrier, made on first use

    def all_reduce(self, arrays, op="sum", scale=None):
        """Reduce the concatenation of ``arrays`` (1-D, contiguous, one dtype; the same sizes on
        every rank) across the ranks, in place. ``scale``: with op "sum", this rank's values
        are multiplied by it first (how DDP averages: divide, then sum)."""
        dtype = arrays[0].dtype
        n = sum(a.size for a in arrays)
        if n == 0:
            return
        ufunc, me = UFUNCS[op], self.rank
        window = self._window(n * dtype.itemsize)
        if window.layout != (n, dtype):
            self._barrier()  # the previous call's readers are done with every region
            window.layout = (n, dtype)
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
            self._reduce_shard(arrays, bounds, mine, others, ufunc, scale, step)
        self._barrier()
        for j in range(self.size):
            if j != me:
                theirs = slots[j].view(dtype)
                for a, s in _pieces(arrays, bounds[j], bounds[j + 1]):
                    numpy.copyto(a, theirs[s:s + a.size])

    def _reduce_shard(self, arrays, bounds, mine, others, ufunc, scale, step):
        """Step 2: this rank's shard, combined in pieces of ``step`` elements."""
        me = self.rank
        for a, s in _pieces(arrays, bounds[me], bounds[me + 1]):
            for k in range(0, a.size, step):
                src, lo = a[k:k + step], s + k
                out = mine[lo:lo + src.size]
                first = src
                if scale is not None:
                    numpy.multiply(src, scale, out=out)
                    first = out
                for i, other in enumerate(others):
                    ufunc(first if i == 0 else out, other[lo:lo + src.size], out=out)
                numpy.copyto(src, out)

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
        if self.barrier is None:
            self.barrier = _CountingBarrier(self.comm, self.MPI)
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
        self.window = _Window(comm, MPI, COUNTER_STRIDE)
        self.counts = [slot[:4].view(numpy.uint32) for slot in self.window.slots]
        self.addresses = [count.ctypes.data for count in self.counts]
        self.me = comm.Get_rank()
        self.mine = self.counts[self.me]
        self.mine[0] = 0  # shared memory is not promised to start zeroed
        self.window.win.Sync()
        comm.Barrier()
        self.entered = 0
        self.futex = _futex_call() if FUTEX_SYSCALL is not None else None

    def wait(self):
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
