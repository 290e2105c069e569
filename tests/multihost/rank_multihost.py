"""Rank script of a job across the fake cluster's hosts (tests/multihost/conftest.py), run by
test_multihost.py at 2 hosts x 2 ranks and 3 hosts x 1 rank:

``rank_multihost.py HOSTS RANKS_PER_HOST``

Checks (reported through tests/rank_harness.py, ``rank R: all N checks passed``):

* the launcher's view: rank, world size, local rank and local world size, each rank on the
  host the hostfile puts it on (ranks fill hosts in order), torchrun's variables alike;
* the shared-memory all-reduce within a host only: the world group (across hosts) has none;
  its hierarchical all-reduce's shared memory holds the ranks of one host; a group of one
  host's ranks has it; a group with one rank per host has neither;
* the hierarchical all-reduce (the world group, hierarchical by topology or by
  DTRAIN_HIERARCHICAL=1) and a flat group of the same ranks (made with DTRAIN_HIERARCHICAL=0)
  both equal NumPy's reduction: every op a dtype allows, every dtype, odd sizes, above and
  below the shared-memory threshold, sync, async and coalesced (with DDP's scale);
* DDP over ranks whose last host builds the model with one more layer: every rank raises,
  naming the parameter count of both sides and the host of each.
"""
import os
import socket
import sys

import numpy as np

import dtrain
import dtrain.comm as dist
from dtrain.comm import ReduceOp, lifecycle
from rank_harness import RankChecks

