"""Rank script: the shared-memory all-reduce (dtrain/comm/shm.py) and all_reduce_coalesced,
run by test_comm_collectives.py as ``mpiexec -n N python tests/comm/rank_shm.py`` (N = 2, 4)
with DTRAIN_SHM_MIN_BYTES=0, so that every all-reduce takes the shared-memory path.

Checked against NumPy: messages whose length and dtype change from one call to the next
(back to back, sync and async interleaved), lists whose pieces straddle the shards, the
per-rank ``scale``, and that every rank ends with the same bits. The checks run and report
through tests/rank_harness.py (``rank R: all 7 checks passed``).
"""
import numpy as np

import dtrain.comm as dist
from dtrain.comm import ReduceOp, lifecycle
from rank_harness import RankChecks

checks = RankChecks(backend="mpi")
RANK, N = checks.rank, checks.world_size


def make(rank, size, dtype, salt=0):
    rng = np.random.default_rng(100 * rank + size + salt)
    return rng.integers(-50, 50, size).astype(dtype)


def same_everywhere(a):
    everyone = [None] * N
    dist.all_gather_object(everyone, a.tobytes())
    assert all(e == everyone[0] for e in everyone), "ranks ended with different bits"


def shm_is_used():
    world = lifecycle._state.world
    assert world.shm_min_bytes == 0, f"the shared-memory path is off: {world.shm_min_bytes!r}"


def changing_layouts():
    # back to back, every call another length or dtype: a rank still copying the last
    # call's result must not see its slot overwritten by the next call's inputs
    for i, (size, dtype) in enumerate([(10, np.float32), (1001, np.float32), (3, np.float32), (70_001, np.float64),
                                       (70_001, np.float32), (5, np.int64), (1001, np.float32), (2, np.float16)] * 3):
        a = make(RANK, size, dtype, salt=i)
        dist.all_reduce(a)
        want = sum(make(r, size, dtype, salt=i) for r in range(N))
        np.testing.assert_array_equal(a, want)
        same_everywhere(a)


def sync_and_async_interleaved():
    works, arrays = [], []
    for i in range(6):
        a = make(RANK, 20_000 + i, np.float32, salt=i)
        works.append(dist.all_reduce(a, async_op=True))
        arrays.append(a)
        b = make(RANK, 333 + i, np.float64, salt=i)
        dist.all_reduce(b, op=ReduceOp.MAX)
        np.testing.assert_array_equal(b, np.max([make(r, 333 + i, np.float64, salt=i) for r in range(N)], axis=0))
    for i, (w, a) in enumerate(zip(works, arrays)):
        w.wait()
        np.testing.assert_array_equal(a, sum(make(r, 20_000 + i, np.float32, salt=i) for r in range(N)))


def ops_and_window_growth():
    for op, fn in ((ReduceOp.SUM, np.sum), (ReduceOp.MIN, np.min), (ReduceOp.MAX, np.max)):
        for size in (1, N - 1, N + 1, 3_000_000):  # fewer elements than ranks; a larger window
            a = make(RANK, size, np.int64)
            dist.all_reduce(a, op=op)
            np.testing.assert_array_equal(a, fn([make(r, size, np.int64) for r in range(N)], axis=0))


def coalesced_pieces_straddle_shards():
    sizes = [5, 1, 997, 0, 4096, 13]
    for salt, (op, scale) in enumerate([(ReduceOp.SUM, None), (ReduceOp.AVG, None), (ReduceOp.SUM, 0.25)]):
        arrays = [make(RANK, s, np.float64, salt=salt + s).reshape(-1) for s in sizes]
        arrays[2] = arrays[2][:996].reshape(12, 83)  # a 2-D piece
        dist.all_reduce_coalesced(arrays, op=op, scale=scale)
        for k, (s, a) in enumerate(zip(sizes, arrays)):
            per_rank = [make(r, s, np.float64, salt=salt + s)[:a.size].reshape(a.shape) for r in range(N)]
            want = sum(per_rank) * (1 / N if op is ReduceOp.AVG else 1) if scale is None else sum(per_rank) * scale
            np.testing.assert_allclose(a, want, rtol=1e-12, err_msg=f"piece {k}")
            same_everywhere(a)


def coalesced_async_equals_concatenated():
    parts = [make(RANK, s, np.float32, salt=9) for s in (70_000, 3, 123_457)]
    work = dist.all_reduce_coalesced(parts, async_op=True, scale=0.5)
    flat = np.concatenate([make(RANK, s, np.float32, salt=9) for s in (70_000, 3, 123_457)]) * np.float32(0.5)
    dist.all_reduce(flat)
    work.wait()
    np.testing.assert_array_equal(np.concatenate(parts), flat)


def coalesced_bad_input():
    for args, error, words in (([], ValueError, "non-empty list"),
                               ([np.zeros(3, np.float32), np.zeros(3, np.float64)], TypeError, "one dtype"),
                               ([np.zeros(3, np.int64)], TypeError, "AVG is only defined")):
        try:
            dist.all_reduce_coalesced(args, op=ReduceOp.AVG)
        except error as e:
            assert words in str(e), str(e)
        else:
            raise AssertionError(f"no {error.__name__} for {args!r}")
    try:
        dist.all_reduce_coalesced([np.zeros(3)], op=ReduceOp.MAX, scale=2.0)
    except ValueError as e:
        assert "scale goes with ReduceOp.SUM or AVG" in str(e), str(e)
    else:
        raise AssertionError("no ValueError for scale with MAX")


for fn in (shm_is_used, changing_layouts, sync_and_async_interleaved, ops_and_window_growth,
           coalesced_pieces_straddle_shards, coalesced_async_equals_concatenated, coalesced_bad_input):
    checks.run(fn.__name__, fn)
checks.finish()
