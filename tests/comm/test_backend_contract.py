"""The backend contract: every primitive a backend implements is declared on the
ProcessGroup base, and each backend (Local, MPI, NCCL) implements or explicitly refuses each
one; what reaches a primitive a backend lacks raises an error naming the backend and the
primitive. In-process: no MPI job, no GPU (the classes are inspected, not built)."""
import inspect

import numpy as np
import pytest

import dtrain.comm as dist
from comm_helpers import clean_env
from dtrain.comm.local import LocalProcessGroup
from dtrain.comm.mpi import MPIProcessGroup
from dtrain.comm.nccl import NCCLProcessGroup
from dtrain.comm.process_group import ProcessGroup, ReduceOp, check_rank, invalid_ranks

PRIMITIVES = ["_allreduce", "_broadcast", "_reduce", "_allgather", "_reduce_scatter", "_gather", "_scatter",
              "_alltoallv", "_barrier", "_send", "_recv", "_isend", "_irecv"]
# what each backend refuses instead of implementing (a group of one rank has no peer)
REFUSED = {LocalProcessGroup: {"_send", "_recv", "_isend", "_irecv"}, MPIProcessGroup: set(), NCCLProcessGroup: set()}


def declared():
    """The primitives the base declares, in declaration order."""
    return [name for name, f in vars(ProcessGroup).items() if getattr(f, "backend_primitive", False)]


def placeholder_args(function):
    """One argument per parameter after ``self``: a small array, enough to reach the body."""
    return [np.zeros(2, np.float32) for _ in list(inspect.signature(function).parameters)[1:]]


def test_the_base_declares_the_primitives():
    """The base declares exactly these 13 primitives, each with a one-line docstring."""
    assert declared() == PRIMITIVES and len(declared()) == 13
    for name in PRIMITIVES:
        doc = getattr(ProcessGroup, name).__doc__
        assert doc and "\n" not in doc.strip(), (name, doc)


@pytest.mark.parametrize("name", PRIMITIVES)
def test_the_base_raises_naming_backend_and_primitive(name):
    """A backend that does not implement a primitive raises NotImplementedError naming its
    class and the primitive, whatever the arguments."""
    class Partial(ProcessGroup):
        pass
    group = Partial("partial", 0, [0])
    with pytest.raises(NotImplementedError, match=f"^Partial does not implement the backend primitive {name}: "):
        getattr(group, name)(*placeholder_args(getattr(ProcessGroup, name)))


@pytest.mark.parametrize("backend", list(REFUSED), ids=lambda c: c.__name__)
def test_each_backend_implements_or_refuses_each_primitive(backend):
    """Each backend class overrides every declared primitive: an implementation with the
    declared parameters, or an explicit refusal; the refusals are exactly those listed."""
    refused = set()
    for name in PRIMITIVES:
        mine, base = getattr(backend, name), getattr(ProcessGroup, name)
        assert mine is not base, f"{backend.__name__} neither implements nor refuses {name}"
        if getattr(mine, "refused", False):
            refused.add(name)
        else:
            assert list(inspect.signature(mine).parameters) == list(inspect.signature(base).parameters), name
    assert refused == REFUSED[backend]


@pytest.mark.parametrize("name", sorted(REFUSED[LocalProcessGroup]))
def test_the_local_group_refuses_loudly(name):
    """LocalProcessGroup's refusals raise NotImplementedError naming the class, the primitive and why."""
    group = LocalProcessGroup("mpi")
    with pytest.raises(NotImplementedError, match=f"^LocalProcessGroup refuses the backend primitive {name}: "
                                                  f"a group of one rank has no other rank"):
        getattr(group, name)(*placeholder_args(getattr(ProcessGroup, name)))


def test_the_local_group_implements_the_collectives():
    """Every collective primitive of the group of one rank runs: reductions leave the buffer,
    gathers and exchanges copy the send buffer."""
    group = LocalProcessGroup("mpi")
    send, recv = np.arange(3, dtype=np.float32), np.zeros(3, np.float32)
    group._allreduce(send, ReduceOp.SUM)
    group._reduce(send, ReduceOp.MAX, 0)
    group._broadcast(send, 0)
    group._barrier()
    np.testing.assert_array_equal(send, [0, 1, 2])
    for call in (lambda: group._allgather(send, recv), lambda: group._reduce_scatter(send, recv, ReduceOp.SUM),
                 lambda: group._gather(send, recv, 0), lambda: group._scatter(send, recv, 0),
                 lambda: group._alltoallv(send, [3], recv, [3])):
        recv[...] = -1
        call()
        np.testing.assert_array_equal(recv, send)


def test_rank_checks_share_one_rule(monkeypatch):
    """Group methods, new_group and get_global_rank validate ranks by one rule (Python or NumPy
    integers in [0, n - 1]) and quote the bad value and the interval."""
    assert invalid_ranks([0, np.int64(1), 2, -1, 1.0, "0"], 2) == [2, -1, 1.0, "0"]
    with pytest.raises(ValueError, match=r"^broadcast: invalid src rank 2: it should be in the interval \[0, 1\]$"):
        check_rank("broadcast", "src", 2, 2)
    monkeypatch.setattr("os.environ", clean_env())  # no launcher: a world of one rank
    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group()
    try:
        with pytest.raises(ValueError, match=r"^get_global_rank: invalid group rank 1: it should be in the "
                                             r"interval \[0, 0\]$"):
            dist.get_global_rank(dist.group.WORLD, 1)
        with pytest.raises(ValueError, match=r"^new_group: invalid ranks \[1\]: ranks should be in the interval"):
            dist.new_group([0, 1])
        with pytest.raises(ValueError, match=r"^broadcast: invalid src rank 1: it should be in the interval \[0, 0\]$"):
            dist.group.WORLD.broadcast(np.zeros(1), src=1)
        ranks = dist.get_process_group_ranks(dist.new_group([np.int64(0)]))
        assert ranks == [0] and type(ranks[0]) is int
    finally:
        dist.destroy_process_group()
