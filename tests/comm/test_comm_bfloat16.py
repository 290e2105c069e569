"""bfloat16 through the collectives of the MPI backend, under mpiexec at 2 and 4 ranks
(rank_bfloat16.py): data moves bit for bit, reductions are float32's rounded once, and DDP
of a bfloat16 model and fully_shard with a bfloat16 param_dtype train; against PyTorch's gloo at
2 ranks; under the NCCL backend (marked gpu: a GPU or the tests' CuPy emulation)."""
import os
import sys

import pytest

from comm_helpers import assert_all_checks_passed, clean_env, require_mpi, run

EMULATED = os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() not in ("", "0")
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


@pytest.mark.gpu
def test_bfloat16_host_arrays_under_nccl():
    """Under the NCCL backend (2 ranks; on a CPU, the tests' CuPy emulation), the same checks
    pass for host arrays, which go through the MPI group underneath, and a bfloat16 tensor
    cannot go to a GPU (CuPy has no bfloat16 dtype): the error names bfloat16."""
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (pip install dtrain[bf16])")
    import dtrain
    if not EMULATED and dtrain.cuda.device_count() < 2:
        pytest.skip(f"NCCL needs one GPU per rank: 2 ranks, {dtrain.cuda.device_count()} GPU(s)")
    result = run([require_mpi(), "-n", "2", sys.executable, "tests/comm/rank_bfloat16.py", "--backend", "nccl"],
                 timeout=180, env=clean_env(DTRAIN_CUPY_EMULATION="2") if EMULATED else None)
    assert_all_checks_passed(result, 2, CHECKS + 1)
