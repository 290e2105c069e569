"""The MPI backend, through mpi4py.

* NumPy buffers go to MPI as they are (no copies; ``MPI.IN_PLACE`` for reductions).
* CuPy arrays go to MPI directly when the MPI library is CUDA-aware, else through host
  copies, after waiting for the stream that produced them.
* float16 goes to MPI as 2-byte integers, reduced by user-defined ops that add (etc.) them
  as float16 with NumPy, when the library has no float16 datatype (Open MPI 4 has none;
  MPICH has MPIX_C_FLOAT16): the same bytes on the wire either way.
* bfloat16 (ml_dtypes'; MPI has no such type) moves as uint16 bits; reductions never see it:
  the process group reduces a float32 copy and rounds back once (:mod:`.bfloat16`).
* Messages longer than ``MAX_COUNT`` (2^31 - 1) elements are split (MPI counts are C ints
  unless the library has MPI-4 large counts).
* Async collectives (``async_op=True``) run on the group's own communication thread (one
  per group, :class:`~.work.CommThread`: groups never wait for each other's collectives),
  on a duplicate of the group's communicator: the MPI library only advances nonblocking
  collectives inside MPI calls, so ``Iallreduce`` barely overlaps with computation while a
  thread does (``benchmarks/allreduce.py``'s overlap table, in benchmarks/RESULTS.md). The thread
  needs ``MPI_THREAD_MULTIPLE`` (mpi4py asks for it by default): the caller may be in a
  blocking collective or point-to-point call on the group's own communicator at the same
  time. Collectives on one communicator are still issued from one thread only, in program
  order, as MPI requires. If the library grants a lower thread level, async collectives run
  to completion before they return.
* ``isend``/``irecv`` are MPI nonblocking requests (a send and a receive posted by two
  ranks toward each other must not run one after the other on a thread).
* An all-reduce of at least ``DTRAIN_SHM_MIN_BYTES`` (256 KiB) of NumPy data, in a group
  whose ranks all share one node, goes through an MPI-3 shared-memory window
  (:mod:`.shm`) instead of ``MPI_Allreduce``; ``DTRAIN_SHM_ALLREDUCE=0`` turns that off. The
  choice depends only on the group, the byte count, the dtype and the op, so every rank of
  a collective makes the same one; where ranks disagree (a bug), every call's header (and
  the announcement of a call below the threshold) makes it a DistError naming each
  rank's call, not a crash.
* In a group that spans hosts (as MPI's ``COMM_TYPE_SHARED`` split tells), all-reduces are
  hierarchical (:mod:`.hierarchical`: within each host, among one leader per host, back
  within each host) when some host holds more than one of its ranks, or with
  ``DTRAIN_HIERARCHICAL=1``; the shared-memory window then serves within a host only.
  The world group learns each rank's host, and refuses a job whose hosts run different
  dtrain versions (:mod:`.topology`).
* Every collective is numbered per group (program order) and watched by the process's
  :class:`~.watchdog.Watchdog`, which ends the job when one outlives the group's timeout;
  the group keeps its last 32 with their call sites for the timeout's report
  (:mod:`.forensics`), and says when the sampled cross-rank check of a call is due
  (:mod:`.call_check`).
"""
import contextlib
import ctypes
import os
import sys

import numpy

from ..tensor.backend import cupy, is_cuda_array
from ..timing import phase
from .env import check_agrees
from .errors import DistBackendError, DistError
from . import chunking
from .call_check import check_interval, hash_pair, mismatch, next_check
from .chunking import chunks, in_rounds
from .forensics import call_site, job_id, new_history, site_text
from .process_group import ProcessGroup, ReduceOp
from .hierarchical import HierarchicalAllReduce, decide as hierarchical_wanted
from .shm import SharedMemoryAllReduce, takes
from .topology import exchange as exchange_topology
from .watchdog import Op, Watchdog, describe, next_group_id
from .work import CommThread, CompletedWork, PollWork

_MPI = None
SHM_MIN_BYTES = 256 * 1024  # below this MPI's own all-reduce is as fast (benchmarks/allreduce.py)


