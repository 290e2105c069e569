"""The NCCL backend, through ``cupy.cuda.nccl``.

* Each rank uses GPU ``cuda:(local_rank % device_count)`` (one GPU visible per rank, as
  under SLURM's GPU binding, gives device 0 to every local rank), made current before its
  communicator is built.
* Rank 0 of a group makes the NCCL unique id and broadcasts it over the group's MPI
  communicator; every member then joins the NCCL communicator with it (``bytes`` on
  CuPy >= 14, a tuple of ints on CuPy <= 13: passed on in the form it was made in).
* Collectives run on the group's own CUDA stream, after an event recorded on the caller's
  current stream (so they see the producer's writes) and without blocking the host: the
  caller keeps queuing work while NCCL runs. A blocking collective makes the caller's
  stream wait for it; ``Work.wait()`` does the same (``wait(timeout)`` blocks the host).
* Every operation is numbered per group and watched by the process's watchdog until its
  end event has passed: past the group's timeout, or when the communicator reports an
  asynchronous error (a dead peer), the communicator is aborted and the job ends with a
  report naming the operation, its number and the ranks (see :mod:`.watchdog`).
* AVG is NCCL's own ``ncclAvg`` (NCCL >= 2.10); with an older NCCL, a SUM and one division
  in the buffer's dtype, the division first for 16-bit floats (their sum may overflow).
  Bool buffers travel as bytes and complex ones as pairs of reals.
* Host (NumPy) tensors and pickled objects go through the MPI group underneath, so a
  script may mix CPU and GPU tensors. NCCL has no message tags: ``tag`` is ignored, and
  ``recv`` needs an explicit ``src``.
"""
import time

from ..tensor.backend import cuda_device_count, cupy, device_of, is_cuda_array
from .errors import DistBackendError
from .chunking import chunks, in_rounds
from .process_group import ProcessGroup, ReduceOp
from .forensics import call_site, new_history
from .watchdog import Op
from .work import Work

AVG_VERSION = 21000  # ncclAvg appeared in NCCL 2.10.0 (versions code as major*10000 + minor*100 + patch)


def _module():
    """``cupy.cuda.nccl``, or None when CuPy or its NCCL binding cannot be loaded.

    CuPy <= 13 reports a missing NCCL with ``cupy.cuda.nccl_enabled = False`` (or an
    ImportError); CuPy 14 imports ``cupy.cuda.nccl`` anyway and sets its ``available`` to False."""
    if cupy is None or not getattr(cupy.cuda, "nccl_enabled", True):
        return None
    try:
        from cupy.cuda import nccl
    except ImportError:
        return None
    return nccl if getattr(nccl, "available", True) else None


def comm_id(uid):
    """A unique id as ``NcclCommunicator`` takes it: ``bytes`` as CuPy >= 14's
    ``get_unique_id()`` returns it, a tuple of ints as CuPy <= 13's (a list, as it may come
    back from a transport, becomes the tuple).

    Example:
        >>> comm_id(nccl.get_unique_id())  # bytes on CuPy 14
    """
    if isinstance(uid, (bytes, bytearray, memoryview)):
        return bytes(uid)
    if isinstance(uid, (tuple, list)) and all(isinstance(c, int) for c in uid):
        return tuple(uid)
    raise TypeError(f"NCCL unique id: expected bytes (CuPy >= 14) or a tuple of ints (CuPy <= 13), "
                    f"got {type(uid).__name__}")


def has_avg(nccl):
    """Whether this NCCL reduces with ``ncclAvg`` (NCCL >= 2.10, and a CuPy that names it)."""
    if not hasattr(nccl, "NCCL_AVG"):
        return False
    try:
        return nccl.get_version() >= AVG_VERSION
    except Exception:  # the library cannot tell: SUM + division is right everywhere
        return False


def missing():
    """Why the NCCL backend cannot run here (a message with the fix), or None if it can."""
    if cupy is None:
        return "CuPy is not installed; install it with `pip install dtrain[cuda]` (CuPy for CUDA 12)"
    if cuda_device_count() == 0:
        return "CuPy sees no CUDA device (no GPU or no driver); use backend='mpi' on CPUs"
    if _module() is None:
        return ("CuPy cannot load NCCL; install it with `pip install nvidia-nccl-cu12` "
                "(or `python -m cupyx.tools.install_library --library nccl --cuda 12.x`)")
    return None


