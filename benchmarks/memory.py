"""Memory per rank of the GPT example's model, measured: parameters, gradients, optimizer
state and peak activations, for DDP, ZeRO-1, ZeRO-2 and fully_shard, each with and without
activation checkpointing per block (fully_shard: on each checkpointed block).

The bytes are counted by ``dtrain.tensor.memory`` (each tensor's base array once, plus the
arrays a recorded op keeps for its backward), not computed from shapes:
  parameters   bytes alive once the model is built and wrapped (tied weights count once;
               fully_shard: this rank's shards, the full arrays freed)
  gradients    bytes the first backward leaves alive (the .grad arrays; ZeRO-2: the owned
               ones only; fully_shard: the shards')
  optimizer    bytes the first optimizer step leaves alive (Adam's two moments per parameter;
               ZeroRedundancyOptimizer and fully_shard: this rank's part only)
  activations  the peak of the second step's forward + backward above the bytes alive before
               it (parameters, gradients zeroed in place, optimizer state, the batch); for
               fully_shard it includes the all-gathered full parameters of the block being
               computed and of the one prefetched, and the full gradients of a block before
               they are reduce-scattered
Not counted: arrays no tensor wraps (temporaries inside one op, gradients in flight inside the
backward walk before they reach a .grad, DDP's communication buffers). The second step's loss
is printed so the runs can be seen to compute the same thing.

At N ranks (``mpiexec -n N``) the model is wrapped (DistributedDataParallel, or fully_shard on
each block and the root) and each rank takes batch/N rows. Figures are per rank (the largest
over the ranks). The aims of issue 16 are checked and printed: optimizer state per rank <=
1.05/N of DDP's; fully_shard's parameter + gradient + state bytes <= 1.1/N of DDP's plus the
largest block's; checkpointing cuts peak activations >= 3x.

Usage: python benchmarks/memory.py [--n-layer 12 --n-embd 512 --n-head 8 --block-size 64
       --batch-size 8] [--json out.json]
       mpiexec -n 2 python benchmarks/memory.py --json out.json
       python benchmarks/memory.py --plot r1.json r2.json --png memory.png   (stacked bars, matplotlib)
"""
import argparse
import gc
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dtrain  # noqa: E402
import dtrain.distributed as dist  # noqa: E402
import dtrain.nn as nn  # noqa: E402
from dtrain.distributed.fsdp import fully_shard  # noqa: E402
from dtrain.distributed.optim import ZeroRedundancyOptimizer  # noqa: E402
from dtrain.tensor import memory  # noqa: E402
from dtrain.utils.checkpoint import checkpoint  # noqa: E402
from examples.gpt import GPT  # noqa: E402

MIB = 2 ** 20
CHECKPOINTED = " + checkpoint per block"


class CheckpointedBlock(nn.Module):
    """A transformer block whose activations are recomputed in backward."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)


def build(args, checkpointing, kind, world):
    """The model wrapped for ``kind`` ("adam": DDP at N > 1; "zero1", "zero2": DDP, and
    DDP(gradient_sharding=True), with ZeroRedundancyOptimizer; "fsdp": fully_shard per block
    and root) and its optimizer."""
    model = GPT(args.vocab, args.block_size, args.n_layer, args.n_head, args.n_embd, dropout=args.dropout)
    if checkpointing:
        model.blocks = nn.ModuleList([CheckpointedBlock(b) for b in model.blocks])
    if kind == "fsdp":
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    elif world > 1 or kind == "zero2":
        model = nn.parallel.DistributedDataParallel(model, gradient_sharding=kind == "zero2")
    if kind in ("zero1", "zero2"):
        return model, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=dtrain.optim.Adam, lr=1e-4)
    return model, dtrain.optim.Adam(model.parameters(), lr=1e-4)


def measure(args, checkpointing, kind, rank, world):
    """The four figures (bytes) and the second step's loss of one configuration on this rank."""
    gc.collect()
    dtrain.manual_seed(args.seed)
    with memory.track():
        model, opt = build(args, checkpointing, kind, world)
        gc.collect()
        params = memory.memory_allocated()
        gen = dtrain.Generator().manual_seed(args.seed)
        rows = args.batch_size // world
        idx = dtrain.randint(0, args.vocab, (args.batch_size, args.block_size + 1), generator=gen)
        x, y = idx[rank * rows:(rank + 1) * rows, :-1], idx[rank * rows:(rank + 1) * rows, 1:]

        before = memory.memory_allocated()
        model(x, y)[1].backward()
        gc.collect()
        grads = memory.memory_allocated() - before
        before = memory.memory_allocated()
        opt.step()
        gc.collect()
        state = memory.memory_allocated() - before

        opt.zero_grad(set_to_none=False)
        gc.collect()
        before = memory.memory_allocated()
        memory.reset_peak_memory_stats()
        loss = model(x, y)[1]
        loss.backward()
        activations = memory.max_memory_allocated() - before
        opt.step()
    return {"params": params, "grads": grads, "optimizer": state, "activations": activations,
            "loss": float(loss.item())}