def mpi():
    """The ``mpi4py.MPI`` module (initializing MPI with MPI_THREAD_MULTIPLE on first use)."""
    global _MPI
    if _MPI is None:
        try:
            import mpi4py
        except ImportError:
            raise DistBackendError("the MPI backend needs mpi4py and an MPI library: "
                                   "pip install dtrain[mpi] (mpi4py + the mpich wheel)") from None
        mpi4py.rc.thread_level = "multiple"  # effective only if MPI is not initialized yet
        if "mpi4py.MPI" not in sys.modules:  # initialized below instead (see _initialize); finalized at exit
            mpi4py.rc.initialize, mpi4py.rc.finalize = False, True
        from mpi4py import MPI
        if not MPI.Is_initialized():
            _initialize(MPI)
        _MPI = MPI
    return _MPI


def _initialize(MPI):
    """MPI_Init_thread(MPI_THREAD_MULTIPLE) through ctypes, which releases the GIL: MPI_Init
    waits for every rank (MPICH's PMI fence), and while a late or stuck peer keeps it
    waiting, init_process_group's deadline thread must be able to run. mpi4py's own
    MPI_Init holds the GIL."""
    provided = ctypes.c_int(-1)
    code = ctypes.CDLL(MPI.__file__).MPI_Init_thread(None, None, ctypes.c_int(MPI.THREAD_MULTIPLE),
                                                     ctypes.byref(provided))
    if code != 0:
        raise DistBackendError(f"MPI_Init_thread failed with MPI error code {code}")
    for comm in (MPI.COMM_SELF, MPI.COMM_WORLD):  # MPI errors as exceptions: what mpi4py sets when it initializes
        comm.Set_errhandler(MPI.ERRORS_RETURN)


def is_available():
    try:
        mpi()
        return True
    except DistBackendError:
        return False


def abort(code=1):
    """End every rank of the job (MPI_Abort on COMM_WORLD)."""
    mpi().COMM_WORLD.Abort(code)


_OPS = {}
_FLOAT16_OPS = {}  # filled when the MPI library has no float16 datatype (see _fill_ops)
FLOAT16 = numpy.dtype(numpy.float16)


def _mpi_op(op, buf):
    """The MPI op of a ReduceOp other than AVG for the array ``buf`` (the tables are filled once MPI is up)."""
    return _FLOAT16_OPS[op] if _as_uint16(buf.dtype) else _OPS[op]


def _as_uint16(dtype):
    """Whether arrays of ``dtype`` go to MPI as uint16 (float16 where the library has no float16 type)."""
    return bool(_FLOAT16_OPS) and dtype == FLOAT16


def _fill_ops(MPI):
    if _OPS:
        return
    _OPS.update({ReduceOp.SUM: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD, ReduceOp.MIN: MPI.MIN, ReduceOp.MAX: MPI.MAX})
    try:
        MPI.Datatype.fromcode("e")
    except ValueError:  # Open MPI 4: float16 goes as uint16 (_mpi_view) through these ops
        def float16_op(ufunc):
            def apply(inbuf, inoutbuf, datatype):
                inout = numpy.frombuffer(inoutbuf, FLOAT16)
                ufunc(numpy.frombuffer(inbuf, FLOAT16), inout, out=inout)
            return MPI.Op.Create(apply, commute=True)
        _FLOAT16_OPS.update({op: float16_op(f) for op, f in ((ReduceOp.SUM, numpy.add),
                             (ReduceOp.PRODUCT, numpy.multiply), (ReduceOp.MIN, numpy.minimum),
                             (ReduceOp.MAX, numpy.maximum))})


def _mpi_view(a):
    """``a`` as MPI can take it: float16 as uint16 where the library has no float16 type,
    bfloat16 as uint16 always (only data-moving collectives get it: see :mod:`.bfloat16`)."""
    if a is not None:
        dtype = a.dtype  # _as_uint16 inlined: on every hot-path all-reduce (benchmarks/bfloat16_collectives.py)
        if dtype.kind == "V" or (_FLOAT16_OPS and dtype == FLOAT16):
            return a.view(numpy.uint16)
    return a


