"""The process group of a lone process (world size 1): no MPI, no NCCL, just copies.

It lets a script written for several ranks run unchanged as ``python script.py``.
"""
from .process_group import ProcessGroup, refused
from .work import CompletedWork

NO_PEER = "a group of one rank has no other rank to exchange messages with"


class LocalProcessGroup(ProcessGroup):
    """A group of one rank: every collective leaves or copies its data in place.

    Args:
        backend: the name ``get_backend()`` reports ("mpi" or "nccl": what a launched job would use).
        global_rank: this process's global rank (0 for the world group).
    """

    def __init__(self, backend, global_rank=0, timeout=None):
        super().__init__(backend, 0, [global_rank], timeout)

    def _run(self, name, fn, arrays, async_op):
        fn()
        return CompletedWork(name) if async_op else None

    def _allreduce(self, buf, op):
        pass

    def _broadcast(self, buf, root):
        pass

    def _reduce(self, buf, op, root):
        pass

    # With one rank, every gather, scatter and exchange is a copy of the send buffer.
    def _allgather(self, send, recv):
        recv[...] = send

    def _reduce_scatter(self, send, recv, op):
        recv[...] = send

    def _gather(self, send, recv, root):
        recv[...] = send

    def _scatter(self, send, recv, root):
        recv[...] = send

    def _alltoallv(self, send, send_counts, recv, recv_counts):
        recv[...] = send

    def _barrier(self):
        pass

    # Point to point needs another rank, and a group of one has none: send/recv refuse every
    # peer before these (the peer must be in [0, 0] and not this rank), which say why if reached.
    _send = refused("_send", NO_PEER)
    _recv = refused("_recv", NO_PEER)
    _isend = refused("_isend", NO_PEER)
    _irecv = refused("_irecv", NO_PEER)

    def new_subgroup(self, ranks, timeout):
        return LocalProcessGroup(self.backend, self.ranks[0], timeout)
