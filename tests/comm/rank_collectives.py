"""Rank script: every collective of dtrain.comm against NumPy, run by test_comm_collectives.py
as ``mpiexec -n N python tests/comm/rank_collectives.py`` for N = 1, 2, 4, and by
test_comm_api.py as a lone process without MPI (the world-size-1 group).

Every rank can compute every rank's input (``make(rank, ...)`` is seeded by rank), so each
checks its own result against a NumPy computation of the expected one. The checks run and
report through tests/rank_harness.py (``rank R: all N checks passed``, N counted by
comm_helpers.collective_checks).
"""
import time
import warnings

import numpy as np

import dtrain
import dtrain.comm as dist
from dtrain.comm import ReduceOp, chunking
from dtrain.comm.env import discover
from rank_harness import RankChecks

checks = RankChecks(backend="mpi")
RANK, N = checks.rank, checks.world_size
DTYPES = (np.float16, np.float32, np.float64, np.int64)  # Open MPI 4 has no MPI type for float16
RTOL = {np.float16: 4e-3, np.float32: 1e-5, np.float64: 1e-12}
SIZES = (0, 1, 7, 300_001)  # 300_001 float32 > 1 MiB
OPS = (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX)
REDUCE = {ReduceOp.SUM: np.sum, ReduceOp.PRODUCT: np.prod, ReduceOp.MIN: np.min, ReduceOp.MAX: np.max,
          ReduceOp.AVG: lambda a, axis: np.sum(a, axis=axis) / N}
def make(rank, size, dtype, op=ReduceOp.SUM, salt=0):
    """Rank ``rank``'s input: small integers, or values near 1 for PRODUCT (no overflow)."""
    rng = np.random.default_rng(1000 * rank + 7 * size + salt)
    if op is ReduceOp.PRODUCT:
        values = rng.integers(1, 3, size) if np.dtype(dtype).kind == "i" or size > 100 else rng.uniform(0.5, 1.5, size)
        if size > 100:  # a long product of 1s and 2s would overflow: mostly ones
            values = np.where(rng.random(size) < 0.002, values, 1)
    else:
        values = rng.integers(-50, 50, size)
    return np.asarray(values).astype(dtype)


def expected(size, dtype, op, salt=0):
    stack = np.stack([make(r, size, dtype, op, salt) for r in range(N)])
    return REDUCE[op](stack, axis=0) if size else np.zeros(0, dtype)


def close(got, want, dtype):
    got = got.numpy() if isinstance(got, dtrain.Tensor) else got
    assert got.dtype == np.dtype(dtype), f"dtype {got.dtype} != {np.dtype(dtype)}"
    if np.dtype(dtype).kind == "f":
        np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)


def reductions():
    for dtype in DTYPES:
        for size in SIZES:
            for op in OPS:
                if op is ReduceOp.AVG and dtype == np.int64:
                    continue
                case = f"{np.dtype(dtype).name} size {size} {op!r}"

                def all_reduce(op=op, dtype=dtype, size=size):
                    t = dtrain.tensor(make(RANK, size, dtype, op))  # a Tensor in, reduced in place
                    dist.all_reduce(t, op=op)
                    close(t, expected(size, dtype, op), dtype)

                def all_reduce_async(op=op, dtype=dtype, size=size):
                    a = make(RANK, size, dtype, op)
                    work = dist.all_reduce(a, op=op, async_op=True)
                    assert work.wait() is True and work.is_completed()
                    close(a, expected(size, dtype, op), dtype)

                def reduce(op=op, dtype=dtype, size=size):
                    a = make(RANK, size, dtype, op)
                    dist.reduce(a, dst=N - 1, op=op)
                    close(a, expected(size, dtype, op) if RANK == N - 1 else make(RANK, size, dtype, op), dtype)

                def reduce_scatter_tensor(op=op, dtype=dtype, size=size):
                    inp = make(RANK, size * N, dtype, op)
                    out = np.empty(size, dtype)
                    dist.reduce_scatter_tensor(out, inp, op=op)
                    close(out, expected(size * N, dtype, op)[RANK * size:(RANK + 1) * size], dtype)

                for fn in (all_reduce, all_reduce_async, reduce, reduce_scatter_tensor):
                    checks.run(f"{fn.__name__} {case}", fn)
    checks.run("all_reduce of a non-contiguous view writes back", non_contiguous)
    checks.run("reduce_scatter of a list", reduce_scatter_list)
    checks.run("bool SUM is or, PRODUCT is and", bool_reduce)


