"""``cupy.cuda.nccl`` emulated over MPI (mpi4py), with CuPy 14's signatures.

* ``get_unique_id()`` returns 128 bytes naming the creating process (its COMM_WORLD rank)
  and a sequence number; ``NcclCommunicator(ndev, commId: bytes, rank)`` refuses anything
  but bytes, as CuPy 14 does. The members report to the creator, which sends back the
  member table; they then build an MPI communicator of their own (``Create_group``, which
  involves the members only).
* Buffers are device pointers (``array.data.ptr``), mapped back to the emulated array's
  memory; a buffer on another device than the communicator's, or a stream of another
  device, is an ``NcclError``. Reductions gather every rank's bytes and reduce them in rank
  order in the buffer's dtype, so every rank gets bit-identical results (float16 included).
* Work happens eagerly; each call is logged as a launch on the given stream.
* ``groupStart()``/``groupEnd()``: calls in between are queued and run at the outermost
  ``groupEnd()``: point-to-point ones posted non-blocking first, then the collectives in
  order, then the point-to-point ones completed.
"""
import functools
import importlib.util
import itertools
import os
import struct
import threading
import time

import numpy

from . import core as A
from . import device as D

CONSTANTS = {"NCCL_INT8": 0, "NCCL_CHAR": 0, "NCCL_UINT8": 1, "NCCL_INT32": 2, "NCCL_INT": 2, "NCCL_UINT32": 3,
             "NCCL_INT64": 4, "NCCL_UINT64": 5, "NCCL_FLOAT16": 6, "NCCL_HALF": 6, "NCCL_FLOAT32": 7,
             "NCCL_FLOAT": 7, "NCCL_FLOAT64": 8, "NCCL_DOUBLE": 8, "NCCL_BFLOAT16": 9,
             "NCCL_SUM": 0, "NCCL_PROD": 1, "NCCL_MAX": 2, "NCCL_MIN": 3, "NCCL_AVG": 4}
_DTYPES = {0: "int8", 1: "uint8", 2: "int32", 3: "uint32", 4: "int64", 5: "uint64", 6: "float16", 7: "float32",
           8: "float64", 9: "bfloat16"}
_OPS = {0: numpy.add, 1: numpy.multiply, 2: numpy.maximum, 3: numpy.minimum, 4: numpy.add}
_ERRORS = {1: ("NCCL_ERROR_UNHANDLED_CUDA_ERROR", "unhandled cuda error"),
           3: ("NCCL_ERROR_INTERNAL_ERROR", "internal error"),
           4: ("NCCL_ERROR_INVALID_ARGUMENT", "invalid argument"),
           5: ("NCCL_ERROR_INVALID_USAGE", "invalid usage")}
_MAGIC = b"DTRAIN-EMULATED-NCCL"
_TAG = 32000  # member-table messages on COMM_WORLD: tags 32000-32699, far from dtrain's
_sequence = itertools.count()
_local = threading.local()


class NcclError(RuntimeError):
    """``cupy.cuda.nccl.NcclError``: "NCCL_ERROR_X: message"."""

    def __init__(self, status, detail=""):
        self.status = status
        name, message = _ERRORS.get(status, ("NCCL_ERROR_UNKNOWN", "unknown error"))
        super().__init__(f"{name}: {message}{f' ({detail})' if detail else ''}")


def _mpi():
    from mpi4py import MPI
    return MPI


def get_unique_id():
    """128 bytes (CuPy >= 14 returns bytes; <= 13 returned a tuple of ints)."""
    world = _mpi().COMM_WORLD.Get_rank()
    uid = _MAGIC + struct.pack("<iiQ", world, os.getpid(), next(_sequence))
    return uid + bytes(128 - len(uid))


def get_version():
    return 22703


def get_build_version():
    return 22703


def groupStart():
    _local.depth = getattr(_local, "depth", 0) + 1
    if _local.depth == 1:
        _local.queue = []


def groupEnd():
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        raise NcclError(5, "groupEnd without groupStart")
    _local.depth = depth - 1
    if _local.depth:
        return
    queue, _local.queue = _local.queue, []
    requests = [op() for kind, op in queue if kind == "p2p"]
    for kind, op in queue:
        if kind == "collective":
            op()
    _wait_p2p(requests, "a group of sends/recvs")


