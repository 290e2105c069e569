"""Rank script: async collectives on overlapping sub-groups, run by test_overlapping_groups.py
as ``mpiexec -n 3 python tests/comm/rank_overlapping_groups.py`` with a short DTRAIN_TIMEOUT.

Groups {0, 1} and {1, 2} share rank 1. Each group's async collectives run in that group's
order only (dtrain/comm/work.py: a thread per group), so rank 1's all-reduce on {0, 1} does
not wait for its earlier one on {1, 2}, whose peer may come late: in the gated checks rank 2
reaches {1, 2}'s all-reduce only after rank 0's on {0, 1} has finished (a barrier, a
message), a program that deadlocked while one thread ran every group's work and that
PyTorch (gloo) finishes in milliseconds. The checks run and report through
tests/rank_harness.py (``rank R: all 5 checks passed``).
"""
import numpy as np

import dtrain.comm as dist
from rank_harness import RankChecks

checks = RankChecks(backend="mpi")
RANK = checks.rank
assert checks.world_size == 3, f"run at 3 ranks, not {checks.world_size}"
G01, G12 = dist.new_group([0, 1]), dist.new_group([1, 2])
SHM_ELEMENTS = 100_000  # 800 KB of float64: above the shared-memory all-reduce's threshold


def values(salt, size=4):
    """This rank's input (``total``: the sum of the inputs of the ranks ``members``)."""
    return np.arange(size, dtype=np.float64) + 10.0 ** RANK + salt


def total(members, salt, size=4):
    return sum(np.arange(size, dtype=np.float64) + 10.0 ** r + salt for r in members)


def both_groups(size, first):
    """The exact scenario: async all_reduce on both groups, rank 1 in both (``first`` it issues first)."""
    works, results = [], []
    for salt, group, members in sorted([(0, G01, (0, 1)), (1, G12, (1, 2))], key=lambda g: g[2] != first):
        if RANK in members:
            a = values(salt, size)
            works.append(dist.all_reduce(a, group=group, async_op=True))
            results.append((a, total(members, salt, size)))
    for w in works:
        w.wait()
    for a, want in results:
        np.testing.assert_array_equal(a, want)


def gated_by(release_rank_2):
    """Rank 1 issues {1, 2} first, then {0, 1}; rank 2 joins {1, 2} only after ``release_rank_2``,
    which rank 0 reaches only once its {0, 1} all-reduce has finished."""
    a, b = values(1), values(2)
    if RANK == 0:
        dist.all_reduce(a, group=G01, async_op=True).wait()
        release_rank_2()
    elif RANK == 1:
        w12 = dist.all_reduce(b, group=G12, async_op=True)
        w01 = dist.all_reduce(a, group=G01, async_op=True)
        w01.wait()
        release_rank_2()
        w12.wait()
    else:
        release_rank_2()
        dist.all_reduce(b, group=G12, async_op=True).wait()
    if RANK in (0, 1):
        np.testing.assert_array_equal(a, total((0, 1), 1))
    if RANK in (1, 2):
        np.testing.assert_array_equal(b, total((1, 2), 2))


def message_from_rank_0():
    """Rank 0 tells rank 2 (point to point) once {0, 1} is done; the others do nothing."""
    token = np.zeros(1)
    if RANK == 0:
        dist.send(token + 7, dst=2)
    elif RANK == 2:
        dist.recv(token, src=0)
        assert token[0] == 7, token


def interleaved_in_order():
    """Many async collectives per group, interleaved with the world's: each group's run in its
    own program order (every result right), the groups and the world concurrently."""
    works, results = [], []
    for i in range(12):
        for group, members in ((G01, (0, 1)), (G12, (1, 2)), (None, (0, 1, 2))):
            if RANK in members:
                a = values(i, 3 + i)
                works.append(dist.all_reduce(a, group=group, async_op=True))
                results.append((a, total(members, i, 3 + i)))
    for w, (a, want) in zip(reversed(works), reversed(results)):  # waited for newest first
        w.wait()
        np.testing.assert_array_equal(a, want)


checks.run("both groups async, {0, 1} issued first", both_groups, 4, (0, 1))
checks.run("both groups async, {1, 2} issued first, shared memory", both_groups, SHM_ELEMENTS, (1, 2))
checks.run("rank 2 joins {1, 2} after a world barrier", gated_by, dist.barrier)
checks.run("rank 2 joins {1, 2} after a message from rank 0", gated_by, message_from_rank_0)
checks.run("many collectives per group, interleaved with the world's", interleaved_in_order)
checks.finish()
