"""Collectives under mpiexec at world sizes 1, 2 and 4, checked against NumPy by
rank_collectives.py (every op, dtype, size, async, objects, sub-groups, p2p, chunking)."""
import sys

import pytest

from comm_helpers import output, require_mpi, run


@pytest.mark.parametrize("n", [1, 2, 4])
def test_collectives_match_numpy(n):
    """Every rank of an n-rank job finds every collective's result equal to NumPy's."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", str(n), sys.executable, "tests/comm/rank_collectives.py"], timeout=120)
    assert result.returncode == 0, output(result)
    for rank in range(n):
        assert f"rank {rank}: all " in result.stdout, output(result)
