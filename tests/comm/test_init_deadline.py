"""init_process_group's deadline (issue #15, item 6): joining the group (MPI_Init, which waits
for every rank, and the world's communicators) ends the job after the collective timeout
instead of waiting forever for a peer stuck before init. In-process, on the deadline object;
tests/faults/test_comm_faults.py runs it in a real job ("rank stuck before init_process_group")."""
import os
import time
from types import SimpleNamespace

import pytest

from dtrain.comm.lifecycle import _InitDeadline


@pytest.fixture
def exits(monkeypatch):
    """os._exit recorded instead of leaving the test process."""
    codes = []
    monkeypatch.setattr(os, "_exit", codes.append)
    return codes


def test_a_slow_init_ends_the_job_naming_the_limit(exits, capsys):
    """Past the timeout, the report names init_process_group, the limit, the rank and the
    setting that changes it, and the process exits 1 (MPI may not be up: no MPI_Abort)."""
    with _InitDeadline(SimpleNamespace(rank=0, world_size=2), 0.05):
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.01)
    assert exits == [1]
    assert capsys.readouterr().err.startswith(
        "rank 0 failed: DistTimeoutError: init_process_group did not finish within 0.05 s on rank 0 of 2: a rank "
        "has not called it (it may be stuck before it, or dead); which one is unknown before MPI is up "
        "(DTRAIN_TIMEOUT or timeout= sets the limit)\n")


def test_an_init_in_time_is_left_alone(exits, capsys):
    """An init that finishes before the deadline ends nothing, even after the deadline passes."""
    with _InitDeadline(SimpleNamespace(rank=0, world_size=2), 0.2):
        pass
    time.sleep(0.4)
    assert exits == [] and capsys.readouterr().err == ""


def test_higher_ranks_wait_longer():
    """Every waiting rank times out at once: rank r waits STAGGER s per rank longer (at most
    MAX_STAGGER), so that under a plain mpiexec the lowest one's report ends the job alone."""
    delays = [_InitDeadline(SimpleNamespace(rank=r, world_size=8), 2.0).timer.interval for r in (0, 1, 2, 7)]
    assert delays == [2.0, 2.0 + _InitDeadline.STAGGER, 2.0 + 2 * _InitDeadline.STAGGER,
                      2.0 + _InitDeadline.MAX_STAGGER]
