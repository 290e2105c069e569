"""Train an MLP on scikit-learn's handwritten digits (8x8 images, 10 classes).

Reaches >= 95% test accuracy in a few seconds. Checkpoints go through a
CheckpointManager: ``<dir>/<prefix>-<steps done>.ckpt``, written atomically at the end of
every epoch (and every ``--save-every`` steps), the last ``--keep-last`` kept. SIGTERM
(e.g. forwarded by ``python -m dtrain.launch``) saves a checkpoint at the next step
boundary and exits with code 75 (``dtrain.preemption.EXIT_PREEMPTED``); ``--resume auto``
then continues mid-epoch, with the same per-step losses as an uninterrupted run.

    python examples/digits_mlp.py [--epochs 20] [--checkpoint-dir runs/digits] [--resume auto] [--quiet]
    python -m dtrain.launch --nproc 2 examples/digits_mlp.py --resume auto   # DDP on 2 ranks

Under several ranks the model is wrapped in DistributedDataParallel and each rank reads
its share of every epoch (DistributedSampler; ``--batch-size`` is per rank).
"""
import argparse
import contextlib
import itertools
import os
import time

import dtrain
import dtrain.comm as dist
import dtrain.nn as nn
import dtrain.optim as optim
from dtrain import preemption
from dtrain.checkpoint import CheckpointManager
from dtrain.data import DataLoader, DistributedSampler
from dtrain.data.datasets import digits
from dtrain.parallel import DistributedDataParallel

LATEST = "latest"  # bare --resume: the newest intact checkpoint, which must exist


def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    with dtrain.no_grad():
        for x, y in loader:
            _, predicted = dtrain.max(model(x), 1)
            correct += (predicted == y).sum().item()
            total += y.shape[0]
    model.train()
    return correct / total


def parse_args(argv):
    ap = argparse.ArgumentParser(description="MLP on the digits data set, with checkpoints and preemption.")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32, help="batch size (per rank)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default="runs/digits_mlp.ckpt", metavar="PATH",
                    help="checkpoint series DIR/NAME.ckpt: files DIR/NAME-<step>.ckpt")
    ap.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                    help="checkpoint series DIR/ckpt-<step>.ckpt (instead of --checkpoint)")
    ap.add_argument("--keep-last", type=int, default=2, metavar="K", help="checkpoints to keep")
    ap.add_argument("--save-every", type=int, default=0, metavar="N",
                    help="also save every N steps (0: only at the end of each epoch)")
    ap.add_argument("--resume", nargs="?", const=LATEST, default=None, metavar="auto|PATH",
                    help="alone: continue from the newest intact checkpoint (an error if none); "
                         "'auto': the same, or start fresh if there is none; PATH: that file")
    ap.add_argument("--stop-after", type=int, default=None, metavar="K",
                    help="stop after K epochs of this run (as if preempted); --resume continues")
    ap.add_argument("--loss-log", default=None, metavar="FILE", help="append 'step loss' per step (rank 0)")
    ap.add_argument("--step-delay", type=float, default=0.0, metavar="SECONDS",
                    help="sleep after every step (to stand in for a slower model)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.keep_last < 1 or args.save_every < 0:
        ap.error(f"--epochs, --batch-size and --keep-last must be >= 1 and --save-every >= 0, got "
                 f"{args.epochs}, {args.batch_size}, {args.keep_last} and {args.save_every}")
    return ap, args


def main(argv=None):
    """Train; returns ``(final test accuracy, mean training loss of each epoch this run finished)``
    (under several ranks, the loss is this rank's)."""
    ap, args = parse_args(argv)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group()
    try:
        return train(ap, args)
    finally:
        if started and dist.is_initialized():  # preemption has left the group already
            dist.destroy_process_group()


def train(ap, args):
    """The training run of :func:`main`, in an initialized process group."""
    from tqdm import tqdm  # here: build_model and evaluate (which ddp_digits uses) do without it
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.checkpoint_dir is not None:
        manager = CheckpointManager(args.checkpoint_dir, keep_last=args.keep_last)
    else:
        directory, name = os.path.split(args.checkpoint)
        manager = CheckpointManager(directory or ".", keep_last=args.keep_last, prefix=os.path.splitext(name)[0])

    dtrain.manual_seed(args.seed)
    train_set, test_set = digits(train=True), digits(train=False)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    test_loader = DataLoader(test_set, batch_size=256)
    model = build_model()
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()

    # where training stands: the next epoch and batch to run, steps done, the epoch's loss sums
    pos = {"epoch": 0, "batch": 0, "step": 0, "loss_sum": 0.0, "count": 0}
    if args.resume is not None:
        info = manager.load(model, opt, sched, resume="auto" if args.resume == LATEST else args.resume)
        if info is None and args.resume == LATEST:
            ap.error(f"--resume: no checkpoint {manager.path('<step>')} (use --resume auto to start fresh)")
        if info is not None:
            pos = info["extra"]
            if rank == 0:
                print(f"resumed from {info['path']} at epoch {pos['epoch']}, batch {pos['batch']}")
    net = DistributedDataParallel(model) if world > 1 else model

    def save():
        manager.save(pos["step"], model=model, optimizer=opt, scheduler=sched, epoch=pos["epoch"], extra=pos)

    history = []
    first = pos["epoch"]
    last = args.epochs if args.stop_after is None else min(args.epochs, first + args.stop_after)
    log_file = open(args.loss_log, "a") if args.loss_log and rank == 0 else contextlib.nullcontext()
    with preemption.handler() as stop, log_file as log:
        for epoch in tqdm(range(first, last), desc="epochs", disable=args.quiet or rank != 0 or None):
            sampler.set_epoch(epoch)
            for x, y in itertools.islice(train_loader, pos["batch"], None):
                opt.zero_grad()
                loss = loss_fn(net(x), y)
                loss.backward()
                opt.step()
                pos["step"] += 1
                pos["batch"] += 1
                pos["loss_sum"] += loss.item() * y.shape[0]
                pos["count"] += y.shape[0]
                if log:
                    log.write(f"{pos['step']} {loss.item()!r}\n")
                    log.flush()
                time.sleep(args.step_delay)
                if stop.should_stop():  # every rank agrees, so all save and leave at this step
                    save()
                    preemption.exit_preempted(
                        f"rank {rank}: preempted (signal {stop.signum}) at step {pos['step']}; "
                        f"checkpoint {manager.path(pos['step'])} saved; resume with --resume auto")
                if args.save_every and pos["step"] % args.save_every == 0:
                    save()
            sched.step()
            history.append(pos["loss_sum"] / pos["count"])
            acc = evaluate(model, test_loader)  # every replica holds the same weights
            if rank == 0:
                print(f"epoch {epoch:3d}  loss {history[-1]:.4f}  test accuracy {acc:.4f}")
            pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, count=0)
            save()
    acc = evaluate(model, test_loader)
    if rank == 0:
        print(f"final test accuracy {acc:.4f}")
    return acc, history


if __name__ == "__main__":
    main()
