"""One rank of the emulated-NCCL check (tests/test_emulation.py starts 2 under mpiexec): rank r
uses emulated device r; every collective and a grouped send/recv pair, against NumPy; CuPy
14's refusals (a tuple id, a buffer on another device). Prints "rank R: ok" when all hold."""
import os

import numpy as np

import emulation  # the package around this script: tests/ is on PYTHONPATH (tests/conftest.py puts it there)
from mpi4py import MPI

world = MPI.COMM_WORLD
rank, n = world.Get_rank(), world.Get_size()
cp = emulation.modules(n)["cupy"]
nccl = cp.cuda.nccl
cp.cuda.Device(rank).use()
stream = cp.cuda.Stream(non_blocking=True)
uid = world.bcast(nccl.get_unique_id() if rank == 0 else None, root=0)
assert isinstance(uid, bytes) and len(uid) == 128
try:
    nccl.NcclCommunicator(n, tuple(uid), rank)
    raise AssertionError("a tuple id was accepted")
except TypeError as e:
    assert "expected bytes, got tuple" in str(e), e
comm = nccl.NcclCommunicator(n, uid, rank)  # every call below runs on `stream`, ordered by events
assert (comm.rank_id(), comm.size(), comm.device_id()) == (rank, n, rank)
F32, F16 = nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT16


def ready():
    """The NCCL stream waits for the work queued so far on the current stream (as dtrain's _run)."""
    stream.wait_event(cp.cuda.get_current_stream().record())
    return stream.ptr


def host(a):
    cp.cuda.get_current_stream().wait_event(stream.record())
    return cp.asnumpy(a)


x = cp.arange(6, dtype=cp.float32) + rank
comm.allReduce(x.data.ptr, x.data.ptr, x.size, F32, nccl.NCCL_SUM, ready())
np.testing.assert_array_equal(host(x), sum(np.arange(6, dtype=np.float32) + r for r in range(n)))

h = cp.full(4, rank + 1, dtype=cp.float16)
comm.allReduce(h.data.ptr, h.data.ptr, h.size, F16, nccl.NCCL_AVG, ready())
np.testing.assert_array_equal(host(h), np.full(4, (n + 1) / 2, np.float16))

b = cp.full(3, rank, dtype=cp.float32)
comm.bcast(b.data.ptr, b.size, F32, 1, ready())
np.testing.assert_array_equal(host(b), np.full(3, 1, np.float32))

# named: a pointer keeps nothing alive
r, mine = cp.zeros(3, dtype=cp.float32), cp.full(3, rank + 1.0, dtype=cp.float32)
comm.reduce(mine.data.ptr, r.data.ptr, 3, F32, nccl.NCCL_MAX, 0, ready())
np.testing.assert_array_equal(host(r), np.full(3, n if rank == 0 else 0, np.float32))

g, mine = cp.zeros(2 * n, dtype=cp.float32), cp.full(2, rank, dtype=cp.float32)
comm.allGather(mine.data.ptr, g.data.ptr, 2, F32, ready())
np.testing.assert_array_equal(host(g), np.repeat(np.arange(n, dtype=np.float32), 2))

s, mine = cp.zeros(2, dtype=cp.float32), cp.arange(2 * n, dtype=cp.float32)
comm.reduceScatter(mine.data.ptr, s.data.ptr, 2, F32, nccl.NCCL_SUM, ready())
np.testing.assert_array_equal(host(s), n * np.arange(2 * rank, 2 * rank + 2, dtype=np.float32))

out, got = cp.full(5, rank, dtype=cp.float32), cp.zeros(5, dtype=cp.float32)
peer = (rank + 1) % n
nccl.groupStart()
comm.send(out.data.ptr, 5, F32, peer, ready())
comm.recv(got.data.ptr, 5, F32, (rank - 1) % n, ready())
nccl.groupEnd()
np.testing.assert_array_equal(host(got), np.full(5, (rank - 1) % n, np.float32))

with cp.cuda.Device((rank + 1) % n):
    elsewhere = cp.zeros(2, dtype=cp.float32)
try:
    comm.allReduce(elsewhere.data.ptr, elsewhere.data.ptr, 2, F32, nccl.NCCL_SUM, stream.ptr)
    raise AssertionError("a buffer on another device was accepted")
except nccl.NcclError as e:
    assert "NCCL_ERROR_INVALID_ARGUMENT" in str(e), e

os.environ["DTRAIN_EMULATION_P2P_TIMEOUT"] = "1"
try:  # both ranks receive first, outside a group: a deadlock on a GPU, reported here
    comm.recv(got.data.ptr, 5, F32, peer, ready())
    raise AssertionError("an unmatched recv returned")
except nccl.NcclError as e:
    assert "found no matching peer call" in str(e), e
world.Barrier()

unordered = cp.ones(3, dtype=cp.float32)  # written on the current stream, which the NCCL stream did not wait for
try:
    comm.allReduce(unordered.data.ptr, unordered.data.ptr, 3, F32, nccl.NCCL_SUM, stream.ptr)
    raise AssertionError("an unordered read was accepted")
except emulation.device.StreamOrderError as e:
    assert "nccl.allReduce" in str(e) and "no event wait" in str(e), e

assert [k for k, _ in stream.log].count("launch") == 10, list(stream.log)
comm.destroy()
print(f"rank {rank}: ok", flush=True)
