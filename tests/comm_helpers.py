"""Shared by the tests that start processes (MPI jobs, the launcher): find mpiexec, skip
without MPI, run a command with a hard timeout in a clean environment, and read the rank
scripts' reports (tests/rank_harness.py)."""
import os
import re
import subprocess
import sys

import pytest

from dtrain.comm.env import SOURCES
from dtrain.launch import find_mpiexec, open_mpi_env

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


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
    per rank, dtrain from this checkout and the tests' shared modules (rank_harness, emulation)
    on PYTHONPATH, plus ``extra``."""
    # the tests start up to 4 ranks on one machine, as root in containers and CI (a value set by the user wins)
    env = {**open_mpi_env(), **{k: v for k, v in os.environ.items() if not launcher_variable(k)}}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([*emulation_boot(), ROOT, TESTS]), **extra)
    return env


def emulation_boot():
    """The CuPy emulation's bootstrap folder when the tests run on it (``DTRAIN_CUPY_EMULATION``),
    so that the processes a test starts get the emulation too; else nothing."""
    if os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() in ("", "0"):
        return []
    return [os.path.join(TESTS, "emulation", "boot")]


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


REPORT = re.compile(r"rank (\d+): all (\d+) checks passed")


def assert_all_checks_passed(result, world_size, checks):
    """The job exited 0 and each of its ``world_size`` ranks printed rank_harness's report
    ``rank R: all N checks passed`` once, with N == ``checks``: every rank ran exactly the
    checks expected of it (one that silently stopped running lowers N), and all passed."""
    assert result.returncode == 0, output(result)
    ran = sorted((int(rank), int(n)) for rank, n in REPORT.findall(result.stdout))
    assert ran == [(rank, checks) for rank in range(world_size)], \
        f"(rank, checks passed) {ran}, expected {checks} checks on each of {world_size} ranks\n{output(result)}"


def collective_checks(world_size):
    """How many checks tests/comm/rank_collectives.py runs on each rank of a job of
    ``world_size``: 76 reduction cases (4 dtypes x 4 sizes x 5 ops, no AVG of int64) x 4 calls
    + 3, 16 data-movement cases (4 dtypes x 4 sizes) x 4 calls + 2, 7 single checks, and
    point to point where a rank has peers."""
    return 76 * 4 + 3 + 16 * 4 + 2 + 7 + (world_size > 1)