def _dtype(nccl, dtype):
    if dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (host arrays, e.g. the emulation's), or uint16 bits below
        return nccl.NCCL_BFLOAT16
    table = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
             "int8": nccl.NCCL_INT8, "uint8": nccl.NCCL_UINT8, "int32": nccl.NCCL_INT32,
             "uint32": nccl.NCCL_UINT32, "int64": nccl.NCCL_INT64, "uint64": nccl.NCCL_UINT64}
    if dtype.name not in table:
        raise TypeError(f"the NCCL backend cannot move dtype {dtype}; supported: {', '.join(table)}, bool, complex")
    return table[dtype.name]


def _as_nccl(buf):
    """The same bytes as a dtype NCCL knows: bool as uint8, complex as pairs of reals."""
    if buf.dtype.kind == "b":
        return buf.view(cupy.uint8)
    if buf.dtype.kind == "c":
        return buf.view(cupy.float32 if buf.dtype.itemsize == 8 else cupy.float64)
    return buf


class CudaWork(Work):
    """Handle of an operation queued on a CUDA stream; ``event`` marks its end.

    ``wait()`` makes the caller's current stream wait for the event (the host goes on, as
    in PyTorch's NCCL backend); ``wait(timeout)`` blocks the host until the event or the
    timeout. ``keep`` holds the buffers until then.
    """

    def __init__(self, name, event, keep, timeout=None, explain=None, device=None):
        super().__init__(name, timeout, explain)
        self.event, self.keep, self.device = event, keep, device

    def wait(self, timeout=None):
        if timeout is None:
            with cupy.cuda.Device(self.device):  # the stream that will use the result: the device's
                cupy.cuda.get_current_stream().wait_event(self.event)
            return True
        return super().wait(timeout)

    def is_completed(self):
        return self.event.done

    def _wait(self, limit):
        deadline = time.monotonic() + limit
        while not self.event.done:
            if time.monotonic() > deadline:
                return False
            time.sleep(1e-4)
        return True


