"""A rank's uncaught exception in a job across hosts: the report names its host too (the
MPI launchers' own reports name a pid and a host, not the rank; dtrain's names the rank)."""
import time

from comm_helpers import output


def test_raising_rank_is_named_with_its_host(cluster, tmp_path):
    """Rank 1 raises on host 2 of 2 x 1: "rank 1 on host <h2> failed: ValueError: ...", and
    the job ends within seconds (rank 0 would all-reduce for a minute)."""
    hostfile = cluster.hostfile(tmp_path, cluster.hosts[:2], 1)
    start = time.monotonic()
    result = cluster.run_hostfile(hostfile, ["tests/multihost/rank_raises.py"], timeout=60)
    took = time.monotonic() - start
    assert result.returncode != 0, output(result)
    assert f"rank 1 on host {cluster.hosts[1]} failed: ValueError: planted by rank_raises.py" in result.stderr, \
        output(result)
    assert f"rank 0 on host {cluster.hosts[0]} failed" not in result.stderr, output(result)
    assert took < 45, f"the job took {took:.1f} s to end after rank 1 raised\n{output(result)}"
