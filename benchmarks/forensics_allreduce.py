"""What hang forensics and the sampled cross-rank check cost a small blocking all_reduce
(dtrain.comm.all_reduce of a NumPy float32 array on the world group, the hot path).

Variants, interleaved round after round in an order that alternates (a loaded machine slows
them alike), each call started from a barrier (benchmarks/allreduce.py's ``timed``):

  bare            no call-site walk, no check (the group's check_due replaced by a builtin that
                  returns False): close to the hot path before issue 15 (the history's append stays)
  history         each call recorded with its call site (forensics), the check off
  defaults        history + the sampled check (calls 1, 2, 4, ... then every 64th): what users get
  check each      history + the sampled check on every call (DTRAIN_CHECK_EVERY=1): the check's
                  own cost, one hash all-reduce of two int64 per call
  debug mode      DTRAIN_DEBUG=1: every call's description gathered from every rank

Then, in the reference MLP's DDP step (784-1024-1024-10, batch 256 per rank, SGD momentum),
what the call-site walk of its collectives costs: the main thread's CPU time inside
``call_site`` per step, against the step's (its calls come from DDP's hooks deep in backward,
where the first walk of a frame chain also makes Python's frame objects).

Printed per size: each variant's median time (us) and its ratio to "bare" (median of the
per-round ratios). Under ``mpiexec -n 1`` (MPI's own work nil; the checks are forced on, and
exchange with the rank itself) the time is the calling thread's CPU time over back-to-back
calls (``time.thread_time``): each variant's Python cost, which a loaded machine barely
changes, where the wall time of a 2-rank all-reduce then varies tenfold. Usage:

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/forensics_allreduce.py [--rounds 11] [--calls 400]
        [--ddp-steps 30] [--json forensics_allreduce.json]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # before NumPy loads its BLAS: one thread per rank

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain.comm as dist  # noqa: E402
from allreduce import timed  # noqa: E402  (benchmarks/ is the script's folder: sys.path[0])
from dtrain.comm import call_check, mpi  # noqa: E402
from dtrain.comm.lifecycle import _state  # noqa: E402  (the switches live on the world group and the state)

SIZES = (4, 4 << 10, 64 << 10)  # bytes: below the shared-memory threshold, where a call's fixed cost shows
VARIANTS = ("bare", "history", "defaults", "check each", "debug mode")


def configure(world, variant, real_call_site):
    """Switch the world group (every rank alike, between measurements) to ``variant``."""
    world.__dict__.pop("check_due", None)  # the method again
    mpi.call_site = real_call_site
    _state.debug = variant == "debug mode"
    every = {"defaults": call_check.DEFAULT_EVERY, "check each": 1}.get(variant, 0)
    world.check_every = every
    if every:  # the next call due, from the group's call number (the same on every rank)
        world.next_check = call_check.next_check(world.seq + 1, every)
    if variant == "bare":
        world.check_due = bool  # bool() is False, at a builtin's cost
        mpi.call_site = lambda depth: None


def cpu_timed(fn, calls):
    """Seconds of this thread's CPU time per call over ``calls`` back-to-back calls."""
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - start) / calls


def ddp_site_cost(steps):
    """``(collectives per step, us of call_site CPU time per step, ms of CPU time per step)``
    of the reference MLP's DDP step, after 5 warm-up steps."""
    import dtrain
    import dtrain.nn as nn
    import dtrain.nn.functional as F
    from dtrain.parallel import DistributedDataParallel as DDP
    dtrain.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)))
    optimizer = dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(dist.get_rank())
    x = dtrain.tensor(rng.random((256, 784), dtype=np.float32))
    y = dtrain.tensor(rng.integers(0, 10, 256))
    real, spent = mpi.call_site, []

    def timed_site(depth):
        start = time.thread_time()
        site = real(depth + 1)
        spent.append(time.thread_time() - start)
        return site

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    for _ in range(5):
        step()
    mpi.call_site = timed_site
    start = time.thread_time()
    for _ in range(steps):
        step()
    total = time.thread_time() - start
    mpi.call_site = real
    return len(spent) / steps, sum(spent) / steps * 1e6, total / steps * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--ddp-steps", type=int, default=30, help="DDP steps for the call-site cost (0: skip)")
    p.add_argument("--json", default="forensics_allreduce.json", help="where rank 0 writes the results")
    args = p.parse_args()
    dist.init_process_group(backend="mpi")
    from mpi4py import MPI
    comm, world = MPI.COMM_WORLD.Dup(), dist.group.WORLD
    real_call_site = mpi.call_site
    clock = cpu_timed if comm.size == 1 else lambda fn, calls: timed(comm, fn, calls)
    rows = []
    for nbytes in SIZES:
        buf = np.ones(max(1, nbytes // 4), np.float32)
        times = {v: [] for v in VARIANTS}
        for v in VARIANTS:  # warm-up
            configure(world, v, real_call_site)
            clock(lambda: dist.all_reduce(buf), 20)
        for r in range(args.rounds):
            for v in (VARIANTS if r % 2 == 0 else reversed(VARIANTS)):
                configure(world, v, real_call_site)
                times[v].append(clock(lambda: dist.all_reduce(buf), args.calls))
        ratios = {v: statistics.median(t / b for t, b in zip(times[v], times["bare"])) for v in VARIANTS}
        rows.append(dict(bytes=nbytes, calls=args.calls, rounds=args.rounds,
                         time_us={v: statistics.median(ts) * 1e6 for v, ts in times.items()}, ratio_to_bare=ratios))
    configure(world, "defaults", real_call_site)
    ddp = ddp_site_cost(args.ddp_steps) if args.ddp_steps else None
    if comm.rank == 0:
        how = "CPU time of back-to-back calls" if comm.size == 1 else "each call from a barrier"
        print(f"blocking all_reduce, float32, {comm.size} ranks, {how}, {args.rounds} rounds of {args.calls} calls, "
              f"MPI: {MPI.Get_library_version().splitlines()[0]}")
        print(f"{'bytes':>7} " + " ".join(f"{v:>17}" for v in VARIANTS) + "   (median us; x bare)")
        for row in rows:
            print(f"{row['bytes']:>7} " + " ".join(f"{row['time_us'][v]:8.2f} ({row['ratio_to_bare'][v]:5.3f})"
                                                   for v in VARIANTS))
        if ddp is not None:
            calls, site_us, step_ms = ddp
            print(f"\nDDP step (reference MLP, rank 0, {args.ddp_steps} steps): {calls:.1f} collectives a step, their "
                  f"call-site walks {site_us:.1f} us of CPU time a step, {site_us / 1e3 / step_ms:.3%} of the step's "
                  f"{step_ms:.1f} ms")
        with open(args.json, "w") as f:
            json.dump(dict(ranks=comm.size, mpi=MPI.Get_library_version().splitlines()[0], rows=rows,
                           ddp=None if ddp is None else dict(zip(("collectives_per_step", "call_site_us_per_step",
                                                                  "step_cpu_ms"), ddp))), f, indent=2)
        print(f"\nwrote {args.json}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
