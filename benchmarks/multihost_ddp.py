"""DDP step time of the reference MLP across hosts: hierarchical vs flat gradient all-reduce,
next to the no-communication ceiling and a prediction from the measured all-reduce time.

MLP 784-1024-1024-10, batch 256 per rank (weak scaling), cross-entropy, SGD(lr=0.01,
momentum=0.9), one BLAS thread per rank (../shared/DESIGN.md). Three variants run in the same
processes, interleaved step by step so that a noisy machine slows them alike:

  hierarchical  DDP on a group of every rank made with DTRAIN_HIERARCHICAL=1
  flat          DDP on a group made with DTRAIN_HIERARCHICAL=0 (MPI's own all-reduce)
  no comm       the plain module: the ceiling

A step is timed from a barrier to the end of ``optimizer.step()`` on the slowest rank; the
table shows medians. "predicted" = the ceiling's step + the time one all-reduce of all the
gradients takes on that group (measured here, same rounds), as if none of it were hidden
under backward: an upper bound that the pre-flight check's model also uses.

Usage: launch/mpirun_hostfile.sh HOSTFILE benchmarks/multihost_ddp.py [--steps 20] [--json out.json]
(see benchmarks/RESULTS.md, "Across hosts", for the namespaced cluster's command)
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
from dtrain import nn  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402

from allreduce import group_with  # noqa: E402  (benchmarks/ is the script's folder)


def mlp(seed):
    dtrain.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default="multihost_ddp.json")
    args = p.parse_args()
    dist.init_process_group(backend="mpi")
    from mpi4py import MPI
    comm = MPI.COMM_WORLD.Dup()
    rank, n = comm.rank, comm.size
    groups = {"hierarchical": group_with("1"), "flat": group_with("0")}
    models = {name: DDP(mlp(0), process_group=g) for name, g in groups.items()}
    models["no comm"] = mlp(0)
    optims = {name: dtrain.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for name, m in models.items()}
    rng = np.random.default_rng(rank)
    x = dtrain.tensor(rng.standard_normal((256, 784)).astype(np.float32))
    y = dtrain.tensor(rng.integers(0, 10, 256))
    loss_fn = nn.CrossEntropyLoss()
    grads = np.ones(sum(p.numel() for p in models["no comm"].parameters()), np.float32)
    times = {name: [] for name in [*models, "all-reduce hierarchical", "all-reduce flat"]}
    for step in range(args.warmup + args.steps):
        for name, model in models.items():
            comm.Barrier()
            start = time.perf_counter()
            optims[name].zero_grad()
            loss_fn(model(x), y).backward()
            optims[name].step()
            took = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
            if step >= args.warmup:
                times[name].append(took)
        for name, g in groups.items():  # all the gradients in one message: the no-overlap bound
            comm.Barrier()
            start = time.perf_counter()
            dist.all_reduce(grads, group=g)
            took = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
            if step >= args.warmup:
                times[f"all-reduce {name}"].append(took)
    med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    hosts = len(set(comm.allgather(socket.gethostname())))
    if rank == 0:
        print(f"MLP DDP step, {n} ranks on {hosts} hosts, batch 256 per rank, {grads.nbytes / 2**20:.1f} MiB of "
              f"gradients, median of {args.steps} steps (ms, slowest rank)")
        print(f"{'variant':<14} {'step ms':>9} {'predicted':>10} {'all-reduce ms':>14} {'samples/s':>10}")
        for name in models:
            ar = med.get(f"all-reduce {name}")
            predicted = f"{med['no comm'] + ar:10.1f}" if ar is not None else f"{'':>10}"
            print(f"{name:<14} {med[name]:9.1f} {predicted} {ar if ar is not None else float('nan'):14.1f} "
                  f"{256 * n / med[name] * 1e3:10.0f}")
        with open(args.json, "w") as f:
            json.dump(dict(ranks=n, hosts=hosts, steps=args.steps, median_ms=med,
                           steps_ms={k: [t * 1e3 for t in v] for k, v in times.items()}), f, indent=2)
        print(f"wrote {args.json}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
