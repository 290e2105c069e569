"""The fake cluster of the multi-host tests (launch/fake_cluster.sh) as the tests use it:
its hosts, hostfiles, and how to start a job on them (the fixture is in conftest.py)."""
import os
import sys

from comm_helpers import ROOT, clean_env, run

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