def _wait_p2p(requests, what):
    """Complete point-to-point requests. On a GPU they are queued and the host goes on, but a
    recv queued before the send its peer waits for deadlocks both streams; here the host
    waits, and requests unmatched after ``DTRAIN_EMULATION_P2P_TIMEOUT`` seconds (20) are
    that deadlock, reported instead of hanging."""
    MPI = _mpi()
    limit = float(os.environ.get("DTRAIN_EMULATION_P2P_TIMEOUT", "20"))
    deadline = time.monotonic() + limit
    while not MPI.Request.Testall(requests):
        if time.monotonic() > deadline:
            for r in requests:
                if r != MPI.REQUEST_NULL:
                    r.Cancel()
            MPI.Request.Waitall(requests)
            raise NcclError(3, f"{what} found no matching peer call within {limit:g} s; on a GPU this "
                               f"deadlocks (e.g. both ranks receive before they send on one stream): put "
                               f"the matching sends and recvs in one groupStart()/groupEnd()")
        time.sleep(1e-4)


def _in_group():
    return getattr(_local, "depth", 0) > 0


class NcclCommunicator:
    """``NcclCommunicator(int ndev, bytes commId, int rank, NcclConfig config=None)``."""

    def __init__(self, ndev, commId, rank, config=None):
        if not isinstance(commId, bytes):
            raise TypeError(f"Argument 'commId' has incorrect type (expected bytes, got {type(commId).__name__})")
        ndev, rank = int(ndev), int(rank)
        if len(commId) != 128 or not commId.startswith(_MAGIC):
            raise NcclError(4, "commId is not a unique id from get_unique_id()")
        if not 0 <= rank < ndev:
            raise NcclError(4, f"rank {rank} not in [0, {ndev})")
        root, _, seq = struct.unpack_from("<iiQ", commId, len(_MAGIC))
        MPI = _mpi()
        world = MPI.COMM_WORLD
        me, tag = world.Get_rank(), _TAG + seq % 700
        if me == root:
            table = {rank: me}
            for _ in range(ndev - 1):
                r, w = world.recv(source=MPI.ANY_SOURCE, tag=tag)
                table[r] = w
            if sorted(table) != list(range(ndev)):
                raise NcclError(5, f"ranks {sorted(table)} joined a communicator of {ndev}")
            members = [table[r] for r in range(ndev)]
            for w in members:
                if w != me:
                    world.send(members, dest=w, tag=tag)
        else:
            world.send((rank, me), dest=root, tag=tag)
            members = world.recv(source=root, tag=tag)
        self._mpi = world.Create_group(world.Get_group().Incl(members), tag=tag)
        self._rank, self._size, self._device = rank, ndev, D.current_id()
        self._pending = []
        self.comm = id(self)

    # ---- queries -----------------------------------------------------------------------
    def device_id(self):
        return self._device

    def rank_id(self):
        return self._rank

    def size(self):
        return self._size

    def destroy(self):
        if self._mpi is not None:
            _mpi().Request.Waitall(self._pending)
            self._mpi.Free()
            self._mpi = None

    def abort(self):
        self._mpi = None

    def check_async_error(self):
        if self._mpi is None:
            raise NcclError(5, "the communicator was destroyed or aborted")

    # ---- plumbing ------------------------------------------------------------------------
    def _buffer(self, ptr, count, datatype):
        if self._mpi is None:
            raise NcclError(5, "the communicator was destroyed or aborted")
        if datatype not in _DTYPES:
            raise NcclError(4, f"datatype {datatype}")
        dtype = _DTYPES[datatype]
        if dtype == "bfloat16":
            import ml_dtypes
            dtype = ml_dtypes.bfloat16
        try:
            view, dev = A.lookup(ptr, count, dtype)
        except LookupError as e:
            raise NcclError(4, str(e)) from None
        if dev != self._device:
            raise NcclError(4, f"a buffer on device {dev} given to the communicator of device {self._device}")
        return view

    def _launch(self, name, stream, op, kind="collective", reads=(), writes=()):
        s = D.stream_by_ptr(stream, self._device)
        if s is None:
            raise NcclError(1, f"stream {stream:#x} does not belong to device {self._device}")
        s.launch(f"nccl.{name}")
        for buf in reads:
            D.access(A._root(buf), s, f"nccl.{name}")
        for buf in writes:
            D.access(A._root(buf), s, f"nccl.{name}", write=True)
        if _in_group():
            _local.queue.append((kind, op))
            return None
        if kind == "p2p":
            self._pending.append(op())
            if name == "recv":
                try:
                    _wait_p2p(self._pending, f"rank {self._rank}: a recv outside groupStart()/groupEnd()")
                finally:
                    self._pending.clear()
            return None
        _mpi().Request.Waitall(self._pending)
        self._pending.clear()
        return op()

    def _gather_all(self, send):
        """Every rank's ``send`` (a NumPy view), stacked in rank order."""
        everyone = numpy.empty((self._size, send.size), send.dtype)
        self._mpi.Allgather(send.view(numpy.uint8), everyone.view(numpy.uint8))
        return everyone

    @staticmethod
    def _reduce(parts, op):
        r = functools.reduce(_OPS[op], parts[1:], parts[0].copy())
        if op == 4:
            n = len(parts)
            r = (r / n).astype(r.dtype) if r.dtype.kind == "f" or str(r.dtype) == "bfloat16" else r // n
        return r

    # ---- collectives ---------------------------------------------------------------------
    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        send, recv = self._buffer(sendbuf, count, datatype), self._buffer(recvbuf, count, datatype)
        self._check_op(op)

        def run():
            recv[...] = self._reduce(self._gather_all(send), op)
        self._launch("allReduce", stream, run, reads=[send], writes=[recv])

    def reduce(self, sendbuf, recvbuf, count, datatype, op, root, stream):
        send = self._buffer(sendbuf, count, datatype)
        recv = self._buffer(recvbuf, count, datatype) if self._rank == root else None
        self._check_op(op)

        def run():
            parts = self._gather_all(send)
            if recv is not None:
                recv[...] = self._reduce(parts, op)
        self._launch("reduce", stream, run, reads=[send], writes=[recv] if recv is not None else [])

    def bcast(self, buff, count, datatype, root, stream):
        buf = self._buffer(buff, count, datatype)
        self._launch("bcast", stream, lambda: self._mpi.Bcast(buf.view(numpy.uint8), root=root), reads=[buf],
                     writes=[buf])

    def broadcast(self, sendbuff, recvbuff, count, datatype, root, stream):
        recv = self._buffer(recvbuff, count, datatype)
        send = self._buffer(sendbuff, count, datatype) if self._rank == root else None

        def run():
            if send is not None:
                recv[...] = send
            self._mpi.Bcast(recv.view(numpy.uint8), root=root)
        self._launch("broadcast", stream, run, reads=[send] if send is not None else [], writes=[recv])

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):
        send = self._buffer(sendbuf, count, datatype)
        recv = self._buffer(recvbuf, count * self._size, datatype)

        def run():
            recv[...] = self._gather_all(send).reshape(-1)
        self._launch("allGather", stream, run, reads=[send], writes=[recv])

    def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):
        send = self._buffer(sendbuf, recvcount * self._size, datatype)
        recv = self._buffer(recvbuf, recvcount, datatype)
        self._check_op(op)

        def run():
            mine = slice(self._rank * recvcount, (self._rank + 1) * recvcount)
            recv[...] = self._reduce(self._gather_all(send)[:, mine], op)
        self._launch("reduceScatter", stream, run, reads=[send], writes=[recv])

    # ---- point to point ------------------------------------------------------------------
    def send(self, sendbuf, count, datatype, peer, stream):
        buf = self._buffer(sendbuf, count, datatype)
        self._check_peer(peer)
        self._launch("send", stream, lambda: self._mpi.Isend(buf.view(numpy.uint8), dest=peer, tag=0), "p2p",
                     reads=[buf])

    def recv(self, recvbuf, count, datatype, peer, stream):
        buf = self._buffer(recvbuf, count, datatype)
        self._check_peer(peer)
        self._launch("recv", stream, lambda: self._mpi.Irecv(buf.view(numpy.uint8), source=peer, tag=0), "p2p",
                     writes=[buf])

    def _check_op(self, op):
        if op not in _OPS:
            raise NcclError(4, f"reduction op {op}")

    def _check_peer(self, peer):
        if not 0 <= peer < self._size:
            raise NcclError(4, f"peer {peer} not in [0, {self._size})")

    @staticmethod
    def initAll(devices):
        raise NotImplementedError("the emulation runs one device per process: NcclCommunicator(ndev, id, rank)")


def build(module):
    """Fill ``module`` as ``cupy.cuda.nccl``."""
    for name, value in CONSTANTS.items():
        setattr(module, name, value)
    module.available = importlib.util.find_spec("mpi4py") is not None
    for name in ("NcclCommunicator", "NcclError", "get_unique_id", "get_version", "get_build_version",
                 "groupStart", "groupEnd"):
        setattr(module, name, globals()[name])
    return module

