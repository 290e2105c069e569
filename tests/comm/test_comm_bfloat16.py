"""bfloat16 through the collectives of the MPI backend, under mpiexec at 2 and 4 ranks
(rank_bfloat16.py): data moves bit for bit, reductions are float32's rounded once, and DDP
of a bfloat16 model and fully_shard with a bfloat16 param_dtype train."""
import sys

import pytest

from comm_helpers import assert_all_checks_passed, require_mpi, run

CHECKS = 14  # the checks rank_bfloat16.py runs on every rank


@pytest.mark.parametrize("n", [2, 4])
def test_bfloat16_collectives_and_training(n):
    """Every rank of an n-rank job passes all of rank_bfloat16.py's checks."""
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (pip install dtrain[bf16])")
    result = run([require_mpi(), "-n", str(n), sys.executable, "tests/comm/rank_bfloat16.py"], timeout=120)
    assert_all_checks_passed(result, n, CHECKS)


def test_bfloat16_all_reduce_equals_pytorch_gloo(tmp_path):
    """At 2 ranks, all_reduce of bfloat16 gives PyTorch's gloo's bits for SUM, PRODUCT, MIN and MAX."""
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (pip install dtrain[bf16])")
    pytest.importorskip("torch")
    result = run([require_mpi(), "-n", "2", sys.executable, "tests/comm/rank_bfloat16.py", "--pytorch",
                  str(tmp_path / "gloo_store")], timeout=120)
    assert_all_checks_passed(result, 2, 1)
