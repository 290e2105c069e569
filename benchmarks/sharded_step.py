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
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
from dtrain.distributed.fsdp import fully_shard  # noqa: E402
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
    sharded = fresh_model()
    for block in sharded.blocks:
        fully_shard(block)
    fully_shard(sharded)
    out["fully_shard"] = (sharded, dtrain.optim.AdamW(sharded.parameters(), lr=3e-4))
    return out


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

    def step(model, opt):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for model, opt in runs.values():  # warm-up: first-touch allocations, bucket rebuilds
        for _ in range(3):
            step(model, opt)
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (model, opt) in runs.items():
            dist.barrier()
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, opt)
            elapsed = np.array([(time.perf_counter() - start) / args.steps])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's
            times[name].append(float(elapsed[0]))
    if rank == 0:
        base = times["DDP + AdamW"]
        print(f"GPT {LAYERS}x{WIDTH}, batch {BATCH}/rank, {dist.get_world_size()} ranks, "
              f"{args.rounds} rounds of {args.steps} steps")
        print(f"{'variant':14s} {'ms/step':>8s} {'/ DDP':>7s}")
        for name, ts in times.items():
            ratio = statistics.median(t / b for t, b in zip(ts, base))
            print(f"{name:14s} {statistics.median(ts) * 1e3:8.2f} {ratio:7.3f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
