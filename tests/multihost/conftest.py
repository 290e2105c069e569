"""The fake cluster of the multi-host tests: 3 "hosts" on this machine, made once per test
session by launch/fake_cluster.sh (a network, UTS and IPC namespace each, on a private
bridge) and removed at the end, even when tests fail. Where they cannot be made (not root,
no ip/unshare/nsenter, or the kernel refuses) the tests that use it skip, saying why."""
import os
import re
import subprocess
import sys

import pytest

from comm_helpers import ROOT, clean_env, require_mpi, run

FAKE_CLUSTER = os.path.join(ROOT, "launch", "fake_cluster.sh")
FAKE_SSH = os.path.join(ROOT, "launch", "fake_ssh.sh")
MPIRUN_HOSTFILE = os.path.join(ROOT, "launch", "mpirun_hostfile.sh")
STATE = "/run/dtrain-fake-cluster"
HOSTS = 3


class Cluster:
    """A fake cluster: ``hosts`` (names), and how to start jobs on them."""

    def __init__(self, name, subnet, mpiexec):
        self.name, self.subnet, self.mpiexec = name, subnet, mpiexec
        self.hosts = [f"{name}-h{i}" for i in range(1, HOSTS + 1)]

    def hostfile(self, folder, hosts, slots):
        """A hostfile (Open MPI's form, as launch/mpirun_hostfile.sh reads it) of ``hosts``."""
        path = folder / f"hosts-{len(hosts)}x{slots}"
        path.write_text("".join(f"{h} slots={slots}\n" for h in hosts))
        return path

    def mpiexec_args(self):
        """mpiexec's options that reach the hosts: the launcher hook, and the address the
        proxies call back (the bridge's; the machine's hostname means nothing inside)."""
        return ["-launcher", "ssh", "-launcher-exec", FAKE_SSH, "-localhost", f"{self.subnet}.1"]

    def env(self, **extra):
        """The environment of launch/mpirun_hostfile.sh for this cluster."""
        return clean_env(SSH=FAKE_SSH, MPIRUN=self.mpiexec, PYTHON=sys.executable,
                         MPIRUN_ARGS=f"-localhost {self.subnet}.1", UCX_LOG_LEVEL="error", **extra)

    def run_hostfile(self, hostfile, args, timeout, **env):
        """``launch/mpirun_hostfile.sh HOSTFILE args...``"""
        return run(["bash", MPIRUN_HOSTFILE, str(hostfile), *map(str, args)], timeout, self.env(**env))


def _remove_stale():
    """Clusters left by test sessions that were killed before their teardown (named dt<pid>)."""
    names = {m.group(1) for m in map(re.compile(r"^(dt(\d+))-h\d$").match, os.listdir(STATE) if os.path.isdir(STATE)
                                      else []) if m}
    for name in names:
        if not os.path.exists(f"/proc/{name[2:]}"):
            subprocess.run(["bash", FAKE_CLUSTER, "down", name], capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def cluster():
    mpiexec = require_mpi()
    check = subprocess.run(["bash", FAKE_CLUSTER, "check"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"no fake cluster on this machine: {check.stderr.strip()}")
    _remove_stale()
    pid = os.getpid()
    name, subnet = f"dt{pid % 1_000_000}", f"10.213.{pid % 250 + 1}"
    try:
        up = subprocess.run(["bash", FAKE_CLUSTER, "up", name, str(HOSTS), subnet], capture_output=True, text=True,
                            timeout=60)
        if up.returncode != 0:
            pytest.skip(f"could not make the fake cluster here: {up.stderr.strip()}")
        yield Cluster(name, subnet, mpiexec)
    finally:
        subprocess.run(["bash", FAKE_CLUSTER, "down", name], capture_output=True, timeout=60)