def non_contiguous():
    base = np.zeros((6, 4), np.float64)
    view = base[:, 1]  # stride 32 bytes
    view[...] = RANK + 1
    dist.all_reduce(view)
    assert (base[:, 1] == N * (N + 1) / 2).all() and (base[:, 0] == 0).all(), base


def reduce_scatter_list():
    ins = [make(RANK, 5, np.float64, salt=i) for i in range(N)]
    out = np.empty(5)
    dist.reduce_scatter(out, ins, op=ReduceOp.MAX)
    close(out, np.max([make(r, 5, np.float64, salt=RANK) for r in range(N)], axis=0), np.float64)


def bool_reduce():
    a = np.array([RANK == 0, False, True])
    b = a.copy()
    dist.all_reduce(a, op=ReduceOp.SUM)
    dist.all_reduce(b, op=ReduceOp.PRODUCT)
    np.testing.assert_array_equal(a, [True, False, True])
    np.testing.assert_array_equal(b, [N == 1, False, True])


def data_movement():
    for dtype in DTYPES:
        for size in SIZES:
            case = f"{np.dtype(dtype).name} size {size}"

            def broadcast(dtype=dtype, size=size):
                for src in {0, N - 1}:
                    a = make(RANK, size, dtype)
                    dist.broadcast(a, src=src)
                    close(a, make(src, size, dtype), dtype)

            def all_gather(dtype=dtype, size=size):
                outs = [dtrain.zeros(size, dtype=dtype) for _ in range(N)]
                dist.all_gather(outs, dtrain.tensor(make(RANK, size, dtype)))
                for r, o in enumerate(outs):
                    close(o, make(r, size, dtype), dtype)

            def all_gather_into_tensor(dtype=dtype, size=size):
                want = np.stack([make(r, size, dtype) for r in range(N)])
                out = np.empty((N, size), dtype)  # the stacked layout
                dist.all_gather_into_tensor(out, make(RANK, size, dtype))
                close(out, want, dtype)
                flat = np.empty(N * size, dtype)  # the concatenated layout, async
                dist.all_gather_into_tensor(flat, make(RANK, size, dtype), async_op=True).wait()
                close(flat, want.reshape(-1), dtype)

            def gather_scatter(dtype=dtype, size=size):
                for root in {0, N - 1}:
                    outs = [np.empty(size, dtype) for _ in range(N)] if RANK == root else None
                    dist.gather(make(RANK, size, dtype), outs, dst=root)
                    if RANK == root:
                        for r, o in enumerate(outs):
                            close(o, make(r, size, dtype), dtype)
                    got = np.empty(size, dtype)
                    dist.scatter(got, [make(root, size, dtype, salt=r) for r in range(N)] if RANK == root else None,
                                 src=root)
                    close(got, make(root, size, dtype, salt=RANK), dtype)

            for fn in (broadcast, all_gather, all_gather_into_tensor, gather_scatter):
                checks.run(f"{fn.__name__} {case}", fn)
    checks.run("all_to_all with a different size per pair", all_to_all)
    checks.run("all_to_all_single with splits", all_to_all_single)


def all_to_all():
    # rank i sends j + i + 1 elements to rank j, filled with 100 i + j
    ins = [np.full(j + RANK + 1, 100 * RANK + j, np.int64) for j in range(N)]
    outs = [np.empty(RANK + i + 1, np.int64) for i in range(N)]
    dist.all_to_all(outs, ins)
    for i, o in enumerate(outs):
        np.testing.assert_array_equal(o, np.full(RANK + i + 1, 100 * i + RANK))


def all_to_all_single():
    inp = np.arange(N * 3, dtype=np.float32).reshape(N, 3) + 1000 * RANK
    out = np.empty_like(inp)
    dist.all_to_all_single(out, inp)
    np.testing.assert_array_equal(out, np.stack([np.arange(3, dtype=np.float32) + 3 * RANK + 1000 * i
                                                 for i in range(N)]))
    rows_in = [RANK + 1] * N  # rank i sends i + 1 rows to everyone
    mine = np.full((sum(rows_in), 2), RANK, np.float64)
    got = np.empty((sum(i + 1 for i in range(N)), 2), np.float64)
    dist.all_to_all_single(got, mine, output_split_sizes=[i + 1 for i in range(N)], input_split_sizes=rows_in)
    np.testing.assert_array_equal(got[:, 0], np.repeat(np.arange(N), np.arange(1, N + 1)))


