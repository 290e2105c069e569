"""Which host each rank runs on, learnt once, when the world group is made.

A "host" is what MPI says shares memory (``MPI_COMM_TYPE_SHARED``): the ranks that can use
the shared-memory all-reduce (:mod:`.shm`) together. Its name (for messages) is the rank's
``socket.gethostname()``. The exchange also compares dtrain's version across the ranks: a
host with another dtrain installed would otherwise fail later in ways that name nothing (a
collective that one side calls and the other does not, a header of another layout).
"""
import socket
import sys
from typing import NamedTuple

from .errors import DistError


class Topology(NamedTuple):
    """``hosts[r]``: the host name of global rank r; ``node_ids[r]``: the index of its host,
    in the order the hosts' lowest ranks come (the same on every rank)."""
    hosts: tuple
    node_ids: tuple

    def ranks_on(self, node):
        return [r for r, n in enumerate(self.node_ids) if n == node]

    def describe(self, ranks):
        """``"host a (ranks 0, 1), host b (rank 2)"`` for the global ``ranks``."""
        by_host = {}
        for r in ranks:
            by_host.setdefault(self.hosts[r], []).append(r)
        return ", ".join(f"host {h} (rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))})"
                         for h, rs in by_host.items())


def hosts_of(ranks):
    """``" (rank 0 on host a, rank 3 on host b)"`` for global ``ranks`` when the job spans
    hosts, else ``""``: for error messages about ranks that differ (a host set up otherwise
    than the others is the usual cause)."""
    from .lifecycle import _state  # lifecycle imports the backends, which import this module
    topology = getattr(_state.world, "topology", None)
    if topology is None or len(set(topology.node_ids)) < 2:
        return ""
    return f" ({', '.join(f'rank {r} on host {topology.hosts[r]}' for r in ranks)})"


def dtrain_version():
    """This process's dtrain version. comm sits below the package's ``__init__`` (which defines
    it) in the layering, so it is read from the imported package, not imported: a process
    that runs comm code has imported the package first (Python imports parents first)."""
    return getattr(sys.modules.get(__name__.split(".")[0]), "__version__", "unknown")


def exchange(world, node):
    """Every rank's host; raise on every rank if the ranks run different dtrain versions.

    Args:
        world: COMM_WORLD (a collective over it).
        node: this rank's ``COMM_TYPE_SHARED`` split of ``world``, keyed by world rank.

    Returns:
        the :class:`Topology`.

    Raises:
        DistError: naming each version and the hosts and ranks that run it.
    """
    leader = node.allreduce(world.Get_rank(), op=_min_op())  # the host's lowest world rank: its id
    views = world.allgather((socket.gethostname(), leader, dtrain_version()))
    leaders = sorted({lead for _, lead, _ in views})
    topology = Topology(tuple(h for h, _, _ in views), tuple(leaders.index(lead) for _, lead, _ in views))
    versions = {}
    for rank, (_, _, version) in enumerate(views):
        versions.setdefault(version, []).append(rank)
    if len(versions) > 1:
        sides = "; ".join(f"dtrain {v} on {topology.describe(rs)}" for v, rs in versions.items())
        raise DistError(f"the ranks of this job run different dtrain versions: {sides}. "
                        f"Install the same dtrain on every host (the hosts of the hostfile, or the nodes "
                        f"of the allocation)")
    return topology


def _min_op():
    from mpi4py import MPI  # only called once the MPI backend is up
    return MPI.MIN
