"""Step time of the GPT example's model under DDP + Adam, ZeRO-1 (DDP + ZeroRedundancyOptimizer),
ZeRO-2 (DDP(gradient_sharding=True) + ZeroRedundancyOptimizer) and fully_shard per block,
interleaved step by step in one job.

Run under MPI, one BLAS thread per rank:

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/sharded_step.py [--steps 30] [--rounds 5]

Each variant is its own model (same initial weights) trained on the same batches; a round
times ``--steps`` steps of each variant in turn (so a noisy machine slows all alike), and the
table gives each variant's median step time over rounds (the slowest rank's) and its ratio to
DDP's, the median of per-round ratios. The model is examples/gpt.py's default shape
(4 layers, 4 heads, 128 wide, block 64), batch 8 sequences per rank, AdamW.

The prefetch's overlap, measured apart: "fully_shard, no prefetch" is the same model with the
prefetch hooks switched off (each group's all-gather starts only when its forward or backward
needs it). For both fully_shard variants the table adds the exposed all-gather time per step:
the time callers spend in ``finish_unshard`` (waiting for a gather's end and installing the
full parameters; the slowest rank's). The prefetch hides ``1 - exposed / exposed without
prefetch`` of it; the step-time difference of the two is what that saves.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import importlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
from dtrain.distributed.fsdp import fully_shard  # noqa: E402
from dtrain.distributed.fsdp.param_group import ParamGroup  # noqa: E402
from dtrain.distributed.optim import ZeroRedundancyOptimizer  # noqa: E402
from dtrain.examples.gpt import GPT  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402

VOCAB, BLOCK, LAYERS, HEADS, WIDTH, BATCH = 161, 64, 4, 4, 128, 8


def fresh_model():
    dtrain.manual_seed(0)
    return GPT(VOCAB, BLOCK, LAYERS, HEADS, WIDTH)


def variants():
    """name -> (model to call, optimizer)."""
    out = {}
    ddp = DDP(fresh_model())
    out["DDP + AdamW"] = (ddp, dtrain.optim.AdamW(ddp.parameters(), lr=3e-4))
    zero1 = DDP(fresh_model())
    out["ZeRO-1"] = (zero1, ZeroRedundancyOptimizer(zero1.parameters(), dtrain.optim.AdamW, lr=3e-4))
    zero2 = DDP(fresh_model(), gradient_sharding=True)
    out["ZeRO-2"] = (zero2, ZeroRedundancyOptimizer(zero2.parameters(), dtrain.optim.AdamW, lr=3e-4))
    for name in ("fully_shard", NO_PREFETCH):
        sharded = fresh_model()
        for block in sharded.blocks:
            fully_shard(block)
        fully_shard(sharded)
        out[name] = (sharded, dtrain.optim.AdamW(sharded.parameters(), lr=3e-4))
    return out


NO_PREFETCH = "fully_shard, no prefetch"
fsdp_hooks = importlib.import_module("dtrain.distributed.fsdp.fully_shard")  # the module (the name is the function's)
PREFETCH = (fsdp_hooks._prefetch, fsdp_hooks._prefetch_backward)
exposed = [0.0]  # seconds spent in ParamGroup.finish_unshard since the last reset


def prefetching(on):
    """Switch fully_shard's forward and backward prefetch on or off (for every model)."""
    fsdp_hooks._prefetch, fsdp_hooks._prefetch_backward = PREFETCH if on else (lambda *a: None, lambda *a: None)


def timed_finish_unshard(finish=ParamGroup.finish_unshard):
    def finish_unshard(self):
        start = time.perf_counter()
        try:
            return finish(self)
        finally:
            exposed[0] += time.perf_counter() - start
    ParamGroup.finish_unshard = finish_unshard


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    dist.init_process_group()
    rank = dist.get_rank()
    rng = np.random.default_rng(1 + rank)
    window = rng.integers(0, VOCAB, (BATCH, BLOCK + 1))
    x, y = dtrain.from_numpy(window[:, :-1].copy()), dtrain.from_numpy(window[:, 1:].copy())
    runs = variants()
    timed_finish_unshard()

    def step(model, opt):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for name, (model, opt) in runs.items():  # warm-up: first-touch allocations, bucket rebuilds
        prefetching(name != NO_PREFETCH)
        for _ in range(3):
            step(model, opt)
    times = {name: [] for name in runs}
    gathers = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (model, opt) in runs.items():
            prefetching(name != NO_PREFETCH)
            dist.barrier()
            exposed[0] = 0.0
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, opt)
            elapsed = np.array([(time.perf_counter() - start) / args.steps, exposed[0] / args.steps])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's
            times[name].append(float(elapsed[0]))
            gathers[name].append(float(elapsed[1]))
    prefetching(True)
    if rank == 0:
        report(args, times, gathers)
    dist.destroy_process_group()


def report(args, times, gathers):
    base = times["DDP + AdamW"]
    print(f"GPT {LAYERS}x{WIDTH}, batch {BATCH}/rank, {dist.get_world_size()} ranks, "
          f"{args.rounds} rounds of {args.steps} steps")
    print(f"{'variant':26s} {'ms/step':>8s} {'/ DDP':>7s} {'exposed all-gather ms/step':>27s}")
    for name, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        gather = f"{statistics.median(gathers[name]) * 1e3:27.2f}" if name.startswith("fully_shard") else ""
        print(f"{name:26s} {statistics.median(ts) * 1e3:8.2f} {ratio:7.3f} {gather}")
    hidden = statistics.median(1 - a / b for a, b in zip(gathers["fully_shard"], gathers[NO_PREFETCH]))
    saved = statistics.median(1 - a / b for a, b in zip(times["fully_shard"], times[NO_PREFETCH]))
    print(f"prefetch: hides {hidden:.1%} of the exposed all-gather time; the step {saved:.1%} shorter than "
          f"without it (medians of per-round ratios)")


if __name__ == "__main__":
    main()
