"""Memory per rank of the GPT example's model, measured: parameters, gradients, optimizer
state and peak activations, for plain training and with activation checkpointing per block.

The bytes are counted by ``dtrain.tensor.memory`` (each tensor's base array once, plus the
arrays a recorded op keeps for its backward), not computed from shapes:
  parameters   bytes alive once the model is built (tied weights count once)
  gradients    bytes the first backward leaves alive (the .grad arrays)
  optimizer    bytes the first optimizer step leaves alive (Adam's two moments per parameter;
               with ZeroRedundancyOptimizer only this rank's shard)
  activations  the peak of the second step's forward + backward above the bytes alive before
               it (parameters, gradients zeroed in place, optimizer state, the batch)
Not counted: arrays no tensor wraps (temporaries inside one op, gradients in flight inside the
backward walk before they reach a .grad, DDP's communication buffers). The second step's loss
is printed so the runs can be seen to compute the same thing.

At N ranks (``mpiexec -n N``) the model is wrapped in DistributedDataParallel and each rank
takes batch/N rows; ZeroRedundancyOptimizer rows are added where
dtrain.distributed.optim.ZeroRedundancyOptimizer imports. Figures are per rank (the largest).

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


def _zero_class():
    try:
        from dtrain.distributed.optim import ZeroRedundancyOptimizer
    except ImportError:
        return None
    return ZeroRedundancyOptimizer


def measure(args, checkpointing, zero, rank, world):
    """The four figures (bytes) and the second step's loss of one configuration on this rank."""
    gc.collect()
    dtrain.manual_seed(args.seed)
    with memory.track():
        model = GPT(args.vocab, args.block_size, args.n_layer, args.n_head, args.n_embd, dropout=args.dropout)
        if checkpointing:
            model.blocks = nn.ModuleList([CheckpointedBlock(b) for b in model.blocks])
        if world > 1:
            model = nn.parallel.DistributedDataParallel(model)
        gc.collect()
        params = memory.memory_allocated()
        if zero:
            opt = _zero_class()(model.parameters(), optimizer_class=dtrain.optim.Adam, lr=1e-4)
        else:
            opt = dtrain.optim.Adam(model.parameters(), lr=1e-4)
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
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 5))
    bottom = [0.0] * len(rows)
    for c in cols:
        heights = [r[c] / MIB for r in rows]
        ax.bar(range(len(rows)), heights, bottom=bottom, label=c)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['config'].replace(CHECKPOINTED, ' + ckpt')}\n{r['ranks']} rank(s)" for r in rows],
                       fontsize=8)
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
    if launched:
        dist.init_process_group()
    rank, world = (dist.get_rank(), dist.get_world_size()) if launched else (0, 1)
    if args.batch_size % world:
        ap.error(f"--batch-size {args.batch_size} must be divisible by the {world} ranks")
    configs = [("adam", False, False), (f"adam{CHECKPOINTED}", True, False)]
    if world > 1 and _zero_class() is not None:
        configs += [("ZeRO-1 adam", False, True), (f"ZeRO-1 adam{CHECKPOINTED}", True, True)]
    results = []
    for name, ckpt, zero in configs:
        r = measure(args, ckpt, zero, rank, world)
        if launched:  # per rank: the largest of each figure over the ranks
            gathered = [None] * world
            dist.all_gather_object(gathered, r)
            r = {k: max(g[k] for g in gathered) for k in r}
            r["loss"] = sum(g["loss"] for g in gathered) / world  # the global batch's loss
        r.update(config=name, ranks=world)
        results.append(r)
    if rank == 0:
        print(f"GPT {args.n_layer} layers, n_embd {args.n_embd}, {args.n_head} heads, block {args.block_size}, "
              f"global batch {args.batch_size}, dropout {args.dropout}, float32; MiB per rank, {world} rank(s)")
        cols = ("params", "grads", "optimizer", "activations")
        print(f"| {'configuration':36s} | ranks | " + " | ".join(f"{c:>11s}" for c in cols) + " |       total | loss |")
        print(f"|{'-' * 38}|-------|" + "|".join("-" * 13 for _ in cols) + "|-------------|------|")
        for r in results:
            total = sum(r[c] for c in cols)
            print(f"| {r['config']:36s} | {world:5d} | " + " | ".join(f"{r[c] / MIB:11.1f}" for c in cols)
                  + f" | {total / MIB:11.1f} | {r['loss']:.4f} |")
        by_name = {r["config"]: r for r in results}
        for r in results:
            plain = by_name.get(r["config"].replace(CHECKPOINTED, ""))
            if plain is not r:
                print(f"{r['config']}: peak activations {plain['activations'] / r['activations']:.2f}x smaller "
                      f"than {plain['config']}'s")
            if r["config"].startswith("ZeRO"):
                print(f"{r['config']}: optimizer state {r['optimizer'] / results[0]['optimizer']:.3f} of adam's "
                      f"(1/{world} = {1 / world:.3f})")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "ranks": world, "results": results}, f, indent=2)
    if launched:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