def overlap():
    """An async all_reduce finishes while this rank computes, without wait() driving it."""
    a = np.ones(4 << 20, np.float32)  # 16 MiB
    dist.barrier()
    work = dist.all_reduce(a, async_op=True)
    start, done_early = time.perf_counter(), False
    x = np.random.default_rng(0).random((200, 200))
    while time.perf_counter() - start < 5 and not done_early:
        x = x @ x
        x /= np.abs(x).max()
        done_early = work.is_completed()
    work.wait()
    assert done_early, "the async all_reduce made no progress during 5 s of computation"
    assert a[0] == N and a[-1] == N


def objects():
    obj = {"rank": RANK, "name": "x" * (RANK * 37), "array": np.arange(RANK + 1)}
    got = [None] * N
    dist.all_gather_object(got, obj)
    for r, o in enumerate(got):
        assert o["rank"] == r and o["name"] == "x" * (r * 37) and (o["array"] == np.arange(r + 1)).all()
    lst = [("from", N - 1), {"k": [1, 2]}] if RANK == N - 1 else [None, None]
    dist.broadcast_object_list(lst, src=N - 1)
    assert lst == [("from", N - 1), {"k": [1, 2]}], lst
    gathered = [None] * N if RANK == 0 else None
    dist.gather_object(f"hello from {RANK}", gathered, dst=0)
    if RANK == 0:
        assert gathered == [f"hello from {r}" for r in range(N)], gathered
    out = [None]
    dist.scatter_object_list(out, [{"to": r, "pad": "y" * r} for r in range(N)] if RANK == 0 else None, src=0)
    assert out[0] == {"to": RANK, "pad": "y" * RANK}, out


