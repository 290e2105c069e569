"""The fake cluster of the multi-host tests: 3 "hosts" on this machine, made once per test
session by launch/fake_cluster.sh (a network, UTS and IPC namespace each, on a private
bridge) and removed at the end, even when tests fail. Where they cannot be made (not root,
no ip/unshare/nsenter, or the kernel refuses) the tests that use it skip, saying why."""
import os
import re
import subprocess

import pytest

from comm_helpers import require_mpi
from fake_cluster import FAKE_CLUSTER, HOSTS, STATE, Cluster


def _remove_stale():
    """Clusters left by test sessions that were killed before their teardown (named dt<pid>)."""
    names = {m.group(1) for m in map(re.compile(r"^(dt(\d+))-h\d$").match, os.listdir(STATE) if os.path.isdir(STATE)
                                      else []) if m}
    for name in names:
        if not os.path.exists(f"/proc/{name[2:]}"):
            subprocess.run(["bash", FAKE_CLUSTER, "down", name], capture_output=True, timeout=30)


def _free_subnet(pid):
    """A 10.213.x /24 that no interface of this machine uses (another session's cluster)."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for k in range(250):
        x = (pid + k) % 250 + 1
        if f" 10.213.{x}." not in used:
            return f"10.213.{x}"
    pytest.skip("no free 10.213.x.0/24 for the fake cluster (250 in use)")


@pytest.fixture(scope="session")
def cluster():
    mpiexec = require_mpi()
    check = subprocess.run(["bash", FAKE_CLUSTER, "check"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"no fake cluster on this machine: {check.stderr.strip()}")
    _remove_stale()
    pid = os.getpid()
    name, subnet = f"dt{pid % 1_000_000}", _free_subnet(pid)
    try:
        up = subprocess.run(["bash", FAKE_CLUSTER, "up", name, str(HOSTS), subnet], capture_output=True, text=True,
                            timeout=60)
        if up.returncode != 0:
            pytest.skip(f"could not make the fake cluster here: {up.stderr.strip()}")
        yield Cluster(name, subnet, mpiexec)
    finally:
        subprocess.run(["bash", FAKE_CLUSTER, "down", name], capture_output=True, timeout=60)
