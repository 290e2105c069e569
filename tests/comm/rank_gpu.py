"""Rank script for test_comm_gpu.py: collectives on CuPy arrays against NumPy, with the
NCCL backend (``--backend nccl``) or the MPI backend moving GPU memory (``--backend mpi``).
The checks run and report through tests/rank_harness.py (``rank R: all N checks passed``)."""
import os
import sys

import cupy
import numpy as np

import dtrain
import dtrain.comm as dist
from dtrain.comm import ReduceOp
from rank_harness import RankChecks

backend = sys.argv[sys.argv.index("--backend") + 1]
checks = RankChecks(backend=backend)
RANK, N = checks.rank, checks.world_size
if backend == "mpi":  # rank r on GPU r % n: async results are written back on the comm thread, on this device
    dtrain.cuda.set_device(RANK % dtrain.cuda.device_count())
OPS = {ReduceOp.SUM: np.sum, ReduceOp.PRODUCT: np.prod, ReduceOp.MIN: np.min, ReduceOp.MAX: np.max,
       ReduceOp.AVG: lambda a, axis: np.sum(a, axis=axis) / N}


def make(rank, size, dtype, salt=0):
    values = np.random.default_rng(1000 * rank + size + salt).integers(1, 3, size)
    return values.astype(dtype)


def reductions():
    """One check per dtype, size and op (53): an async all_reduce of a CuPy array, then a
    blocking one of a dtrain tensor on this rank's GPU."""
    for dtype in (np.float32, np.float64, np.int64):
        for size in (0, 1, 7, 300_001):
            for op, ref in OPS.items():
                if op is ReduceOp.AVG and dtype == np.int64 or op is ReduceOp.PRODUCT and size > 100:
                    continue

                def all_reduce(dtype=dtype, size=size, op=op, ref=ref):
                    want = ref(np.stack([make(r, size, dtype) for r in range(N)]), axis=0)
                    a = cupy.asarray(make(RANK, size, dtype))
                    work = dist.all_reduce(a, op=op, async_op=True)
                    work.wait()
                    np.testing.assert_allclose(cupy.asnumpy(a), want, rtol=1e-6)
                    t = dtrain.tensor(make(RANK, size, dtype), device=f"cuda:{cupy.cuda.Device().id}")
                    dist.all_reduce(t, op=op)
                    np.testing.assert_allclose(t.cpu().numpy(), want, rtol=1e-6)

                checks.run(f"all_reduce {np.dtype(dtype).name} size {size} {op!r}", all_reduce)


def movement():
    size = 300_001
    a = cupy.asarray(make(RANK, size, np.float32))
    dist.broadcast(a, src=N - 1)
    np.testing.assert_array_equal(cupy.asnumpy(a), make(N - 1, size, np.float32))
    out = cupy.empty((N, size), cupy.float32)
    dist.all_gather_into_tensor(out, cupy.asarray(make(RANK, size, np.float32)))
    np.testing.assert_array_equal(cupy.asnumpy(out), np.stack([make(r, size, np.float32) for r in range(N)]))
    rs = cupy.empty(size, cupy.float64)
    dist.reduce_scatter_tensor(rs, cupy.asarray(make(RANK, size * N, np.float64)), op=ReduceOp.AVG)
    full = np.mean([make(r, size * N, np.float64) for r in range(N)], axis=0)
    np.testing.assert_allclose(cupy.asnumpy(rs), full[RANK * size:(RANK + 1) * size])
    outs = [cupy.empty(5, cupy.int64) for _ in range(N)] if RANK == 0 else None
    dist.gather(cupy.arange(5) * RANK, outs, dst=0)
    if RANK == 0:
        for r, o in enumerate(outs):
            np.testing.assert_array_equal(cupy.asnumpy(o), np.arange(5) * r)
    got = cupy.empty(3, cupy.float64)
    dist.scatter(got, [cupy.full(3, float(r)) for r in range(N)] if RANK == 0 else None, src=0)
    np.testing.assert_array_equal(cupy.asnumpy(got), np.full(3, float(RANK)))
    ins = [cupy.full(j + RANK + 1, 100 * RANK + j, cupy.int64) for j in range(N)]
    outs = [cupy.empty(RANK + i + 1, cupy.int64) for i in range(N)]
    dist.all_to_all(outs, ins)
    for i, o in enumerate(outs):
        np.testing.assert_array_equal(cupy.asnumpy(o), np.full(RANK + i + 1, 100 * i + RANK))


def point_to_point():
    """A ring shift: even ranks send first, odd ranks receive first, so no two ranks wait on
    each other's receive (NCCL queues each call on one stream: receives first everywhere
    would deadlock a GPU)."""
    nxt, prv = (RANK + 1) % N, (RANK - 1) % N
    got = cupy.empty(1000, cupy.float32)
    send = lambda: dist.isend(cupy.full(1000, float(RANK), cupy.float32), dst=nxt)  # noqa: E731
    recv = lambda: dist.irecv(got, src=prv)  # noqa: E731
    works = [send(), recv()] if RANK % 2 == 0 else [recv(), send()]
    for w in works:
        w.wait()
    np.testing.assert_array_equal(cupy.asnumpy(got), np.full(1000, float(prv)))


def float16_average():
    """AVG of float16 values whose sum overflows (2 x 40000 > 65504) is still 40000: ncclAvg
    (NCCL >= 2.10 pre-multiplies floats) or the division before the sum."""
    a = cupy.full(8, 40000, cupy.float16)
    dist.all_reduce(a, op=ReduceOp.AVG)
    np.testing.assert_array_equal(cupy.asnumpy(a), np.full(8, 40000, np.float16))


def wrong_device():
    """An NCCL group refuses a tensor on another GPU than its own, naming both."""
    other = (cupy.cuda.Device().id + 1) % cupy.cuda.runtime.getDeviceCount()
    with cupy.cuda.Device(other):
        b = cupy.ones(2)
    try:
        dist.all_reduce(b)
    except ValueError as e:
        assert f"a tensor on cuda:{other} given to the NCCL group of cuda:{cupy.cuda.Device().id}" in str(e), e
    else:
        raise AssertionError("all_reduce of a tensor on another GPU than the group's did not raise")


def host_and_objects():
    h = np.ones(4) * (RANK + 1)  # NumPy arrays still work (through MPI under NCCL)
    dist.all_reduce(h)
    np.testing.assert_array_equal(h, np.full(4, N * (N + 1) / 2))
    objs = [None] * N
    dist.all_gather_object(objs, {"rank": RANK})
    assert objs == [{"rank": r} for r in range(N)]
    dist.barrier()


def backend_and_device():
    assert dist.get_backend() == backend, dist.get_backend()
    if backend == "nccl":  # each rank on GPU cuda:local_rank
        assert cupy.cuda.Device().id == dist.get_local_rank(), (cupy.cuda.Device().id, dist.get_local_rank())


reductions()
checks.run("data movement", movement)
if N > 1:
    checks.run("point to point", point_to_point)
checks.run("host arrays and objects", host_and_objects)
# the emulated ncclAvg sums in float16 before dividing (real NCCL pre-multiplies floats): checked on real GPUs
if backend == "mpi" or not os.environ.get("DTRAIN_CUPY_EMULATION"):
    checks.run("float16 average", float16_average)
if backend == "nccl" and cupy.cuda.runtime.getDeviceCount() > 1:
    checks.run("a tensor on another GPU", wrong_device)
checks.run("the group's backend and device", backend_and_device)
checks.finish()
