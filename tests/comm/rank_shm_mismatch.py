"""Rank script: all_reduce calls that disagree across ranks on the shared-memory path
(dtrain/comm/shm.py), run at 2 ranks by test_shm_mismatch.py (the default 256 KiB
threshold).

Without an argument it runs checks through tests/rank_harness.py (``rank R: all 4 checks
passed``): lengths on both sides of each other above the threshold, float32 against int32,
SUM against MAX, a message that needs a larger window on one rank only: every rank raises the same DistError naming both ranks' calls (no
segfault, no silently wrong sum), and a matching all_reduce afterwards still gives the sum.

With an argument (a case: ``size``, ``dtype``, ``op``, ``window``, or ``threshold``: rank 0's message above the
threshold, rank 1's below it, so rank 1 takes MPI's own all-reduce) the mismatch is left
uncaught: the job must end with the error, within seconds.
"""
import sys

import numpy as np

import dtrain.comm as dist
from dtrain.comm import DistError, ReduceOp

ABOVE, BELOW = 70_000, 60_000  # float32 elements: 280 KB and 240 KB, either side of 256 KiB
CASES = {  # rank 0's call, rank 1's call: (elements, dtype, op)
    "size": ((ABOVE, np.float32, ReduceOp.SUM), (90_000, np.float32, ReduceOp.SUM)),
    "dtype": ((ABOVE, np.float32, ReduceOp.SUM), (ABOVE, np.int32, ReduceOp.SUM)),
    "op": ((ABOVE, np.float32, ReduceOp.SUM), (ABOVE, np.float32, ReduceOp.MAX)),
    "window": ((ABOVE, np.float32, ReduceOp.SUM), (1_000_000, np.float32, ReduceOp.SUM)),  # rank 1 needs a larger one
    "threshold": ((ABOVE, np.float32, ReduceOp.SUM), (BELOW, np.float32, ReduceOp.SUM)),
}
EXPECTED = {  # what the error names for each rank
    "size": ("rank 0: 70000 elements of float32, op sum", "rank 1: 90000 elements of float32, op sum"),
    "dtype": ("rank 0: 70000 elements of float32, op sum", "rank 1: 70000 elements of int32, op sum"),
    "op": ("rank 0: 70000 elements of float32, op sum", "rank 1: 70000 elements of float32, op max"),
    "window": ("rank 0: 70000 elements of float32, op sum", "rank 1: 1000000 elements of float32, op sum"),
}


def call(case, rank):
    n, dtype, op = CASES[case][rank]
    dist.all_reduce(np.ones(n, dtype), op=op)


def raises_on_every_rank(case):
    """The mismatched call raises the error naming both calls; then a matching call sums."""
    try:
        call(case, dist.get_rank())
    except DistError as e:
        for side in EXPECTED[case]:
            assert side in str(e), f"{side!r} not in the error: {e}"
    else:
        raise AssertionError(f"{case}: the mismatched all_reduce did not raise")
    a = np.full(ABOVE, dist.get_rank() + 1.0, np.float32)
    dist.all_reduce(a)
    np.testing.assert_array_equal(a, np.full(ABOVE, 3.0, np.float32))


if len(sys.argv) > 1:
    dist.init_process_group(backend="mpi")
    call(sys.argv[1], dist.get_rank())
    print(f"unreachable: rank {dist.get_rank()} got past the mismatched all_reduce", flush=True)
else:
    from rank_harness import RankChecks
    checks = RankChecks(backend="mpi")
    assert checks.world_size == 2, f"run at 2 ranks, not {checks.world_size}"
    for case in EXPECTED:
        checks.run(f"mismatched {case}", raises_on_every_rank, case)
    checks.finish()
