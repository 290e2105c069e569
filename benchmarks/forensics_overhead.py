"""What the always-on forensics cost: the reference MLP's DDP step at 2 ranks with each feature
on and off, interleaved in one run.

MLP: 784-1024-1024-10, ReLU, cross-entropy, SGD(lr=0.01, momentum=0.9), batch 256 per rank
(weak scaling, as benchmarks/scaling.py), one BLAS thread per rank. Run:

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/forensics_overhead.py [--steps 10] [--rounds 15]
        [--json forensics_overhead.json]

Variants, each its own model (same initial weights, same batches), timed round after round
(``--steps`` steps each per round, in turn, so a noisy machine slows all alike):

  off               DDP(nonfinite="ignore"), DTRAIN_STRAGGLER_STEPS=0, DTRAIN_CHECK_EVERY=0
  nan flags         only DDP's non-finite flag (nonfinite="skip", the default)
  straggler gather  only the straggler gather (DTRAIN_STRAGGLER_STEPS default, every 100 steps)
  mismatch check    only the sampled collective check (DTRAIN_CHECK_EVERY default, every 64th call)
  all (defaults)    everything as a user gets it

A feature missing from this tree (its module or switch absent) is left out and said so. The
phase timer's spans (dtrain.timing) have no switch: every variant pays them (two perf_counter
reads per span, a few spans per step). The mismatch check's interval is shared by the whole
world group, so it is switched on and off (on every rank at the same call number) around
each variant's steps.

Per round and variant: the step time of the slowest rank, as wall time (perf_counter), as
the main thread's CPU time (time.thread_time: what the rank itself spent, less sensitive to
other processes; the comm thread's work is not in it) and as the whole process's CPU time
(time.process_time: the comm thread's work too, where the non-finite check now runs).
The table gives medians over rounds and each variant's overhead against "off": the median of
per-round ratios, minus 1. Also the non-finite check's own work, timed alone: the squared norms
of the MLP's gradients (one BLAS dot per gradient) per step, and (where
dtrain.comm.finite_flags exists) its cost as the default path takes it, inside the
shared-memory all-reduce.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
import dtrain.nn as nn  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402

STRAGGLER_ENV = "DTRAIN_STRAGGLER_STEPS"


def mlp():
    dtrain.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def has_nonfinite():
    try:
        from dtrain.parallel import nonfinite  # noqa: F401
    except ImportError:
        return False
    return True


def has_fused():
    try:
        from dtrain.comm import finite_flags  # noqa: F401
    except ImportError:
        return False
    return True


def has_stragglers():
    try:
        from dtrain.parallel import stragglers  # noqa: F401
    except ImportError:
        return False
    return True


def mismatch_switch():
    """A function ``(on) -> None`` turning the sampled collective check of the world group on
    (its default interval) or off, or None when this tree has no such check. The interval
    lives on the world group (rank 0's value, shared at init); the benchmark reaches it
    there: no public switch exists at run time."""
    try:
        from dtrain.comm import call_check
        from dtrain.comm.lifecycle import _state
    except ImportError:
        return None
    world = _state.world
    if world is None or not hasattr(world, "check_every") or not hasattr(call_check, "next_check"):
        return None
    default = world.check_every or call_check.DEFAULT_EVERY

    def switch(on):
        world.check_every = default if on else 0
        if on:  # the next call due, counted from the group's current call number (the same on every rank)
            world.next_check = call_check.next_check(world.seq + 1, default)
    return switch


@contextlib.contextmanager
def environment(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build(nan, straggler):
    """A DDP model and its optimizer with the non-finite flag and the straggler gather on or off."""
    options = {"nonfinite": "skip" if nan else "ignore"} if has_nonfinite() else {}
    env = {} if straggler else {STRAGGLER_ENV: 0}
    with environment(**env):  # read when the reducer is made
        model = DDP(mlp(), **options)
    return model, dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def variants(switch):
    """name -> (model, optimizer, whether the mismatch check is on); and the features left out."""
    missing = [name for name, there in (("nan flags", has_nonfinite()), ("straggler gather", has_stragglers()),
                                        ("mismatch check", switch is not None)) if not there]
    out = {"off": (*build(False, False), False)}
    if "nan flags" not in missing:
        out["nan flags"] = (*build(True, False), False)
    if "straggler gather" not in missing:
        out["straggler gather"] = (*build(False, True), False)
    if "mismatch check" not in missing:
        out["mismatch check"] = (*build(False, False), True)
    out["all (defaults)"] = (*build(True, True), switch is not None)
    return out, missing


def check_alone(model, calls=50):
    """Seconds per step of the non-finite check's own work on ``model``'s gradients (the squared
    norms, as the reducer computes them when a bucket is launched)."""
    from dtrain.comm.finite_flags import squared_norm as _squared_norm
    grads = [p.grad.array for p in model.parameters()]
    start = time.thread_time()
    for _ in range(calls):
        for g in grads:
            _squared_norm(np, g)
    return (time.thread_time() - start) / calls


def fused_alone(model, calls=20, rounds=15):
    """Seconds per step of the non-finite check as the default path takes it: the difference
    between the MLP's gradients all-reduced as DDP's in-place buckets are
    (``all_reduce_coalesced`` with ``scale``) with and without ``finite_check`` (the result
    checked where the shared-memory all-reduce sums it), synchronous so that this thread's CPU time holds the
    work; interleaved, the median of per-round differences (the slowest rank's)."""
    from dtrain.comm.finite_flags import FiniteCheck
    grads = [p.grad.array.reshape(-1) for p in model.parameters()]
    probe = FiniteCheck(grads[0], len(grads))
    diffs = []
    for _ in range(rounds):
        spent = []
        for check in (None, probe, None, probe):
            dist.barrier()
            start = time.thread_time()
            for _ in range(calls):
                if check is not None:
                    check.reset()
                dist.all_reduce_coalesced(grads, scale=0.5, finite_check=check)
            spent.append((time.thread_time() - start) / calls)
        diff = np.array([(spent[1] + spent[3] - spent[0] - spent[2]) / 2])
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        diffs.append(float(diff[0]))
    return statistics.median(diffs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    switch = mismatch_switch()
    runs, missing = variants(switch)
    rng = np.random.default_rng(1 + rank)
    x = dtrain.from_numpy(rng.standard_normal((256, 784)).astype(np.float32))
    y = dtrain.from_numpy(rng.integers(0, 10, 256))

    def step(model, opt):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def timed(name):
        model, opt, check = runs[name]
        if switch is not None:
            switch(check)
        dist.barrier()
        wall, cpu, proc = time.perf_counter(), time.thread_time(), time.process_time()
        for _ in range(args.steps):
            step(model, opt)
        spent = np.array([time.perf_counter() - wall, time.thread_time() - cpu, time.process_time() - proc]) / args.steps
        if switch is not None:
            switch(False)  # the all_reduce below is the same for every variant
        dist.all_reduce(spent, op=dist.ReduceOp.MAX)  # the slowest rank's
        return spent

    for name in runs:  # warm-up: first-touch allocations, the bucket rebuild
        for _ in range(3):
            timed(name)
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            times[name].append(timed(name))
    alone = check_alone(runs["off"][0]) if has_nonfinite() else None
    fused = fused_alone(runs["off"][0]) if has_fused() else None
    if switch is not None:
        switch(True)
    if rank == 0:
        report(times, alone, fused, missing, args, world)
    dist.destroy_process_group()


def report(times, alone, fused, missing, args, world):
    base = times["off"]
    rows = {}
    print(f"MLP 784-1024-1024-10, batch 256/rank, {world} ranks, {args.rounds} rounds of {args.steps} steps "
          f"(slowest rank; medians)")
    print(f"{'variant':18s} {'wall ms':>8s} {'cpu ms':>8s} {'proc ms':>8s} {'wall +%':>8s} {'cpu +%':>8s} "
          f"{'proc +%':>8s}")
    for name, ts in times.items():
        wall, cpu, proc = (statistics.median(t[k] for t in ts) * 1e3 for k in range(3))
        over_wall, over_cpu, over_proc = ((statistics.median(t[k] / b[k] for t, b in zip(ts, base)) - 1) * 100
                                          for k in range(3))
        rows[name] = {"wall_ms": wall, "cpu_ms": cpu, "proc_ms": proc, "wall_overhead_pct": over_wall,
                      "cpu_overhead_pct": over_cpu, "proc_overhead_pct": over_proc}
        print(f"{name:18s} {wall:8.2f} {cpu:8.2f} {proc:8.2f} {over_wall:+8.2f} {over_cpu:+8.2f} {over_proc:+8.2f}")
    if alone is not None:
        step = rows["off"]["cpu_ms"]
        print(f"non-finite check alone (squared norms of the gradients): {alone * 1e3:.3f} ms/step CPU, "
              f"{alone * 1e3 / step * 100:.2f}% of the off step's CPU time")
    if fused is not None:
        print(f"non-finite check as the default path takes it (the result checked inside the shared-memory all-reduce, comm "
              f"thread): {fused * 1e3:.3f} ms/step CPU, {fused * 1e3 / rows['off']['cpu_ms'] * 100:.2f}% of the off "
              f"step's CPU time")
    if missing:
        print(f"not in this tree, not measured: {', '.join(missing)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "check_alone_ms": None if alone is None else alone * 1e3,
                       "fused_ms": None if fused is None else fused * 1e3,
                       "not_measured": missing, "steps": args.steps, "rounds": args.rounds, "world": world}, f,
                      indent=1)


if __name__ == "__main__":
    main()
