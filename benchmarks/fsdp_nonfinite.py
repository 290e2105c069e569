"""What fully_shard's non-finite check costs: the GPT example's model, fully_shard per block and
on the root, AdamW, with ``nonfinite="skip"`` (the default: per-parameter squared norms as each
group reduce-scatters, one 2-element all-reduce at the end of backward) and ``"ignore"`` (no
check), interleaved step by step in one job.

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/fsdp_nonfinite.py [--steps 20] [--rounds 7]

Each step of one mode is followed by a step of the other (alternating which goes first), so
load on the machine falls on both alike; prints each mode's median step time (per step, the
slowest rank's), the ratio of the medians and the median of the paired steps' ratios.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
from dtrain.distributed.fsdp import fully_shard  # noqa: E402
from dtrain.examples.gpt import GPT  # noqa: E402

VOCAB, BLOCK, LAYERS, HEADS, WIDTH, BATCH = 161, 64, 4, 4, 128, 8  # sharded_step.py's shape
MODES = ("ignore", "skip")


def sharded(nonfinite):
    dtrain.manual_seed(0)
    model = GPT(VOCAB, BLOCK, LAYERS, HEADS, WIDTH)
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model, nonfinite=nonfinite)
    return model, dtrain.optim.AdamW(model.parameters(), lr=3e-4)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    dist.init_process_group()
    rng = np.random.default_rng(1 + dist.get_rank())
    window = rng.integers(0, VOCAB, (BATCH, BLOCK + 1))
    x, y = dtrain.from_numpy(window[:, :-1].copy()), dtrain.from_numpy(window[:, 1:].copy())
    runs = {mode: sharded(mode) for mode in MODES}

    def step(model, opt):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for model, opt in runs.values():  # warm-up
        for _ in range(3):
            step(model, opt)
    times = {mode: [] for mode in MODES}
    for k in range(args.rounds * args.steps):
        for mode in (MODES if k % 2 == 0 else MODES[::-1]):  # step by step, alternating which goes first
            model, opt = runs[mode]
            start = time.perf_counter()
            step(model, opt)
            times[mode].append(time.perf_counter() - start)
    mine = np.array([times[mode] for mode in MODES])
    dist.all_reduce(mine, op=dist.ReduceOp.MAX)  # per step, the slowest rank's
    times = dict(zip(MODES, mine))
    if dist.get_rank() == 0:
        print(f"GPT {LAYERS}x{WIDTH}, batch {BATCH}/rank, {dist.get_world_size()} ranks, fully_shard per block, "
              f"{args.rounds * args.steps} steps of each, alternating step by step")
        for mode in MODES:
            print(f"nonfinite={mode!r:9s} median {np.median(times[mode]) * 1e3:8.2f} ms/step, "
                  f"lower quartile {np.percentile(times[mode], 25) * 1e3:8.2f}")
        ratio = np.median(times["skip"]) / np.median(times["ignore"])
        paired = np.median(times["skip"] / times["ignore"])
        print(f"skip / ignore: ratio of medians {ratio:.4f}, median of paired step ratios {paired:.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
