"""What deterministic mode costs: step time and bytes per step of DDP in deterministic mode
(``use_deterministic_algorithms(True)`` + ``micro_shard_size``) against the default mode, for
the reference MLP and examples/gpt.py's GPT, interleaved in one job.

Run under MPI, one BLAS thread per rank:

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/deterministic.py [--steps 10] [--rounds 5]

Workloads (DESIGN.md's reference shapes; the global batch is split over the ranks):

* MLP: 784-1024-1024-10, ReLU, cross-entropy, SGD(lr=0.01, momentum=0.9), global batch 256;
* GPT: 4 layers, 4 heads, 128 wide, block 64, AdamW, global batch 16 (dropout 0, as the
  example's default), and the same with dropout 0.1 ("GPT+dropout": per-sample masks).

Each deterministic variant cuts the global batch into ``--micro-shards`` K micro-shards
(K = 4 by default: the same bits at 1, 2 and 4 ranks), so each rank runs K / ranks forwards
of global_batch / K rows. A round times ``--steps`` steps of every variant in turn (a noisy
machine slows all alike); the table gives the median step time over rounds (the slowest
rank's), the median of per-round ratios to the same workload's default mode, the same for the
process's CPU time (all its threads: less sensitive to a loaded machine, but blind to waiting
for peers), and the bytes each rank sends in one step were its collectives rings (counted by
wrapping them; see counting_bytes). Writes benchmarks/results/deterministic.json.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
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
from dtrain.examples.gpt import GPT  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402

VOCAB, BLOCK, LAYERS, HEADS, WIDTH, GPT_BATCH = 161, 64, 4, 4, 128, 16
MLP_BATCH = 256
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "deterministic.json")


def mlp_workload(rank, world):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((MLP_BATCH, 784)).astype(np.float32)
    y = rng.integers(0, 10, MLP_BATCH)
    rows = slice(rank * MLP_BATCH // world, (rank + 1) * MLP_BATCH // world)
    x, y = dtrain.tensor(x[rows]), dtrain.tensor(y[rows])

    def build():
        dtrain.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
        return model, lambda m: dtrain.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    return MLP_BATCH, build, lambda net: F.cross_entropy(net(x), y)


def gpt_workload(rank, world, dropout):
    rng = np.random.default_rng(1)
    window = rng.integers(0, VOCAB, (GPT_BATCH, BLOCK + 1))
    rows = slice(rank * GPT_BATCH // world, (rank + 1) * GPT_BATCH // world)
    x, y = dtrain.from_numpy(window[rows, :-1].copy()), dtrain.from_numpy(window[rows, 1:].copy())

    def build():
        dtrain.manual_seed(0)
        return GPT(VOCAB, BLOCK, LAYERS, HEADS, WIDTH, dropout), lambda m: dtrain.optim.AdamW(m.parameters(), lr=3e-4)

    return GPT_BATCH, build, lambda net: net(x, y)[1]


@contextlib.contextmanager
def counting_bytes(counter):
    """Count, in the block, the bytes this rank sends when its collectives run as rings: an
    all-reduce of S bytes sends 2 (n - 1) / n x S, an all-gather of S bytes per rank (n - 1) x S."""
    n = dist.get_world_size()
    share = {"all_reduce": 2 * (n - 1) / n, "all_reduce_coalesced": 2 * (n - 1) / n, "all_gather_into_tensor": n - 1}
    originals = {name: getattr(dist, name) for name in share}

    def nbytes(obj):
        if isinstance(obj, (list, tuple)):
            return sum(nbytes(o) for o in obj)
        return getattr(obj, "nbytes", 0)

    def wrap(name):
        def call(*args, **kwargs):
            sent = args[1] if name == "all_gather_into_tensor" else args[0]  # (output, input) / (tensor)
            counter[0] += int(share[name] * nbytes(sent))
            return originals[name](*args, **kwargs)
        return call

    for name in originals:
        setattr(dist, name, wrap(name))
    try:
        yield counter
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--micro-shards", type=int, default=4, metavar="K", help="micro-shards per global batch")
    parser.add_argument("--workloads", default="MLP,GPT,GPT+dropout",
                        help="comma-separated, of MLP, GPT, GPT+dropout (default: all three)")
    args = parser.parse_args()
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    makers = {"MLP": lambda: mlp_workload(rank, world), "GPT": lambda: gpt_workload(rank, world, 0.0),
              "GPT+dropout": lambda: gpt_workload(rank, world, 0.1)}
    chosen = args.workloads.split(",")
    unknown = [w for w in chosen if w not in makers]
    if unknown:
        parser.error(f"--workloads: unknown {', '.join(unknown)} (choose from {', '.join(makers)})")
    workloads = {name: makers[name]() for name in chosen}
    runs = {}  # (workload, mode) -> (wrapped model, optimizer, loss of the step, deterministic?)
    for name, (batch, build, loss_of) in workloads.items():
        if batch % args.micro_shards or (batch // world) % (batch // args.micro_shards):
            raise SystemExit(f"{name}: the global batch {batch} must split into {args.micro_shards} micro-shards "
                             f"spread evenly over {world} ranks")
        for mode in ("default", "deterministic"):
            model, make_opt = build()
            net = DDP(model, micro_shard_size=batch // args.micro_shards if mode == "deterministic" else None)
            runs[name, mode] = (net, make_opt(model), loss_of, mode == "deterministic")

    def step(net, opt, loss_of, deterministic):
        dtrain.use_deterministic_algorithms(deterministic)
        opt.zero_grad(set_to_none=True)
        loss_of(net).backward()
        opt.step()
        dtrain.use_deterministic_algorithms(False)

    sent = {}
    for key, run in runs.items():  # warm-up, and one step with its collectives counted
        for _ in range(2):
            step(*run)
        with counting_bytes([0]) as counter:
            step(*run)
        sent[key] = counter[0]
    times, cpu = {key: [] for key in runs}, {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            dist.barrier()
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(*run)
            elapsed = np.array([(time.perf_counter() - start) / args.steps,
                                (time.process_time() - start_cpu) / args.steps])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's
            times[key].append(float(elapsed[0]))
            cpu[key].append(float(elapsed[1]))
    if rank == 0:
        print(f"{world} ranks, {args.micro_shards} micro-shards per global batch, {args.rounds} rounds of "
              f"{args.steps} steps, interleaved")
        print(f"{'workload':12s} {'mode':14s} {'ms/step':>8s} {'/ default':>9s} {'CPU ms':>8s} {'/ default':>9s} "
              f"{'sent/step':>11s}")
        rows = []
        for (name, mode), ts in times.items():
            ratio = statistics.median(t / b for t, b in zip(ts, times[name, "default"]))
            cpu_ratio = statistics.median(t / b for t, b in zip(cpu[name, mode], cpu[name, "default"]))
            rows.append({"workload": name, "mode": mode, "ms_per_step": statistics.median(ts) * 1e3,
                         "ratio_to_default": ratio, "cpu_ms_per_step": statistics.median(cpu[name, mode]) * 1e3,
                         "cpu_ratio_to_default": cpu_ratio, "sent_bytes_per_step": sent[name, mode]})
            print(f"{name:12s} {mode:14s} {rows[-1]['ms_per_step']:8.2f} {ratio:9.3f} "
                  f"{rows[-1]['cpu_ms_per_step']:8.2f} {cpu_ratio:9.3f} {sent[name, mode]:11,d}")
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            json.dump({"ranks": world, "micro_shards": args.micro_shards, "steps": args.steps,
                       "rounds": args.rounds, "rows": rows}, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
