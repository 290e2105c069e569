"""Shared by the comm tests: find mpiexec, skip without MPI, run a command with a hard timeout."""
import os
import subprocess
import sys

import pytest

from dtrain.comm.env import SOURCES
from dtrain.launch import find_mpiexec, open_mpi_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "comm")


def require_mpi():
    """The mpiexec to use; skips the test (with the reason) if mpi4py or mpiexec is missing."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install dtrain[mpi])")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec on PATH or beside the Python executable (pip install dtrain[mpi])")
    return mpiexec


LAUNCHER_VARS = {v for _, rank, sizes, local, local_sizes in SOURCES for v in (rank, *sizes, local, *local_sizes)}
# What Open MPI's mpirun sets for a rank besides its OMPI_COMM_WORLD_* (the other OMPI_MCA_*
# and OMPI_ALLOW_RUN_AS_ROOT* variables are the user's settings and are kept).
OPEN_MPI_RANK_MCA = ("OMPI_MCA_orte_", "OMPI_MCA_ess", "OMPI_MCA_pmix", "OMPI_MCA_initial_wdir")


def launcher_variable(name):
    """Whether a process manager (mpiexec, srun) set ``name`` for the rank it started."""
    if name in LAUNCHER_VARS or name.startswith(("PMI_", "PMIX_", *OPEN_MPI_RANK_MCA)):
        return True
    return name.startswith("OMPI_") and not name.startswith(("OMPI_MCA_", "OMPI_ALLOW_RUN_AS_ROOT"))


def clean_env(**extra):
    """os.environ without any launcher's rank variables (the tests may themselves run under
    mpiexec or srun), with Open MPI allowed to oversubscribe and run as root, one BLAS thread
    per rank, plus ``extra``."""
    # the tests start up to 4 ranks on one machine, as root in containers and CI (a value set by the user wins)
    env = {**open_mpi_env(), **{k: v for k, v in os.environ.items() if not launcher_variable(k)}}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([*emulation_boot(), ROOT]), **extra)
    return env


def emulation_boot():
    """The CuPy emulation's bootstrap folder when the tests run on it (``DTRAIN_CUPY_EMULATION``),
    so that the processes a test starts get the emulation too; else nothing."""
    if os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() in ("", "0"):
        return []
    return [os.path.join(ROOT, "tests", "emulation", "boot")]


def run(args, timeout, env=None):
    """Run ``args`` from the repo root; a hang past ``timeout`` seconds fails the test."""
    try:
        return subprocess.run(args, cwd=ROOT, env=clean_env() if env is None else env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(args)} did not finish within {timeout} s\n{e.stdout}\n{e.stderr}")


def python(*args, timeout=30, env=None):
    """Run ``python args`` with this interpreter."""
    return run([sys.executable, *args], timeout, env)


def output(result):
    return f"exit code {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
