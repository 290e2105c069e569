"""The rank side of the tests' MPI jobs, shared by the rank scripts that check many things
in one job (tests/comm/rank_collectives.py, rank_shm.py, rank_gpu.py and
tests/parallel/ddp_checks.py), which import it through the PYTHONPATH that
comm_helpers.clean_env gives them.

Every rank runs the same named checks in the same order. A check that raises is recorded
with its traceback and the next one runs: every rank still reaches the collectives of the
later checks, so none is left waiting for a peer that gave up. At the end each rank prints
one line, ``rank R: all N checks passed``, or ``rank R: K of N checks FAILED`` followed by
each failure, and then exits 1. The tests assert N on every rank
(comm_helpers.assert_all_checks_passed): a check that silently stopped running lowers it.
"""
import sys
import traceback

import numpy as np

import dtrain.comm as dist

OK = "ok"


def rel(a, b):
    """The relative difference ||a - b|| / ||b|| (b all zeros: ||a - b|| / 1e-30)."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def gathered(obj):
    """``obj`` of every rank, in rank order (all_gather_object)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class RankChecks:
    """The checks of one rank: joins the process group, then ``run`` each check, then ``finish``.

    Example::

        checks = RankChecks("mpi")
        checks.run("all_reduce sums", all_reduce_sums)
        checks.finish()
    """

    def __init__(self, backend=None):
        dist.init_process_group(backend=backend)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.results = {}  # check name -> OK, or the error with its traceback

    def run(self, name, fn, *args):
        """Run ``fn(*args)`` as the check ``name``; an exception fails it (and only it)."""
        if name in self.results:
            raise ValueError(f"a second check named {name!r}: each check needs its own name to be counted")
        try:
            fn(*args)
            self.results[name] = OK
        except Exception as e:  # reported by finish, with the traceback
            self.results[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"

    def report(self, path):
        """Write every rank's results, ``{check: {rank: "ok" | error}}`` in the order the checks
        ran, to the JSON file ``path`` (rank 0 writes it), then :meth:`finish`."""
        import json
        everyone = gathered(self.results)
        if self.rank == 0:
            with open(path, "w") as f:
                json.dump({name: {r: res[name] for r, res in enumerate(everyone)} for name in self.results}, f,
                          indent=1)
        self.finish()

    def finish(self):
        """Leave the process group once every rank is done with it, print this rank's report
        and exit: 0 if every check passed, else 1."""
        dist.barrier()
        dist.destroy_process_group()
        assert not dist.is_initialized(), "destroy_process_group left the process group initialized"
        failed = [f"{name}: {result}" for name, result in self.results.items() if result != OK]
        if failed:
            print(f"rank {self.rank}: {len(failed)} of {len(self.results)} checks FAILED\n" + "\n".join(failed),
                  flush=True)
            sys.exit(1)
        print(f"rank {self.rank}: all {len(self.results)} checks passed", flush=True)
