"""Collectives under mpiexec at world sizes 1, 2 and 4, checked against NumPy by
rank_collectives.py (every op, dtype, size, async, objects, sub-groups, p2p, chunking)."""
import sys

import pytest

from comm_helpers import assert_all_checks_passed, clean_env, collective_checks, output, require_mpi, run


@pytest.mark.parametrize("n", [1, 2, 4])
def test_collectives_match_numpy(n):
    """Every rank of an n-rank job finds every collective's result equal to NumPy's."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", str(n), sys.executable, "tests/comm/rank_collectives.py"], timeout=120)
    assert_all_checks_passed(result, n, collective_checks(n))


@pytest.mark.parametrize("n", [2, 4])
def test_collectives_match_numpy_through_shared_memory(n):
    """The same checks with DTRAIN_SHM_MIN_BYTES=0: every all-reduce (all dtypes and ops, sync
    and async) goes through the shared-memory window of dtrain/comm/shm.py."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", str(n), sys.executable, "tests/comm/rank_collectives.py"], timeout=120,
                 env=clean_env(DTRAIN_SHM_MIN_BYTES="0"))
    assert_all_checks_passed(result, n, collective_checks(n))


@pytest.mark.parametrize("n", [2, 4])
def test_shared_memory_all_reduce_and_coalesced(n):
    """rank_shm.py: lengths and dtypes changing call to call (back to back, sync and async
    interleaved), coalesced lists whose pieces straddle the shards, the per-rank scale, the
    same bits on every rank, and all_reduce_coalesced's errors for bad input."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", str(n), sys.executable, "tests/comm/rank_shm.py"], timeout=120,
                 env=clean_env(DTRAIN_SHM_MIN_BYTES="0"))
    assert_all_checks_passed(result, n, 7)


def test_debug_mode_names_disagreeing_ranks():
    """With DTRAIN_DISTRIBUTED_DEBUG=DETAIL (the alias of DTRAIN_DEBUG=1), a collective whose
    shape, dtype or kind differs across ranks fails on every rank, naming both ranks and both calls."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "2", sys.executable, "tests/comm/rank_mismatch.py"], timeout=60,
                 env=clean_env(DTRAIN_DISTRIBUTED_DEBUG="DETAIL"))
    assert result.returncode == 0, output(result)
    for rank in (0, 1):
        for message in ("rank 0 called all_reduce(float64[10]); rank 1 called all_reduce(float64[20])",
                        "rank 0 called broadcast(float64[3], src=0); rank 1 called broadcast(float32[3], src=0)",
                        "rank 0 called all_reduce(float64[1]); rank 1 called barrier()"):
            assert f"rank {rank}: collective mismatch (debug mode): {message}" in result.stdout, output(result)
        assert result.stdout.count(f"rank {rank}: ") == 3, output(result)
