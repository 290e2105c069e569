"""PowerSGD on the GPT example: bytes all-reduced per step, step time and the loss curve,
against DDP's plain all-reduce, trained side by side in one job.

Run under MPI, one BLAS thread per rank:

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/powersgd.py [--steps 300] [--start 30] [--ranks 1 4]

Each variant is examples/gpt.py's model and recipe (default shape: 4 layers, 4 heads, 128
wide, block 64; global batch 16 split over the ranks; AdamW with warm-up and cosine decay;
gradient clipping at 1.0), from the same initial weights on the same batches:

* ``all-reduce``: DDP's default hook;
* ``PowerSGD r=R`` for each ``--ranks`` R: ``powerSGD_hook`` with
  ``PowerSGDState(matrix_approximation_rank=R, start_powerSGD_iter=--start)`` (the default
  ``min_compression_rate`` 2, error feedback, warm start).

The variants take their steps in turn (a noisy machine slows all alike). Bytes are counted
where they are handed to the collectives during backward (``all_reduce`` and
``all_reduce_coalesced`` wrapped): the payload one rank contributes per step, once
compression has started, and the number of collectives; a ring all-reduce moves
2 (n - 1) / n times the payload over each rank's link. The step time is the slowest rank's,
median over the compressed steps. The loss is the mean over ranks of each step's training
loss; the validation loss is examples/gpt.py's (one fixed batch of held-out text).

Writes benchmarks/results/powersgd.json and benchmarks/results/powersgd.png (the loss curves).
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
import dtrain.nn as nn  # noqa: E402
from dtrain.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD  # noqa: E402
from dtrain.examples import gpt  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Counter:
    """Bytes and calls handed to dtrain.comm's all-reduces while ``on``."""

    def __init__(self):
        self.on, self.bytes, self.calls = False, 0, 0
        self.originals = {name: getattr(dist, name) for name in ("all_reduce", "all_reduce_coalesced")}
        for name, fn in self.originals.items():
            setattr(dist, name, self._counting(fn))

    def _counting(self, fn):
        def counted(tensors, *args, **kw):
            if self.on:
                arrays = tensors if isinstance(tensors, (list, tuple)) else [tensors]
                self.bytes += sum(getattr(a, "array", a).nbytes for a in arrays)
                self.calls += 1
            return fn(tensors, *args, **kw)
        return counted

    def restore(self):
        for name, fn in self.originals.items():
            setattr(dist, name, fn)


