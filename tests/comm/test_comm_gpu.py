"""Collectives on GPU arrays: the NCCL backend, and the MPI backend moving CuPy arrays
(CUDA-aware or staged through host memory). Skipped without a CUDA device."""
import sys

import pytest

from comm_helpers import output, require_mpi, run

pytestmark = pytest.mark.gpu


def gpus():
    import dtrain
    return dtrain.cuda.device_count()


@pytest.mark.parametrize("backend", ["nccl", "mpi"])
def test_gpu_collectives_match_numpy(backend):
    """NCCL needs one GPU per rank (as many ranks as GPUs, up to 2); MPI may share one GPU."""
    mpiexec = require_mpi()
    n = min(2, gpus()) if backend == "nccl" else 2
    result = run([mpiexec, "-n", str(n), sys.executable, "tests/comm/rank_gpu.py", "--backend", backend], timeout=300)
    assert result.returncode == 0, output(result)
    for rank in range(n):
        assert f"rank {rank}: all " in result.stdout, output(result)
