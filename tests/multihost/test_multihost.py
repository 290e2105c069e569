"""Jobs across several hosts, on the fake cluster of conftest.py (one network, UTS and IPC
namespace per host; MPICH's mpiexec reaches them through launch/fake_ssh.sh, as it reaches
real hosts through ssh). The jobs start through launch/mpirun_hostfile.sh, as a user's do.

The first collective across hosts sets up connections (1-2.5 s): a few short jobs only."""
import json
import re
import shutil
import sys
import time

import pytest

from comm_helpers import ROOT, assert_all_checks_passed, output, run
from fake_cluster import FAKE_SSH

DDP_CHECKS = 16  # the check_* functions of tests/parallel/ddp_checks.py
MULTIHOST_CHECKS = 6  # those of rank_multihost.py


def test_ddp_2_hosts_x_2_ranks_equals_single_process(cluster, tmp_path):
    """launch/mpirun_hostfile.sh runs tests/parallel/ddp_checks.py on 2 hosts x 2 ranks: DDP
    (SGD, Adam, hooks, join, unused parameters, SyncBatchNorm...) equals single-process
    training on every rank, with the gradients all-reduced hierarchically across the hosts."""
    hostfile = cluster.hostfile(tmp_path, cluster.hosts[:2], 2)
    results = tmp_path / "ddp.json"
    result = cluster.run_hostfile(hostfile, ["tests/parallel/ddp_checks.py", results], timeout=180)
    assert_all_checks_passed(result, 4, DDP_CHECKS)
    failed = {check: ranks for check, ranks in json.loads(results.read_text()).items()
              if check not in ("info", "exposed_ms") and any(v != "ok" for v in ranks.values())}
    assert not failed, failed


@pytest.mark.parametrize("hosts, per_host, hierarchical", [(2, 2, None), (3, 1, "1")],
                         ids=["2x2-by-topology", "3x1-forced"])
def test_ranks_hosts_and_hierarchical_all_reduce(cluster, tmp_path, hosts, per_host, hierarchical):
    """Rank, world size, local rank and local world size are right on every rank of each
    host; the shared-memory all-reduce is used within a host and never across; the
    hierarchical all-reduce (chosen by topology at 2x2, by DTRAIN_HIERARCHICAL=1 at 3x1)
    and a flat one equal NumPy's reduction for every op, dtype and odd size
    (tests/multihost/rank_multihost.py). A model with one more layer on the last host's ranks
    makes DDP raise on every rank, naming both parameter counts and both hosts."""
    hostfile = cluster.hostfile(tmp_path, cluster.hosts[:hosts], per_host)
    env = {"DTRAIN_HIERARCHICAL": hierarchical} if hierarchical else {}
    result = cluster.run_hostfile(hostfile, ["tests/multihost/rank_multihost.py", hosts, per_host], timeout=180, **env)
    assert_all_checks_passed(result, hosts * per_host, MULTIHOST_CHECKS)


def test_killed_rank_ends_the_job_naming_rank_and_host(cluster, tmp_path):
    """A rank killed by SIGKILL on host 2 ends the job within seconds (its peers would wait
    a minute), and the output names the rank and its host."""
    hostfile = cluster.hostfile(tmp_path, cluster.hosts[:2], 2)
    start = time.monotonic()
    result = cluster.run_hostfile(hostfile, ["tests/multihost/rank_killed.py"], timeout=60)
    took = time.monotonic() - start
    assert result.returncode != 0, output(result)
    assert f"rank 3 on host {cluster.hosts[1]} was killed by SIGKILL" in result.stderr, output(result)
    assert took < 45, f"the job took {took:.1f} s to end after rank 3 was killed\n{output(result)}"


def test_unreachable_host_is_named_before_the_job_starts(cluster, tmp_path):
    """A hostfile naming a host that cannot be reached fails at once, naming that host, and
    starts no rank anywhere."""
    missing = f"{cluster.name}-h9"
    hostfile = cluster.hostfile(tmp_path, [cluster.hosts[0], missing], 1)
    start = time.monotonic()
    result = cluster.run_hostfile(hostfile, ["tests/multihost/rank_join.py"], timeout=60)
    assert result.returncode == 1, output(result)
    assert f"cannot reach host {missing} through {FAKE_SSH}" in result.stderr, output(result)
    assert "joined" not in result.stdout and cluster.hosts[0] not in result.stderr, output(result)
    assert time.monotonic() - start < 30


def test_other_dtrain_version_on_one_host_is_named(cluster, tmp_path):
    """A host whose Python finds another dtrain version (a copy with another __version__, first
    on its PYTHONPATH) makes init_process_group fail on every rank, naming both versions and
    the hosts and ranks that run them: no rank hangs."""
    other = tmp_path / "other"
    shutil.copytree(f"{ROOT}/dtrain", other / "dtrain", ignore=shutil.ignore_patterns("__pycache__"))
    init = other / "dtrain" / "__init__.py"
    text = init.read_text()
    version = re.search(r'__version__ = "([^"]+)"', text).group(1)
    init.write_text(text.replace(f'__version__ = "{version}"', '__version__ = "0.0.1.other"'))
    env = cluster.env()
    common = [sys.executable, "tests/multihost/rank_join.py"]
    # one rank per host (they fill the machine file in order), the second with the other copy first
    # on its path (mpiexec's MPMD form)
    machines = tmp_path / "machines"
    machines.write_text(f"{cluster.hosts[0]}:1\n{cluster.hosts[1]}:1\n")
    args = [cluster.mpiexec, *cluster.mpiexec_args(), "-f", machines, "-n", "1", *common, ":",
            "-n", "1", "-env", "PYTHONPATH", f"{other}:{env['PYTHONPATH']}", *common]
    result = run([str(a) for a in args], timeout=60, env=env)
    assert result.returncode != 0, output(result)
    message = (f"different dtrain versions: dtrain {version} on host {cluster.hosts[0]} (rank 0); "
               f"dtrain 0.0.1.other on host {cluster.hosts[1]} (rank 1)")
    assert message in result.stdout + result.stderr, output(result)
    assert "joined" not in result.stdout, output(result)


def test_launcher_nproc_refuses_a_hostfile(capsys):
    """``python -m dtrain.launch --nproc 2 --hostfile FILE`` stops before starting anything and
    says that --nproc is single-host and how to run on the hosts of FILE."""
    from dtrain import launch
    with pytest.raises(SystemExit) as stop:
        launch.main(["--nproc", "2", "--hostfile", "hosts.txt", "train.py"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--hostfile" in err and "this machine only" in err and "launch/mpirun_hostfile.sh hosts.txt" in err, err