def subgroups():
    evens = [r for r in range(N) if r % 2 == 0]
    group = dist.new_group(evens)
    a = np.full(3, RANK + 1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = dist.all_reduce(a, group=group)
    if RANK in evens:
        assert dist.get_rank(group) == evens.index(RANK) and dist.get_world_size(group) == len(evens)
        np.testing.assert_array_equal(a, np.full(3, sum(r + 1.0 for r in evens)))
        b = np.full(2, float(RANK))
        dist.broadcast(b, src=evens[-1], group=group)  # src is a global rank
        np.testing.assert_array_equal(b, np.full(2, float(evens[-1])))
        got = [None] * len(evens)
        dist.all_gather_object(got, RANK, group=group)
        assert got == evens, got
    else:
        assert result is None and dist.get_rank(group) == -1 and "not a member" in str(caught[0].message)
        np.testing.assert_array_equal(a, np.full(3, RANK + 1.0))
    everyone = dist.new_group()
    c = np.ones(1)
    dist.all_reduce(c, group=everyone)
    assert c[0] == N
    try:
        dist.new_group([0, N, -1])
    except ValueError as e:
        assert f"invalid ranks [{N}, -1]" in str(e) and f"[0, {N - 1}]" in str(e), e
    else:
        raise AssertionError("new_group accepted invalid ranks")


def point_to_point():
    nxt, prv = (RANK + 1) % N, (RANK - 1) % N
    out, got = make(RANK, 300_001, np.float64), np.empty(300_001)
    if RANK % 2 == 0:  # blocking ring: even ranks send first
        dist.send(out, dst=nxt)
        sender = dist.recv(got, src=prv)
    else:
        sender = dist.recv(got)  # any source
        dist.send(out, dst=nxt)
    assert sender == prv, sender
    close(got, make(prv, 300_001, np.float64), np.float64)
    t = dtrain.zeros(5, dtype=np.int64)
    works = [dist.irecv(t, src=prv, tag=3), dist.isend(np.arange(5) * RANK, dst=nxt, tag=3)]
    for w in works:
        w.wait()
    close(t, np.arange(5) * prv, np.int64)


def chunked():
    """Messages longer than MAX_COUNT elements go in pieces (MAX_COUNT lowered to 1000)."""
    saved, chunking.MAX_COUNT = chunking.MAX_COUNT, 1000
    try:
        size = 2_501
        a = make(RANK, size, np.float64)
        dist.all_reduce(a)
        close(a, expected(size, np.float64, ReduceOp.SUM), np.float64)
        b = make(RANK, size, np.int64)
        dist.broadcast(b, src=N - 1)
        close(b, make(N - 1, size, np.int64), np.int64)
        c = make(RANK, size, np.float64, ReduceOp.MAX)
        dist.reduce(c, dst=0, op=ReduceOp.MAX)
        if RANK == 0:
            close(c, expected(size, np.float64, ReduceOp.MAX), np.float64)
        out = np.empty((N, size), np.int64)
        dist.all_gather_into_tensor(out, make(RANK, size, np.int64))
        close(out, np.stack([make(r, size, np.int64) for r in range(N)]), np.int64)
        rs = np.empty(size, np.float64)
        dist.reduce_scatter_tensor(rs, make(RANK, size * N, np.float64))
        close(rs, expected(size * N, np.float64, ReduceOp.SUM)[RANK * size:(RANK + 1) * size], np.float64)
        outs = [np.empty(size, np.int64) for _ in range(N)] if RANK == 0 else None
        dist.gather(make(RANK, size, np.int64), outs, dst=0)
        if RANK == 0:
            for r, o in enumerate(outs):
                close(o, make(r, size, np.int64), np.int64)
        got = np.empty(size, np.int64)
        dist.scatter(got, [make(0, size, np.int64, salt=r) for r in range(N)] if RANK == 0 else None, src=0)
        close(got, make(0, size, np.int64, salt=RANK), np.int64)
        if N > 1:
            msg = np.empty(size)
            if RANK == 0:
                dist.send(make(0, size, np.float64), dst=1)
            elif RANK == 1:
                dist.recv(msg, src=0)
                close(msg, make(0, size, np.float64), np.float64)
    finally:
        chunking.MAX_COUNT = saved


def misuse():
    """Bad arguments fail on the rank that gave them, before any communication."""
    read_only = np.ones(2)
    read_only.setflags(write=False)
    cases = [
        (lambda: dist.all_reduce(np.ones(2, np.int64), op=ReduceOp.AVG), TypeError, "AVG is only defined for floating"),
        (lambda: dist.all_reduce([1.0, 2.0]), TypeError, "must be a dtrain Tensor, a NumPy array or a CuPy array"),
        (lambda: dist.all_reduce(np.ones(2), op="sum"), TypeError, "op must be a ReduceOp"),
        (lambda: dist.broadcast(np.ones(2), src=N), ValueError, f"src={N} is not a member"),
        (lambda: dist.all_gather([np.ones(2)] * (N + 1), np.ones(2)), ValueError, f"list of {N} tensors"),
        (lambda: dist.all_gather([np.ones(3)] * N, np.ones(2)), ValueError, "has shape (3,)"),
        (lambda: dist.all_gather_into_tensor(np.ones(N * 2 + 1), np.ones(2)), ValueError,
         f"output_tensor of shape ({N * 2 + 1},) ({N * 2 + 1} elements) must hold world size {N} x input_tensor "
         f"of shape (2,) (2 elements)"),
        (lambda: dist.all_gather([np.ones(2, np.float32)] * N, np.ones(2)), ValueError, "dtype float32, expected"),
        (lambda: dist.broadcast(np.ones(2), src=-1), ValueError, "src=-1 is not a member"),
        (lambda: dist.all_to_all_single(np.ones(N), np.ones(N), input_split_sizes=[N + 1] + [0] * (N - 1)),
         ValueError, "must be"),
        (lambda: dist.send(np.ones(1), dst=RANK), ValueError, "own rank"),
        (lambda: dist.all_reduce(read_only), ValueError, "read-only"),
    ]
    for fn, error, text in cases:
        try:
            fn()
        except error as e:
            assert text in str(e), f"{text!r} not in {e}"
        else:
            raise AssertionError(f"no {error.__name__} for {text!r}")


def nan():
    """A NaN on one rank reaches every rank through SUM (MAX/MIN: implementation-defined, see all_reduce)."""
    x = np.array([np.nan if RANK == 0 else 1.0, 2.0])
    dist.all_reduce(x)
    assert np.isnan(x[0]) and x[1] == 2.0 * N, x


def environment():
    """The rank, sizes and local rank agree with mpiexec's variables, MPICH's or Open MPI's
    (0 of 1 without mpiexec)."""
    info = discover()
    rank, size, local_rank = (info.rank, info.world_size, info.local_rank) if info else (0, 1, 0)
    assert (RANK, N, dist.get_local_rank()) == (rank, size, local_rank), (RANK, N, dist.get_local_rank(), info)
    assert dist.get_local_world_size() == N and dist.get_backend() == "mpi" and dist.is_initialized()


reductions()
data_movement()
checks.run("environment", environment)
checks.run("async work overlaps with computation", overlap)
checks.run("object collectives", objects)
checks.run("sub-groups", subgroups)
if N > 1:
    checks.run("point to point", point_to_point)
checks.run("chunked messages", chunked)
checks.run("misuse errors", misuse)
checks.run("NaN propagates through SUM", nan)
checks.finish()