def _cuda_aware():
    """Whether MPI can read and write GPU memory. ``DTRAIN_MPI_CUDA_AWARE=0/1`` overrides;
    else ask the library (Open MPI's MPIX_Query_cuda_support, MPICH's MPIX_GPU_query_support)."""
    flag = os.environ.get("DTRAIN_MPI_CUDA_AWARE")
    if flag is not None:
        return flag.strip().lower() in ("1", "true", "yes", "on")
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libmpi" in line}
    except OSError:
        return False
    for path in paths:
        lib = ctypes.CDLL(path)
        if hasattr(lib, "MPIX_Query_cuda_support"):
            return bool(lib.MPIX_Query_cuda_support())
        if hasattr(lib, "MPIX_GPU_query_support"):
            supported = ctypes.c_int(0)
            lib.MPIX_GPU_query_support(0, ctypes.byref(supported))  # 0 = MPIX_GPU_SUPPORT_CUDA
            return bool(supported.value)
    return False


def _ready_event(arrays):
    """An event on the caller's current CUDA stream, if any array is on a GPU: the data
    is ready for MPI once it has passed."""
    device = next((a.device.id for a in arrays if is_cuda_array(a)), None)
    if device is None:
        return None
    with cupy.cuda.Device(device):  # the stream that wrote the array: its device's current one
        event = cupy.cuda.Event(disable_timing=True)
        event.record()
    return event


def _device(array):
    """The CUDA device index of ``array``, None for a host array."""
    return array.device.id if is_cuda_array(array) else None


@contextlib.contextmanager
def _on_device(device):
    """CUDA device ``device`` current inside (the comm thread's is device 0 otherwise); None: no-op."""
    if device is None:
        yield
        return
    with cupy.cuda.Device(device):
        yield


def _wait_for_stream(buf):
    """Block until the caller's stream has finished with a GPU buffer (no-op on the host)."""
    ready = _ready_event([buf])
    if ready is not None:
        ready.synchronize()