HOSTS, PER_HOST = int(sys.argv[1]), int(sys.argv[2])
checks = RankChecks(backend="mpi")
RANK, N = checks.rank, checks.world_size
WORLD = lifecycle._state.world
HOST_OF = [r // PER_HOST for r in range(N)]  # ranks fill the hostfile's hosts in order
CLUSTER = socket.gethostname().rsplit("-h", 1)[0]

DTYPES = (np.bool_, np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64, np.complex64)
SIZES = (1, 7, 100_003)  # 100_003 float32/int32/... > 256 KiB: the shared-memory path within a host
OPS = (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX)
RTOL = {"float16": 4e-3, "float32": 1e-5, "float64": 1e-12, "complex64": 1e-5}
ATOL = {"float16": 1e-2}  # AVG divides 16-bit floats before the sum: each x / N is rounded


def allowed(dtype, op):
    kind = np.dtype(dtype).kind
    return not (op is ReduceOp.AVG and kind not in "fc") and not (kind == "c" and op in (ReduceOp.MIN, ReduceOp.MAX))


def make(rank, size, dtype, op):
    rng = np.random.default_rng(1000 * rank + size)
    kind = np.dtype(dtype).kind
    if kind == "b":
        return rng.random(size) < (0.9 if op is ReduceOp.PRODUCT else 0.2)
    if op is ReduceOp.PRODUCT:  # mostly ones: no overflow
        values = np.where(rng.random(size) < 0.01, rng.integers(2, 3, size), 1)
        return values.astype(dtype)
    low = 0 if kind == "u" else -20
    values = rng.integers(low, 20, size).astype(dtype)
    if kind == "c":
        values = values + 1j * rng.integers(-20, 20, size)
    return values.astype(dtype)


def expected(size, dtype, op):
    stack = np.stack([make(r, size, dtype, op) for r in range(N)])
    if np.dtype(dtype).kind == "b":
        return {ReduceOp.SUM: stack.any(0), ReduceOp.MAX: stack.any(0), ReduceOp.PRODUCT: stack.all(0),
                ReduceOp.MIN: stack.all(0)}[op]
    wide = stack.astype(np.complex128 if np.dtype(dtype).kind == "c" else np.float64)
    result = {ReduceOp.SUM: wide.sum(0), ReduceOp.AVG: wide.sum(0) / N, ReduceOp.PRODUCT: wide.prod(0),
              ReduceOp.MIN: wide.min(0), ReduceOp.MAX: wide.max(0)}[op]
    return result.astype(dtype) if np.dtype(dtype).kind in "iub" else result


def close(got, want, dtype, what):
    name = np.dtype(dtype).name
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}"
    if name in RTOL:
        np.testing.assert_allclose(got, want, rtol=RTOL[name], atol=ATOL.get(name, 1e-6), err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def launcher_view():
    assert N == HOSTS * PER_HOST, f"world size {N}, expected {HOSTS} x {PER_HOST}"
    assert dist.get_local_rank() == RANK % PER_HOST, f"local rank {dist.get_local_rank()} on rank {RANK}"
    assert dist.get_local_world_size() == PER_HOST, f"local world size {dist.get_local_world_size()}"
    host = socket.gethostname()
    assert host == f"{CLUSTER}-h{HOST_OF[RANK] + 1}", f"rank {RANK} runs on {host}"
    assert WORLD.topology.hosts[RANK] == host and WORLD.topology.node_ids == tuple(HOST_OF), WORLD.topology
    assert (os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"]) == (str(RANK % PER_HOST), str(PER_HOST))


def shared_memory_within_hosts():
    assert WORLD.shm == {}, "the world group spans hosts but has a shared-memory all-reduce"
    for hierarchy in WORLD.hierarchy.values():
        if PER_HOST > 1:
            mine = [r for r in range(N) if HOST_OF[r] == HOST_OF[RANK]]
            assert hierarchy.shm is not None and hierarchy.shm.ranks == mine, (hierarchy.shm and hierarchy.shm.ranks)
        else:
            assert hierarchy.shm is None
    if PER_HOST > 1:  # a group of host 0's ranks: shared memory; the others are not members
        local = dist.new_group(list(range(PER_HOST)))
        if RANK < PER_HOST:
            assert local.shm and not local.hierarchy, (local.shm, local.hierarchy)
            a = make(RANK, 100_003, np.float32, ReduceOp.SUM)
            dist.all_reduce(a, group=local)
            want = sum(make(r, 100_003, np.float32, ReduceOp.SUM).astype(np.float64) for r in range(PER_HOST))
            np.testing.assert_allclose(a, want, rtol=1e-6)
            dist.destroy_process_group(local)
    spread = dist.new_group([h * PER_HOST for h in range(HOSTS)])  # one rank per host
    if RANK % PER_HOST == 0:
        assert not spread.shm, "a group with one rank per host has a shared-memory all-reduce"
        forced = os.environ.get("DTRAIN_HIERARCHICAL") == "1"
        assert bool(spread.hierarchy) == forced, (spread.hierarchy, forced)
        dist.destroy_process_group(spread)


def hierarchical_by_topology():
    forced = os.environ.get("DTRAIN_HIERARCHICAL")
    want = forced == "1" or (forced is None and PER_HOST > 1)
    assert bool(WORLD.hierarchy) == want, (WORLD.hierarchy, forced, PER_HOST)


def flat_group():
    """A group of every rank that all-reduces flat (DTRAIN_HIERARCHICAL=0 when it is made)."""
    before = os.environ.get("DTRAIN_HIERARCHICAL")
    os.environ["DTRAIN_HIERARCHICAL"] = "0"
    try:
        group = dist.new_group(list(range(N)))
    finally:
        if before is None:
            del os.environ["DTRAIN_HIERARCHICAL"]
        else:
            os.environ["DTRAIN_HIERARCHICAL"] = before
    assert not group.hierarchy and not group.shm
    return group


def equivalence(flat):
    for group, path in ((None, "hierarchical"), (flat, "flat")):
        for dtype in DTYPES:
            for size in SIZES:
                for op in filter(lambda op: allowed(dtype, op), OPS):
                    what = f"{path} all_reduce {np.dtype(dtype).name} x {size} {op!r}"
                    want = expected(size, dtype, op)
                    a = make(RANK, size, dtype, op)
                    dist.all_reduce(a, op=op, group=group)
                    close(a, want, dtype, what)
                    t = dtrain.tensor(make(RANK, size, dtype, op))
                    dist.all_reduce(t, op=op, group=group, async_op=True).wait()
                    close(t.numpy(), want, dtype, f"async {what}")


def other_model_on_last_host():
    from dtrain import nn
    from dtrain.parallel import DistributedDataParallel as DDP
    last = HOST_OF[RANK] == HOSTS - 1
    model = nn.Sequential(nn.Linear(4, 4), *([nn.Linear(4, 4)] if last else []))
    try:
        DDP(model)
    except RuntimeError as e:
        message = str(e)
    else:
        raise AssertionError("DDP accepted a model with more parameters on the last host")
    other = (HOSTS - 1) * PER_HOST  # the first rank of the last host: the first that differs from rank 0
    for part in ("rank 0 has 2 parameters", f"rank {other} has 4", f"rank 0 on host {CLUSTER}-h1",
                 f"rank {other} on host {CLUSTER}-h{HOSTS}"):
        assert part in message, f"{part!r} not in: {message}"


def coalesced(flat):
    """DDP's call: a bucket of several gradients, averaged (scale 1/N, then sum)."""
    for group in (None, flat):
        for dtype in (np.float32, np.float64):
            sizes = (5, 100_000, 3)
            arrays = [make(RANK, s, dtype, ReduceOp.SUM) for s in sizes]
            dist.all_reduce_coalesced(arrays, op=ReduceOp.AVG, group=group)
            for a, s in zip(arrays, sizes):
                close(a, expected(s, dtype, ReduceOp.AVG), dtype, f"coalesced {np.dtype(dtype).name} {s}")


checks.run("launcher_view", launcher_view)
checks.run("hierarchical_by_topology", hierarchical_by_topology)
checks.run("shared_memory_within_hosts", shared_memory_within_hosts)
FLAT = flat_group()
checks.run("equivalence", equivalence, FLAT)
checks.run("coalesced", coalesced, FLAT)
checks.run("other_model_on_last_host", other_model_on_last_host)
dist.destroy_process_group(FLAT)
checks.finish()