class NCCLProcessGroup(ProcessGroup):
    """A group whose GPU tensors move through NCCL and host tensors through MPI.

    Args:
        host: the :class:`~.mpi.MPIProcessGroup` of the same ranks (bootstrap, host data, objects).
        local_rank: this rank's local rank; its GPU is ``local_rank % device_count``.
        timeout: seconds an operation may take before the watchdog ends the job; the
            default of ``Work.wait(timeout)``.
    """

    def __init__(self, host, local_rank, timeout=None):
        super().__init__("nccl", host.rank(), host.ranks, timeout)
        problem = missing()
        if problem is not None:
            raise DistBackendError(f"backend 'nccl': {problem}")
        self.nccl, self.host_group = _module(), host
        self.device = local_rank % cuda_device_count()
        self.avg = has_avg(self.nccl)
        # numbered and watched as the MPI groups are; the key differs from the host group's
        self.watchdog, self.gid = host.watchdog, ("nccl", host.gid)
        self.seq, self.last_op = 0, "nothing"
        self.history = new_history()  # the last collectives with their call sites, for a timeout's report
        if self.watchdog is not None:
            self.watchdog.groups[self.gid] = self
        cupy.cuda.Device(self.device).use()  # before the communicator: NCCL binds it to the current device
        self.stream = cupy.cuda.Stream(non_blocking=True)
        uid = [self.nccl.get_unique_id() if self._rank == 0 else None]
        host.broadcast_object_list(uid, src=0)
        self.comm = self.nccl.NcclCommunicator(self.size(), comm_id(uid[0]), self._rank)

    def new_subgroup(self, ranks, timeout):
        host = self.host_group.new_subgroup(ranks, timeout)
        return None if host is None else NCCLProcessGroup(host, self.device, timeout)

    def destroy(self):
        self.stream.synchronize()
        if self.watchdog is not None:
            self.watchdog.groups.pop(self.gid, None)
        self.comm.destroy()
        self.host_group.destroy()

    def _group_for(self, array):
        return self if is_cuda_array(array) else self.host_group

    def _group_for_host(self):
        return self.host_group

    def barrier(self, async_op=False):
        work = super().barrier(async_op=True)
        if async_op:
            return work
        work.event.synchronize()  # a barrier holds the host, not just the stream

    # ---- how an operation runs ----------------------------------------------------------
    def _run(self, name, fn, arrays, async_op, seq=True):
        for a in arrays:
            if is_cuda_array(a) and a.device.id != self.device:
                raise ValueError(f"{name}: a tensor on {device_of(a)} given to the NCCL group of cuda:{self.device} "
                                 f"(rank {self.ranks[self._rank]}); move it with .to('cuda:{self.device}')")
        op = Op(self, name, arrays, self.seq + 1 if seq else None, async_op)
        if seq:  # numbered and recorded as the MPI groups do theirs; point-to-point calls are not
            self.seq, self.last_op, op.site = self.seq + 1, op, call_site(2)
            self.history.append(op)
        with cupy.cuda.Device(self.device):  # events and the caller's stream: this group's device
            caller = cupy.cuda.get_current_stream()
            ready = cupy.cuda.Event(disable_timing=True)
            ready.record(caller)
            self.stream.wait_event(ready)
            op.watch_device(self.comm)
            try:
                with self.stream:
                    fn()
            except BaseException:  # refused before reaching NCCL (e.g. a dtype): nothing left to watch
                if self.watchdog is not None:
                    self.watchdog.ops.discard(op)
                raise
            done = cupy.cuda.Event(disable_timing=True)
            done.record(self.stream)
            op.event = done
            if async_op:
                return CudaWork(name, done, (fn, arrays), self.timeout, op.timeout_message, self.device)
            caller.wait_event(done)
        return None

    def _native_avg(self, buf):
        return self.avg and is_cuda_array(buf)

    def _op(self, op):
        n = self.nccl
        if op is ReduceOp.AVG:
            return n.NCCL_AVG
        return {ReduceOp.SUM: n.NCCL_SUM, ReduceOp.PRODUCT: n.NCCL_PROD, ReduceOp.MIN: n.NCCL_MIN,
                ReduceOp.MAX: n.NCCL_MAX}[op]

    def _reduction(self, buf, op):
        if buf.dtype.kind == "c" and op not in (ReduceOp.SUM, ReduceOp.AVG):
            raise TypeError(f"the NCCL backend reduces complex tensors with SUM/AVG only, got {op!r}")
        b = _as_nccl(buf)
        return b, _dtype(self.nccl, b.dtype), self._op(op)

    # ---- primitives on flat contiguous device buffers ---------------------------------------
    # Empty buffers (whose pointer may be null) are skipped: every rank has the same sizes,
    # so every rank skips the same calls.
    def _allreduce(self, buf, op):
        b, dt, nop = self._reduction(buf, op)
        if b.size:
            self.comm.allReduce(b.data.ptr, b.data.ptr, b.size, dt, nop, self.stream.ptr)

    def _broadcast(self, buf, root):
        b = _as_nccl(buf)
        dt = _dtype(self.nccl, b.dtype)
        for s in chunks(b.size) if b.size else ():  # ncclBcast's count is an int in CuPy's binding
            self.comm.bcast(b[s].data.ptr, s.stop - s.start, dt, root, self.stream.ptr)

    def _reduce(self, buf, op, root):
        b, dt, nop = self._reduction(buf, op)
        if b.size:
            self.comm.reduce(b.data.ptr, b.data.ptr, b.size, dt, nop, root, self.stream.ptr)

    def _allgather(self, send, recv):
        s, r = _as_nccl(send), _as_nccl(recv)
        dt = _dtype(self.nccl, s.dtype)
        if s.size:
            in_rounds(lambda a, b: self.comm.allGather(a.data.ptr, b.data.ptr, a.size, dt, self.stream.ptr),
                      s, r, s.size, self.size(), send_blocks=False, recv_blocks=True)

    def _reduce_scatter(self, send, recv, op):
        s, dt, nop = self._reduction(send, op)
        r = _as_nccl(recv)
        if r.size:
            in_rounds(lambda a, b: self.comm.reduceScatter(a.data.ptr, b.data.ptr, b.size, dt, nop, self.stream.ptr),
                      s, r, r.size, self.size(), send_blocks=True, recv_blocks=False)

    def _exchange(self, sends, recvs):
        """One NCCL group of point-to-point calls: ``sends``/``recvs`` are (peer, buffer) pairs."""
        nccl, stream = self.nccl, self.stream.ptr
        nccl.groupStart()
        try:
            for peer, buf in sends:
                b = _as_nccl(buf)
                if b.size:
                    self.comm.send(b.data.ptr, b.size, _dtype(nccl, b.dtype), peer, stream)
            for peer, buf in recvs:
                b = _as_nccl(buf)
                if b.size:
                    self.comm.recv(b.data.ptr, b.size, _dtype(nccl, b.dtype), peer, stream)
        finally:
            nccl.groupEnd()

    def _gather(self, send, recv, root):
        if self._rank != root:
            return self._exchange([(root, send)], [])
        k = send.size
        recv[root * k:(root + 1) * k] = send
        self._exchange([], [(r, recv[r * k:(r + 1) * k]) for r in range(self.size()) if r != root])

    def _scatter(self, send, recv, root):
        if self._rank != root:
            return self._exchange([], [(root, recv)])
        k = recv.size
        recv[...] = send[root * k:(root + 1) * k]
        self._exchange([(r, send[r * k:(r + 1) * k]) for r in range(self.size()) if r != root], [])

    def _alltoallv(self, send, send_counts, recv, recv_counts):
        def pieces(buf, counts):
            starts = [sum(counts[:i]) for i in range(len(counts))]
            return [(r, buf[s:s + c]) for r, (s, c) in enumerate(zip(starts, counts))]
        self._exchange(pieces(send, send_counts), pieces(recv, recv_counts))

    def _barrier(self):
        self._allreduce(cupy.zeros(1, cupy.float32), ReduceOp.SUM)

    # ---- point to point (NCCL has no tags) ----------------------------------------------------
    def _send(self, buf, dst, tag):
        self._run("send", lambda: self._exchange([(dst, buf)], []), [buf], False, seq=False)

    def _recv(self, buf, src, tag):
        self._run("recv", lambda: self._exchange([], [(self._need_src(src), buf)]), [buf], False, seq=False)
        return src

    def _isend(self, buf, dst, tag):
        return self._run("isend", lambda: self._exchange([(dst, buf)], []), [buf], True, seq=False)

    def _irecv(self, buf, src, tag, writeback):
        def run():
            self._exchange([], [(self._need_src(src), buf)])
            if writeback is not None:
                writeback()
        return self._run("irecv", run, [buf], True, seq=False)

    # ---- bfloat16 (CuPy has no bfloat16 dtype) -------------------------------------------------
    def all_reduce_bfloat16(self, bits, async_op=False):
        """All-reduce (SUM) a uint16 CuPy array holding bfloat16 values (the upper halves of
        float32s) as NCCL_BFLOAT16: half the bytes of float32, summed by NCCL in bfloat16.

        Returns a Work if ``async_op`` else None."""
        if not is_cuda_array(bits) or bits.dtype != cupy.uint16 or not bits.flags.c_contiguous:
            raise TypeError(f"all_reduce_bfloat16: expected a contiguous uint16 CuPy array of bfloat16 bit "
                            f"patterns, got {type(bits).__name__} of dtype {bits.dtype}")
        flat = bits.reshape(-1)

        def run():
            if flat.size:
                self.comm.allReduce(flat.data.ptr, flat.data.ptr, flat.size, self.nccl.NCCL_BFLOAT16,
                                    self.nccl.NCCL_SUM, self.stream.ptr)
        return self._run("all_reduce_bfloat16", run, [bits], async_op)

    def _need_src(self, src):
        if src is None:
            raise ValueError("recv/irecv with the NCCL backend need src: NCCL cannot receive from any rank")
        return src
