"""Hierarchical all-reduce for a group that spans hosts (Horovod's HOROVOD_HIERARCHICAL_ALLREDUCE).

1. reduce within each host, to the host's leader (its lowest rank in the group): through
   the shared-memory all-reduce (:mod:`.shm`) above its threshold, else ``MPI_Reduce`` on
   the host's communicator;
2. all-reduce among the leaders, one per host (``MPI_Allreduce``: the only step that
   crosses hosts);
3. broadcast within each host from its leader (``MPI_Bcast``).

Each host sends its data across once, instead of once per rank: with 2 ranks on each of 2
hosts, MPICH's flat all-reduce of a large message moves about twice as many bytes across the
link (its reduce-scatter and all-gather each pair ranks on different hosts). Measured on
the namespaced cluster: benchmarks/allreduce.py --hosts, in benchmarks/RESULTS.md.

Which path a group takes is decided when the group is made, from facts every member
exchanges then (:func:`decide`), so every rank takes the same one: hierarchical when the
group spans several hosts and some host holds more than one of its ranks (with one rank
per host there is nothing to reduce locally). ``DTRAIN_HIERARCHICAL=1`` forces it for any
group that spans hosts, ``=0`` turns it off; a value that differs across the ranks is an
error. Results equal the flat all-reduce's up to the order of floating-point additions.
"""
import os
import socket

from .chunking import chunks
from .shm import SharedMemoryAllReduce, takes

ENV = "DTRAIN_HIERARCHICAL"
SETTINGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def decide(comm, node, ranks):
    """Whether the group of ``comm`` (which spans several hosts) all-reduces hierarchically;
    a collective over ``comm``. The same answer on every rank, or the same error.

    Args:
        comm: the group's communicator.
        node: this rank's ``COMM_TYPE_SHARED`` split of ``comm``.
        ranks: the group's global ranks, for messages.

    Raises:
        ValueError: ``DTRAIN_HIERARCHICAL`` is not 0 or 1, or differs across the ranks
            (naming each rank's value and host).
    """
    raw = os.environ.get(ENV)
    views = comm.allgather((raw, node.Get_rank() == 0, socket.gethostname()))
    values = {v for v, _, _ in views}
    if len(values) > 1:
        each = ", ".join(f"rank {r} on {host}: {v!r}" for r, (v, _, host) in zip(ranks, views))
        raise ValueError(f"{ENV} differs across the ranks of group {list(ranks)} ({each}): every rank must take "
                         f"the same all-reduce path; set it alike everywhere (mpirun -x / -genv) or not at all")
    if raw is not None and raw.strip().lower() not in SETTINGS:
        raise ValueError(f"{ENV}={raw!r}: expected 1 (hierarchical all-reduce across hosts) or 0 (flat); "
                         f"unset: hierarchical when some host holds more than one of a group's ranks")
    hosts = sum(leads for _, leads, _ in views)
    if raw is None:
        return hosts < comm.Get_size()
    return SETTINGS[raw.strip().lower()]


class HierarchicalAllReduce:
    """The hierarchical all-reduce over one communicator (one thread uses it, as :class:`.shm.SharedMemoryAllReduce`).

    Constructing one is a collective over ``comm``.

    Args:
        comm: the group's communicator (spanning several hosts).
        MPI: the ``mpi4py.MPI`` module.
        shm_min_bytes: messages of at least this many bytes are reduced within a host
            through shared memory; None: never.
    """

    def __init__(self, comm, MPI, shm_min_bytes):
        self.MPI = MPI
        self.node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        self.is_leader = self.node.Get_rank() == 0
        self.leaders = comm.Split(0 if self.is_leader else MPI.UNDEFINED, key=comm.Get_rank())  # COMM_NULL elsewhere
        local = self.node.Get_size() > 1
        self.shm = SharedMemoryAllReduce(self.node, MPI) if local and shm_min_bytes is not None else None
        self.shm_min_bytes = shm_min_bytes

    def all_reduce(self, buf, b, op, mop, complete=None):
        """Reduce ``buf`` in place on every rank.

        Args:
            buf: the flat buffer (NumPy, or CuPy).
            b: what MPI reads and writes for it (``buf``, a uint16 view of float16, or a host copy).
            op: the :class:`~.process_group.ReduceOp` (SUM, PRODUCT, MIN or MAX).
            mop: its MPI op for ``b``.
            complete: on the comm thread, :meth:`.work.CommThread.complete`: the MPI steps are
                then nonblocking requests it finishes without spinning (a blocking MPI call spins
                for as long as it waits, taking the CPU from the backward pass it overlaps);
                None: blocking calls.
        """
        MPI, node = self.MPI, self.node

        def call(blocking, nonblocking, *args, **kwargs):
            if complete is None:
                blocking(*args, **kwargs)
            else:
                complete(nonblocking(*args, **kwargs))

        if node.Get_size() > 1:
            if self.shm is not None and takes((buf,), op.value, self.shm_min_bytes):
                self.shm.all_reduce([buf], op.value)  # every rank gets the host's sum: step 3 only overwrites it
            else:
                if self.shm is not None:  # a peer on the shared-memory path for this call reports the mismatch
                    self.shm.announce(buf.size, buf.dtype, op.value)
                for s in chunks(b.size):
                    send, recv = (MPI.IN_PLACE, b[s]) if self.is_leader else (b[s], None)
                    call(node.Reduce, node.Ireduce, send, recv, op=mop, root=0)
        if self.is_leader and self.leaders.Get_size() > 1:
            for s in chunks(b.size):
                call(self.leaders.Allreduce, self.leaders.Iallreduce, MPI.IN_PLACE, b[s], op=mop)
        if node.Get_size() > 1:
            for s in chunks(b.size):
                call(node.Bcast, node.Ibcast, b[s], root=0)

    def free(self):
        """Release the communicators and windows (a collective over the group)."""
        if self.shm is not None:
            self.shm.free()
        if self.leaders != self.MPI.COMM_NULL:
            self.leaders.Free()
        self.node.Free()
        self.shm = None
