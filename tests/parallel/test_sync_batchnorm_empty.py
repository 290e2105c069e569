"""SyncBatchNorm with an empty batch on one rank (issue #15): rank_sync_batchnorm_empty.py runs
under ``mpiexec -n 2`` (hard timeout) and compares outputs, running statistics and gradients
with one process's BatchNorm on the concatenated batch; before the fix every rank's values
turned NaN."""
import sys

from comm_helpers import assert_all_checks_passed, require_mpi, run

CHECKS = 4  # the checks.run calls of rank_sync_batchnorm_empty.py


def test_empty_batch_on_one_rank_equals_batchnorm_on_the_others():
    """The rank without samples contributes a zero count: every rank's outputs, running
    statistics and gradients equal BatchNorm's on the other rank's batch, all finite."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "2", sys.executable, "tests/parallel/rank_sync_batchnorm_empty.py"], timeout=90)
    assert_all_checks_passed(result, 2, CHECKS)
