"""The test side of ddp_checks.py, shared by test_ddp.py (MPI backend) and test_ddp_nccl.py."""
import json
import sys
from collections import namedtuple

from comm_helpers import output, require_mpi, run

Job = namedtuple("Job", "world_size process results")


def run_checks(world_size, folder, timeout, env=None, backend=None):
    """Run ddp_checks.py on ``world_size`` ranks. Returns a Job: the world size, the finished
    process (each rank's report on its stdout) and rank 0's results,
    ``{check: {rank: "ok" | error}, "info": {rank: stats}, "exposed_ms": ms}``."""
    path = folder / "results.json"
    args = ["--backend", backend] if backend else []
    result = run([require_mpi(), "-n", str(world_size), sys.executable, "tests/parallel/ddp_checks.py", str(path),
                  *args], timeout=timeout, env=env)
    assert path.exists(), output(result)  # a check that failed is reported by its own test
    return Job(world_size, result, json.loads(path.read_text()))


def passed(results, check):
    """``check`` passed on every rank (else: each rank's error and traceback)."""
    failures = {rank: msg for rank, msg in results[check].items() if msg != "ok"}
    assert not failures, "\n".join(f"rank {r}: {m}" for r, m in failures.items())