def plot(paths, png):
    """Stacked bars (MiB per rank) of the results in the JSON files ``paths``, saved to ``png``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for path in paths for r in json.load(open(path))["results"]]
    cols = ("params", "grads", "optimizer", "activations")
    fig, ax = plt.subplots(figsize=(0.6 * len(rows) + 2, 6))
    bottom = [0.0] * len(rows)
    for c in cols:
        heights = [r[c] / MIB for r in rows]
        ax.bar(range(len(rows)), heights, bottom=bottom, label=c)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['config'].replace(CHECKPOINTED, ' + ckpt')}, {r['ranks']} rank(s)" for r in rows],
                       fontsize=8, rotation=40, ha="right")
    ax.set_ylabel("MiB per rank")
    ax.set_title("GPT memory per rank, measured (dtrain.tensor.memory)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=512)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="global batch, split over the ranks")
    ap.add_argument("--vocab", type=int, default=96, help="characters (the example's corpus has about 96)")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--plot", nargs="+", default=None, metavar="JSON", help="plot these results, run nothing")
    ap.add_argument("--png", default="memory.png", help="where --plot saves its chart")
    args = ap.parse_args()
    if args.plot:
        plot(args.plot, args.png)
        return
    launched = any(v in os.environ for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "RANK"))
    dist.init_process_group()  # a world of one without a launcher: ZeRO-2 and fully_shard need a group
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        ap.error(f"--batch-size {args.batch_size} must be divisible by the {world} ranks")
    configs = [("adam", "adam"), ("ZeRO-1 adam", "zero1"), ("ZeRO-2 adam", "zero2"), ("fully_shard adam", "fsdp")]
    if world == 1:
        configs = [c for c in configs if c[1] != "zero1"]  # one rank: ZeRO-1 is plain Adam
    results = []
    for name, kind in configs:
        for ckpt in (False, True):
            r = measure(args, ckpt, kind, rank, world)
            if launched:  # per rank: the largest of each figure over the ranks
                gathered = [None] * world
                dist.all_gather_object(gathered, r)
                r = {k: max(g[k] for g in gathered) for k in r}
                r["loss"] = sum(g["loss"] for g in gathered) / world  # the global batch's loss
            r.update(config=name + (CHECKPOINTED if ckpt else ""), ranks=world)
            results.append(r)
    if rank == 0:
        report(args, results, world)
    dist.destroy_process_group()


def largest_block_bytes(args):
    """Parameter + gradient + Adam-state bytes of the largest transformer block (4 x its
    parameters' bytes): the allowance in fully_shard's aim."""
    dtrain.manual_seed(args.seed)
    model = GPT(args.vocab, args.block_size, 1, args.n_head, args.n_embd)
    return 4 * sum(p.array.nbytes for p in model.blocks[0].parameters())


def report(args, results, world):
    """The table (MiB per rank), the aims checked, and the JSON file."""
    cols = ("params", "grads", "optimizer", "activations")
    print(f"GPT {args.n_layer} layers, n_embd {args.n_embd}, {args.n_head} heads, block {args.block_size}, "
          f"global batch {args.batch_size}, dropout {args.dropout}, float32; MiB per rank, {world} rank(s)")
    print(f"| {'configuration':44s} | ranks | " + " | ".join(f"{c:>11s}" for c in cols) + " |       total | loss |")
    print(f"|{'-' * 46}|-------|" + "|".join("-" * 13 for _ in cols) + "|-------------|------|")
    for r in results:
        total = sum(r[c] for c in cols)
        print(f"| {r['config']:44s} | {world:5d} | " + " | ".join(f"{r[c] / MIB:11.1f}" for c in cols)
              + f" | {total / MIB:11.1f} | {r['loss']:.4f} |")
    by_name = {r["config"]: r for r in results}
    ddp = by_name["adam"]
    model_bytes = sum(ddp[c] for c in ("params", "grads", "optimizer"))
    aims = []
    for r in results:
        plain = by_name[r["config"].replace(CHECKPOINTED, "")]
        if plain is not r:
            ratio = plain["activations"] / r["activations"]
            aims.append((f"{r['config']}: peak activations {ratio:.2f}x smaller than without (aim >= 3x)", ratio >= 3))
        if r["config"].startswith(("ZeRO", "fully_shard")) and CHECKPOINTED not in r["config"]:
            share = r["optimizer"] / ddp["optimizer"]
            aims.append((f"{r['config']}: optimizer state {share:.3f} of DDP's (aim <= 1.05/{world} = "
                         f"{1.05 / world:.3f})", share <= 1.05 / world))
        if r["config"].startswith("fully_shard") and CHECKPOINTED not in r["config"]:
            mine, allowance = sum(r[c] for c in ("params", "grads", "optimizer")), largest_block_bytes(args)
            aims.append((f"{r['config']}: parameters + gradients + state {mine / MIB:.1f} MiB, aim <= 1.1/{world} x "
                         f"{model_bytes / MIB:.1f} + the largest block's {allowance / MIB:.1f} = "
                         f"{(1.1 * model_bytes / world + allowance) / MIB:.1f} MiB",
                         mine <= 1.1 * model_bytes / world + allowance))
    for line, met in aims:
        print(f"{'met    ' if met else 'MISSED '} {line}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "ranks": world, "results": results,
                       "aims": [{"aim": line, "met": met} for line, met in aims]}, f, indent=2)


if __name__ == "__main__":
    main()
