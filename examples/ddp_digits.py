"""Data-parallel training of the digits MLP with DistributedDataParallel.

Every rank trains a replica on its share of each epoch (DistributedSampler); DDP averages
the gradients during backward, so N ranks with batches of B per rank train as one process
with batches of N x B. Rank 0 prints the per-epoch loss (averaged over all ranks) and test
accuracy, then one line with the ranks, samples/s and wall time.

    mpiexec -n 2 python examples/ddp_digits.py [--epochs 10] [--batch-size 32] [--lr 0.05]
    python -m dtrain.launch --nproc 2 examples/ddp_digits.py
    python examples/ddp_digits.py            # one process: a world of size 1

It is also the launcher's built-in job: ``python -m dtrain.launch --nproc 2`` (no script)
runs this file as the module ``dtrain.examples.ddp_digits``, installed with dtrain.
"""
import argparse
import os
import sys
import time

import dtrain
import dtrain.comm as dist
import dtrain.nn as nn
from dtrain.data import DataLoader, DistributedSampler
from dtrain.data.datasets import digits
from dtrain.parallel import DistributedDataParallel

if __package__:  # the module dtrain.examples.ddp_digits
    from .digits_mlp import build_model, evaluate
else:  # a file (python examples/ddp_digits.py): the model lives beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from digits_mlp import build_model, evaluate


def main(argv=None):
    """Train; returns ``(final test accuracy, per-epoch mean training losses)`` on every rank."""
    ap = argparse.ArgumentParser(description="The digits MLP trained with DistributedDataParallel.")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32, help="batch size per rank")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        ap.error(f"--epochs and --batch-size must be >= 1, got {args.epochs} and {args.batch_size}")

    started = not dist.is_initialized()
    if started:
        dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    dtrain.manual_seed(args.seed + rank)  # DDP broadcasts rank 0's initial weights anyway
    train_set, test_set = digits(train=True), digits(train=False)
    sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    test_loader = DataLoader(test_set, batch_size=256)
    model = DistributedDataParallel(build_model())
    opt = dtrain.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    if rank == 0:
        print(f"DDP on the digits MLP: {world} rank(s) x batch {args.batch_size}, {args.epochs} epochs", flush=True)

    history, samples = [], 0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on all ranks
        totals = dtrain.zeros(2, dtype=dtrain.float64)  # loss sum, sample count
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            totals += dtrain.tensor([loss.item() * len(y), len(y)], dtype=dtrain.float64)
        dist.all_reduce(totals)
        samples += int(totals[1].item())
        history.append(totals[0].item() / totals[1].item())
        acc = evaluate(model, test_loader)  # every replica holds the same weights
        if rank == 0:
            print(f"epoch {epoch:3d}  loss {history[-1]:.4f}  test accuracy {acc:.4f}", flush=True)
    wall = time.perf_counter() - start
    if rank == 0:
        print(f"ranks {world}  samples/s {samples / wall:.0f}  wall {wall:.2f} s  final test accuracy {acc:.4f}",
              flush=True)
    if started:
        dist.destroy_process_group()
    return acc, history


if __name__ == "__main__":
    main()