class MPIProcessGroup(ProcessGroup):
    """A group of ranks that communicate through one MPI communicator.

    Args:
        comm: the group's communicator (a private duplicate, so user MPI traffic never mixes in).
        ranks: the members' global ranks, in group-rank order.
        gid: the group's id, the same on every member (see :func:`.watchdog.next_group_id`).
        timeout: seconds a collective may take before the watchdog ends the job; the
            default of ``Work.wait()``.
        thread: the process's :class:`CommThread` for async collectives (None: run inline).
        watchdog: the process's :class:`~.watchdog.Watchdog`.
        owns_thread: this group (the world) stops the thread and the watchdog when destroyed.
        check_every: ``N`` of the sampled cross-rank check (:mod:`.call_check`; 0: off).
    """

    def __init__(self, comm, ranks, gid, timeout=None, thread=None, watchdog=None, owns_thread=False,
                 check_every=0):
        super().__init__("mpi", comm.Get_rank(), ranks, timeout)
        self.comm, self.gid = comm, gid
        self.thread, self.watchdog, self.owns_thread = thread, watchdog, owns_thread
        self.async_comm = comm.Dup() if thread is not None else None
        self.cuda_aware = None  # asked on the first CuPy buffer
        self.seq, self.last_op = 0, "nothing"  # collectives called so far, and the last one
        self.history = new_history()  # the last ones' Ops, with their call sites (forensics)
        # the sampled check: off in a group of one; else call #1 is the first checked (see call_check)
        self.check_every = check_every if self.size() > 1 else 0
        self.next_check = 1
        self.pending_check = None  # an async call's check, for its task: (label, site, every_call)
        self.next_call_counted = False  # the next call's number was taken by its cross-rank check
        self.shm, self.shm_min_bytes = {}, None  # shared-memory all-reduce per communicator
        self.hierarchy = {}  # hierarchical all-reduce per communicator, for a group across hosts
        self.topology = None  # the world's hosts (set by world(), passed to subgroups)
        shm_off = os.environ.get("DTRAIN_SHM_ALLREDUCE", "1").strip().lower() in ("0", "false", "no", "off")
        if self.size() > 1:
            node = comm.Split_type(mpi().COMM_TYPE_SHARED, key=comm.Get_rank())  # collective, as making a group is
            one_host = node.Get_size() == comm.Get_size()
            min_bytes = None if shm_off else int(os.environ.get("DTRAIN_SHM_MIN_BYTES", SHM_MIN_BYTES))
            # made now, with the group (collectives): made at a first call above the threshold,
            # they would meet a peer's MPI all-reduce of a message below it (a crash)
            if one_host and not shm_off:
                self.shm_min_bytes = min_bytes
                self.shm = {id(c): SharedMemoryAllReduce(c, mpi()) for c in (comm, self.async_comm) if c is not None}
            elif not one_host and hierarchical_wanted(comm, node, self.ranks):
                self.hierarchy = {id(c): HierarchicalAllReduce(c, mpi(), min_bytes)
                                  for c in (comm, self.async_comm) if c is not None}
            node.Free()
        if watchdog is not None:
            watchdog.groups[gid] = self

    @classmethod
    def world(cls, info, timeout=None, on_timeout=None):
        """The group of all ranks, after checking MPI agrees with the launcher's variables.

        Args:
            info: the launcher's :class:`~.env.LaunchInfo`.
            timeout: seconds a collective may take.
            on_timeout: ``on_timeout(line, detail)`` ends the job when one takes longer.

        Returns:
            ``(group, local_rank, local_world_size)``; local ranks come from the ranks that
            share this node's memory.
        """
        MPI = mpi()
        _fill_ops(MPI)
        world = MPI.COMM_WORLD
        # rank 0's settings for every rank: the hang files' folder, and the sampled check's N (a rank
        # that checked other calls than its peers would meet their real collectives with its checks)
        job, check_every = world.bcast((job_id(), check_interval()) if world.Get_rank() == 0 else None)
        node = world.Split_type(MPI.COMM_TYPE_SHARED, key=world.Get_rank())
        local_rank, local_size = node.Get_rank(), node.Get_size()
        check_agrees(info, world.Get_rank(), world.Get_size(), local_rank, local_size)
        topology = exchange_topology(world, node)  # raises on every rank if a host runs another dtrain
        node.Free()
        multiple = MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        thread = CommThread() if multiple else None
        # the watchdog queries peers while the caller may be inside MPI: it needs THREAD_MULTIPLE too
        watchdog = Watchdog(world.Dup(), on_timeout, job=job) if multiple and on_timeout is not None else None
        group = cls(world.Dup(), range(world.Get_size()), next_group_id(), timeout, thread, watchdog,
                    owns_thread=True, check_every=check_every)
        group.topology = topology
        return group, local_rank, local_size

    def new_subgroup(self, ranks, timeout):
        MPI = mpi()
        gid = next_group_id()  # on every rank, members or not, so ids agree
        member = self.ranks[self._rank] in ranks
        sub = self.comm.Split(0 if member else MPI.UNDEFINED, key=self._rank)
        if not member:
            return None
        group = MPIProcessGroup(sub, ranks, gid, timeout, self.thread, self.watchdog, check_every=self.check_every)
        group.topology = self.topology
        return group

    def destroy(self):
        if self.thread is not None:
            self.thread.stop() if self.owns_thread else self.thread.close_lane(self.gid)
        for shm in (*self.shm.values(), *self.hierarchy.values()):
            shm.free()
        self.shm, self.hierarchy = {}, {}
        if self.watchdog is not None:
            self.watchdog.groups.pop(self.gid, None)
            if self.owns_thread:
                self.watchdog.stop()
        for comm in (self.comm, self.async_comm):
            if comm is not None:
                comm.Free()
        self.comm = self.async_comm = None

    # ---- the hot path ---------------------------------------------------------------------
    def all_reduce(self, tensor, op=ReduceOp.SUM, async_op=False):
        """A synchronous in-place reduction of a contiguous NumPy array (what training loops
        call) goes straight to the ``_allreduce`` primitive, without the general path's checks
        and closures, which cost about as much again as a small all-reduce itself (measured:
        benchmarks/allreduce_paths.py, in benchmarks/RESULTS.md); anything else takes that path."""
        if type(tensor) is numpy.ndarray and not async_op and op in _OPS and tensor.dtype.kind in "fiu":
            flags = tensor.flags
            if flags.c_contiguous and flags.writeable:
                with self._numbered_op("all_reduce", (tensor,), False):
                    try:
                        self._allreduce(tensor.reshape(-1), op)
                    except _MPI.Exception as e:
                        raise self._failed("all_reduce", e) from e
                return None
        return super().all_reduce(tensor, op, async_op)

    # ---- how an operation runs ----------------------------------------------------------
    def _run(self, name, fn, arrays, async_op):
        ready = _ready_event(arrays)
        on_thread = async_op and self.thread is not None
        op = self._numbered_op(name, arrays, on_thread)
        device = next((_device(a) for a in arrays if is_cuda_array(a)), None)
        check, self.pending_check = self.pending_check, None  # left by cross_check for this call

        def task():
            if ready is not None:
                ready.synchronize()
            with op, _on_device(device):
                if check is not None:
                    calls = self._exchange_calls(*check)
                    if calls is not None:
                        raise DistError(mismatch(self, calls, check[2], op.seq))
                try:
                    fn()
                except mpi().Exception as e:
                    raise self._failed(name, e) from e
                if device is not None:  # the copy-back and AVG's division: done before the Work is
                    cupy.cuda.get_current_stream().synchronize()

        if on_thread:
            return self.thread.submit(name, task, self.timeout, op.timeout_message, lane=self.gid)
        with phase("comm-wait"):  # a blocking collective: this thread waits for the peers
            task()
        return CompletedWork(name) if async_op else None

    def _failed(self, name, error):
        """The DistBackendError for an MPI error raised by operation ``name``."""
        return DistBackendError(f"{name} failed on rank {self.ranks[self._rank]}: {error.Get_error_string()}")

    def _numbered_op(self, name, arrays, async_op):
        """The :class:`~.watchdog.Op` of a collective called now, numbered in program order."""
        if self.next_call_counted:  # its number was taken by its cross-rank check, whose entry it replaces
            self.next_call_counted = False
            self.history.pop()
        else:
            self.seq += 1
        return self._record(Op(self, name, arrays, self.seq, async_op), call_site(3))

    def _record(self, op, site):
        """Make ``op``, called from ``site`` (forensics.call_site), the group's last call."""
        op.site = site
        self.last_op = op
        self.history.append(op)
        return op

    def _p2p(self, name, buf, **peer):
        """The watched (not numbered) Op of a blocking send or recv."""
        return Op(self, name, [buf], None, False, describe(name, buf, **peer))

    def check_due(self):
        # the call about to be made gets number seq + 1; >=: a call of several exchanges
        # (broadcast_object_list) may step over the number due
        return self.check_every and self.seq + 1 >= self.next_check

    def cross_check(self, label, site, every_call, async_op=False):
        if self.check_every:
            self.next_check = next_check(self.seq + 1, self.check_every)
        if async_op and self.thread is not None:  # run first in the call's task, on its lane (see _run)
            self.pending_check = (label, site_text(site), every_call)
            return None
        # numbered, recorded and watched as the call it checks (which then takes the same number)
        self.seq += 1
        op = self._record(Op(self, label.split("(", 1)[0], (), self.seq, False, label), site)
        self.next_call_counted = True
        with op:
            return self._exchange_calls(label, site_text(site), every_call)

    def _exchange_calls(self, label, site, every_call):
        """cross_check's exchanges, on the current thread's communicator: a hash all-reduce
        (unless ``every_call``), then, only if it shows a difference, every rank's description."""
        comm = self._comm()
        if not every_call:
            pair = hash_pair(label)
            mine = pair.tolist()
            comm.Allreduce(_MPI.IN_PLACE, pair, op=_MPI.MAX)
            if pair.tolist() == mine:
                return None
        calls = comm.allgather((label, site))
        return None if len({call for call, _ in calls}) == 1 else calls

    def _comm(self):
        """The async communicator on the comm thread, the group's own elsewhere."""
        return self.async_comm if self.thread is not None and self.thread.is_current() else self.comm

    def _shm(self, arrays, op):
        """The shared-memory all-reduce of the current thread's communicator for the NumPy
        ``arrays`` (one message) reduced with ``op``, or None where MPI's own is used."""
        shm = self.shm.get(id(self._comm()))  # None: not a group of one node
        return shm if shm is not None and takes(arrays, op.value, self.shm_min_bytes) else None

    def _coalesced(self, arrays, op, scale, finite_check=None):
        if all(type(a) is numpy.ndarray and a.flags.c_contiguous for a in arrays):
            # with finite_check the last array is its flag: the shared-memory path exchanges
            # the flags itself, fused with its copies (see finite_flags)
            flats = [a.reshape(-1) for a in (arrays if finite_check is None else arrays[:-1])]

            def run():  # on the thread that runs it: that thread's communicator
                shm = self._shm(flats, op)
                if shm is None:
                    return super(MPIProcessGroup, self)._coalesced(arrays, op, scale, finite_check)()
                shm.all_reduce(flats, op.value, scale, finite_check)
            return run
        return super()._coalesced(arrays, op, scale, finite_check)

    def _is_cuda_aware(self):
        if self.cuda_aware is None:
            self.cuda_aware = _cuda_aware()
        return self.cuda_aware

    @contextlib.contextmanager
    def _buffers(self, *arrays, out=()):
        """What MPI reads and writes: the arrays themselves, or host copies of CuPy arrays
        when MPI is not CUDA-aware (the copies at positions ``out`` go back afterwards)."""
        if not any(is_cuda_array(a) for a in arrays) or self._is_cuda_aware():
            yield [_mpi_view(a) for a in arrays]
            return
        host = [cupy.asnumpy(a) if is_cuda_array(a) else a for a in arrays]
        yield [_mpi_view(a) for a in host]
        for i in out:
            if arrays[i] is not None:
                arrays[i].set(host[i])
        cupy.cuda.get_current_stream().synchronize()

    # ---- primitives on flat contiguous buffers ----------------------------------------------
    def _allreduce(self, buf, op):
        shm = self._shm((buf,), op)
        if shm is not None:
            return shm.all_reduce([buf], op.value)
        shm = self.shm.get(id(self._comm()))
        if shm is not None:  # a peer that takes the shared-memory path for this call raises the mismatch error
            shm.announce(buf.size, buf.dtype, op.value)
        mop = _mpi_op(op, buf)
        hierarchy = self.hierarchy.get(id(self._comm()))
        if hierarchy is not None:  # a group across hosts
            on_thread = self._comm() is self.async_comm and self.thread.poll_s
            with self._buffers(buf, out=(0,)) as (b,):
                return hierarchy.all_reduce(buf, b, op, mop, self.thread.complete if on_thread else None)
        if not is_cuda_array(buf):  # host data goes as it is (the hot path's case)
            return self._allreduce_mpi(_mpi_view(buf), mop)
        with self._buffers(buf, out=(0,)) as (b,):
            self._allreduce_mpi(b, mop)

    def _allreduce_mpi(self, b, mop):
        """MPI's in-place all-reduce of a buffer MPI can read, with the MPI op ``mop``."""
        comm, in_place = self._comm(), _MPI.IN_PLACE
        if b.size <= chunking.MAX_COUNT:  # the common case, without slicing
            if comm is self.async_comm and self.thread.poll_s:  # on the comm thread: without spinning
                return self.thread.complete(comm.Iallreduce(in_place, b, op=mop))
            return comm.Allreduce(in_place, b, op=mop)
        for s in chunks(b.size):
            comm.Allreduce(in_place, b[s], op=mop)

    def _broadcast(self, buf, root):
        with self._buffers(buf, out=(0,)) as (b,):
            for s in chunks(b.size):
                self._comm().Bcast(b[s], root=root)

    def _reduce(self, buf, op, root):
        MPI, comm = mpi(), self._comm()
        with self._buffers(buf, out=(0,)) as (b,):
            for s in chunks(b.size):
                if self._rank == root:
                    comm.Reduce(MPI.IN_PLACE, b[s], op=_mpi_op(op, buf), root=root)
                else:
                    comm.Reduce(b[s], None, op=_mpi_op(op, buf), root=root)

    def _allgather(self, send, recv):
        comm = self._comm()
        with self._buffers(send, recv, out=(1,)) as (s, r):
            in_rounds(comm.Allgather, s, r, s.size, self.size(), send_blocks=False, recv_blocks=True)

    def _reduce_scatter(self, send, recv, op):
        comm, mop = self._comm(), _mpi_op(op, send)
        with self._buffers(send, recv, out=(1,)) as (s, r):
            in_rounds(lambda a, b: comm.Reduce_scatter_block(a, b, op=mop), s, r, r.size, self.size(),
                      send_blocks=True, recv_blocks=False)

    def _gather(self, send, recv, root):
        comm = self._comm()
        with self._buffers(send, recv, out=(1,)) as (s, r):
            in_rounds(lambda a, b: comm.Gather(a, b, root=root), s, r, s.size, self.size(),
                      send_blocks=False, recv_blocks=True)

    def _scatter(self, send, recv, root):
        comm = self._comm()
        with self._buffers(send, recv, out=(1,)) as (s, r):
            in_rounds(lambda a, b: comm.Scatter(a, b, root=root), s, r, r.size, self.size(),
                      send_blocks=True, recv_blocks=False)

    def _alltoallv(self, send, send_counts, recv, recv_counts):
        # counts may exceed 2^31 only with MPI-4 large counts, which mpi4py >= 4 uses when present
        send_displs = numpy.concatenate([[0], numpy.cumsum(send_counts)[:-1]]).tolist()
        recv_displs = numpy.concatenate([[0], numpy.cumsum(recv_counts)[:-1]]).tolist()
        with self._buffers(send, recv, out=(1,)) as (s, r):
            self._comm().Alltoallv([s, (list(send_counts), send_displs)], [r, (list(recv_counts), recv_displs)])

    def _barrier(self):
        self._comm().Barrier()

    # ---- point to point --------------------------------------------------------------------
    def _send(self, buf, dst, tag):
        _wait_for_stream(buf)
        with _on_device(_device(buf)), self._buffers(buf) as (b,), self._p2p("send", buf, dst=self.ranks[dst]):
            for s in chunks(b.size):
                self.comm.Send(b[s], dest=dst, tag=tag)

    def _recv(self, buf, src, tag):
        MPI, status = mpi(), mpi().Status()
        _wait_for_stream(buf)
        peer = "any" if src is None else self.ranks[src]
        with _on_device(_device(buf)), self._buffers(buf, out=(0,)) as (b,), self._p2p("recv", buf, src=peer):
            for s in chunks(b.size):
                self.comm.Recv(b[s], source=MPI.ANY_SOURCE if src is None else src, tag=tag, status=status)
                src = status.Get_source()  # later pieces come from the rank that sent the first
        return src

    def _isend(self, buf, dst, tag):
        _wait_for_stream(buf)
        with self._buffers(buf) as (b,):
            requests = [self.comm.Isend(b[s], dest=dst, tag=tag) for s in chunks(b.size)]
        return PollWork("isend", lambda: mpi().Request.Testall(requests), timeout=self.timeout)

    def _irecv(self, buf, src, tag, writeback):
        MPI = mpi()
        pieces = chunks(buf.size)
        if src is None and len(pieces) > 1:
            raise ValueError(f"irecv: a message of {buf.size} elements arrives in {len(pieces)} pieces, "
                             f"which need a known sender: give src")
        _wait_for_stream(buf)
        staged = is_cuda_array(buf) and not self._is_cuda_aware()
        target = cupy.asnumpy(buf) if staged else buf
        source = MPI.ANY_SOURCE if src is None else src
        requests = [self.comm.Irecv(_mpi_view(target)[s], source=source, tag=tag) for s in pieces]

        def finish():  # in the thread that waits: on the buffer's device
            with _on_device(_device(buf)):
                if staged:
                    buf.set(target)
                if writeback is not None:
                    writeback()
                if staged or is_cuda_array(buf):
                    cupy.cuda.get_current_stream().synchronize()
        return PollWork("irecv", lambda: MPI.Request.Testall(requests), finish, timeout=self.timeout)