def make_variant(args, vocab, hook_rank):
    dtrain.manual_seed(args.seed)  # the same initial weights in every variant, on every rank
    model = gpt.GPT(vocab, args.block_size, args.n_layer, args.n_head, args.n_embd)
    ddp = DDP(model)
    state = None
    if hook_rank:
        state = powerSGD.PowerSGDState(None, matrix_approximation_rank=hook_rank, start_powerSGD_iter=args.start)
        ddp.register_comm_hook(state, powerSGD.powerSGD_hook)
    opt = gpt.configure_optimizer(model, args.lr, args.weight_decay)
    sched = dtrain.optim.lr_scheduler.LambdaLR(opt, gpt.cosine_with_warmup(args.warmup, args.steps))
    return {"model": model, "ddp": ddp, "opt": opt, "sched": sched, "state": state, "losses": [], "times": [],
            "bytes": [], "calls": []}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--start", type=int, default=30, help="start_powerSGD_iter (default 30: 10%% of 300)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4], help="matrix_approximation_rank values")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch, split over the ranks")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    text = gpt.read_corpus(600_000)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int32)
    split = int(0.9 * len(data))
    if args.batch_size % world:
        parser.error(f"--batch-size {args.batch_size} must be divisible by the {world} ranks")
    rows = slice(rank * args.batch_size // world, (rank + 1) * args.batch_size // world)

    def batch(text_ids, seed, step):
        """This rank's rows of the global batch of ``step`` (examples/gpt.py's recipe)."""
        starts = np.random.default_rng([seed, step]).integers(0, len(text_ids) - args.block_size - 1,
                                                               args.batch_size)[rows]
        window = np.stack([text_ids[s:s + args.block_size + 1] for s in starts]).astype(np.int64)
        return dtrain.from_numpy(window[:, :-1].copy()), dtrain.from_numpy(window[:, 1:].copy())
    val_x, val_y = batch(data[split:], args.seed + 1, 0)
    variants = {"all-reduce": make_variant(args, len(chars), 0)}
    for r in args.ranks:
        variants[f"PowerSGD r={r}"] = make_variant(args, len(chars), r)
    counter = Counter()
    for step in range(args.steps):
        x, y = batch(data[:split], args.seed, step)
        for v in variants.values():
            dist.barrier()
            start = time.perf_counter()
            counter.on, counter.bytes, counter.calls = True, 0, 0
            _, loss = v["ddp"](x, y)
            v["opt"].zero_grad(set_to_none=True)
            loss.backward()
            counter.on = False
            nn.utils.clip_grad_norm_(v["model"].parameters(), 1.0)
            v["opt"].step()
            v["sched"].step()
            v["times"].append(time.perf_counter() - start)
            v["bytes"].append(counter.bytes)
            v["calls"].append(counter.calls)
            v["losses"].append(loss.item())
    counter.restore()
    report = {"world_size": world, "args": vars(args), "variants": {}}
    for name, v in variants.items():
        losses = np.array(v["losses"])
        dist.all_reduce(losses)
        times = np.array(v["times"])
        dist.all_reduce(times, op=dist.ReduceOp.MAX)  # the slowest rank's
        with dtrain.no_grad():
            v["model"].eval()
            val = np.array([v["model"](val_x, val_y)[1].item()])
        dist.all_reduce(val)
        compressed = slice(args.start, None)
        report["variants"][name] = {
            "losses": (losses / world).tolist(),
            "final_loss": float(np.mean(losses[-50:] / world)), "val_loss": float(val[0] / world),
            "bytes_per_step": int(np.median(v["bytes"][compressed])), "calls_per_step": int(np.median(v["calls"][compressed])),
            "ms_per_step": float(np.median(times[compressed]) * 1e3),
            "compression_stats": list(v["state"].compression_stats()) if v["state"] else None}
    if rank == 0:
        print_table(report, args)
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "powersgd.json"), "w") as f:
            json.dump(report, f, indent=1)
        plot(report, args, os.path.join(RESULTS, "powersgd.png"))
    dist.destroy_process_group()


def print_table(report, args):
    world = report["world_size"]
    base = report["variants"]["all-reduce"]
    print(f"GPT {args.n_layer}x{args.n_embd}, block {args.block_size}, global batch {args.batch_size}, {world} ranks, "
          f"{args.steps} steps, PowerSGD from step {args.start}")
    print(f"| variant | payload bytes/step/rank | / all-reduce | ring bytes/step/link | collectives/step | "
          f"ms/step | loss (last 50) | val loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, v in report["variants"].items():
        ring = v["bytes_per_step"] * 2 * (world - 1) / world
        print(f"| {name} | {v['bytes_per_step']:,} | {v['bytes_per_step'] / base['bytes_per_step']:.4f} | "
              f"{ring:,.0f} | {v['calls_per_step']} | {v['ms_per_step']:.1f} | {v['final_loss']:.4f} | "
              f"{v['val_loss']:.4f} |")


def plot(report, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    window = 10
    for name, v in report["variants"].items():
        losses = np.array(v["losses"])
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        line, = ax.plot(np.arange(window, len(losses) + 1), smooth, label=f"{name} ({v['bytes_per_step'] / 1e3:,.0f} kB/step)")
        ax.plot(np.arange(1, len(losses) + 1), losses, color=line.get_color(), alpha=0.15, linewidth=0.8)
    ax.axvline(args.start, color="gray", linestyle=":", linewidth=1)
    ax.text(args.start, ax.get_ylim()[1], " PowerSGD starts", va="top", fontsize=8, color="gray")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (mean over {report['world_size']} ranks; {window}-step mean)")
    ax.set_title(f"GPT example {args.n_layer}x{args.n_embd}: DDP all-reduce vs PowerSGD")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
