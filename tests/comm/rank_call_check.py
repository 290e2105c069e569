"""Rank script for test_sampled_check.py: the sampled cross-rank check (on by default, no
debug mode) catches each steady mismatch kind, on every rank, with a DistError naming both
sides' calls; agreeing programs run unchanged. The odd rank is rank 2 (rank 1 at 2 ranks).

Usage: rank_call_check.py [case ...] (default: every case of CASES). Each case runs in a
group of its own (every rank), so its calls are numbered from 1: the mismatches that start at
call #1 are caught there (calls 1, 2, 4, ... 32 are checked), those that start at #101 at the
next multiple of 64, #128.
"""
import sys

import numpy as np

import dtrain.comm as dist
from rank_harness import RankChecks

checks = RankChecks(backend="mpi")
RANK, N = checks.rank, checks.world_size
ODD = 2 if N > 2 else 1
OTHERS = [r for r in range(N) if r != ODD]
ODD_SIDE = f"rank {ODD} called"
OTHERS_SIDE = f"rank {OTHERS[0]} called" if len(OTHERS) == 1 else f"ranks {', '.join(map(str, OTHERS))} called"


def caught(call, calls, seq, mine, theirs):
    """``call(group, i)`` for i in range(calls) raises DistError at call #``seq`` of the group,
    naming the odd rank's call ``mine`` and the others' ``theirs`` (after ``called``)."""
    group = dist.new_group()
    done = 0
    try:
        for i in range(calls):
            call(group, i)
            done += 1
    except dist.DistError as e:
        message = str(e)
    else:
        raise AssertionError(f"no DistError in {calls} calls")
    assert done == seq - 1, f"caught after {done} calls, expected at call #{seq}: {message}"
    expected = (f"sampled check of call #{seq} on ranks {list(range(N))}; DTRAIN_CHECK_EVERY=N checks every N-th "
                f"call, DTRAIN_DEBUG=1 every call)")
    assert expected in message, f"{expected!r} not in {message!r}"
    for side in (f"{ODD_SIDE} {mine}", f"{OTHERS_SIDE} {theirs}"):
        assert side in message, f"{side!r} not in {message!r}"
    assert "(call sites: rank 0 rank_call_check.py:" in message, message


def dtypes(group, i):  # steady from call #101 on: float32 against int32
    odd = RANK == ODD and i >= 100
    dist.all_reduce(np.ones(4, np.int32 if odd else np.float32), group=group)


def ops(group, i):  # steady from call #101 on: SUM against MAX
    dist.all_reduce(np.ones(4, np.float32), op=dist.ReduceOp.MAX if RANK == ODD and i >= 100 else dist.ReduceOp.SUM,
                    group=group)


def roots(group, i):
    dist.broadcast(np.ones(4, np.float32), src=1 if RANK == ODD else 0, group=group)


def sizes(group, i):
    dist.all_reduce(np.ones(5 if RANK == ODD else 4, np.float32), group=group)


def async_dtypes(group, i):  # checked on the comm thread, in the call's task: Work.wait() raises it
    dist.all_reduce(np.ones(4, np.int32 if RANK == ODD else np.float32), group=group, async_op=True).wait()


def agreeing_calls_are_unchanged():
    """70 agreeing calls of each kind (blocking, async, broadcast, coalesced: 280 calls, 9 of
    them checked) give the right values."""
    group = dist.new_group()
    for i in range(70):
        a = np.full(4, RANK + i, np.float32)
        dist.all_reduce(a, group=group)
        np.testing.assert_array_equal(a, sum(r + i for r in range(N)))
        b = np.full(3, RANK, np.int64)
        dist.all_reduce(b, op=dist.ReduceOp.MAX, group=group, async_op=True).wait()
        np.testing.assert_array_equal(b, N - 1)
        c = np.full(2, RANK, np.float64)
        dist.broadcast(c, src=N - 1, group=group)
        np.testing.assert_array_equal(c, N - 1)
        d, e = np.ones(2, np.float32), np.ones(3, np.float32)
        dist.all_reduce_coalesced([d, e], group=group)
        np.testing.assert_array_equal(np.concatenate([d, e]), N)


CASES = {"dtypes": ("float32 against int32, from call #101", caught, dtypes, 200, 128, "all_reduce(int32[4])",
                    "all_reduce(float32[4])"),
         "ops": ("SUM against MAX, from call #101", caught, ops, 200, 128, "all_reduce(float32[4], op=MAX)",
                 "all_reduce(float32[4])"),
         "roots": ("broadcast roots differ", caught, roots, 200, 1, "broadcast(float32[4], src=1)",
                   "broadcast(float32[4], src=0)"),
         "sizes": ("sizes differ", caught, sizes, 200, 1, "all_reduce(float32[5])", "all_reduce(float32[4])"),
         "async": ("async: float32 against int32", caught, async_dtypes, 200, 1, "all_reduce(int32[4])",
                   "all_reduce(float32[4])"),
         "agree": ("agreeing calls are unchanged", agreeing_calls_are_unchanged)}
for case in sys.argv[1:] or CASES:  # the cases named on the command line, else all
    checks.run(*CASES[case])
checks.finish()
