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
its share of every epoch (DistributedSampler; ``--batch-size`` is per rank): a step trains
on a global batch of ``--batch-size`` x ranks samples. The checkpoint holds the DataLoader's
state (the DistributedSampler's position, counted in samples all ranks consumed) and the
global batch, so ``--resume auto`` on any number of ranks that divides the global batch goes
on with the next sample of the epoch: each rank takes at most as many rows per forward as
at save (``--batch-size`` overrides) and accumulates the rest (said in the log), and every
sample of the interrupted epoch is trained on once across the stop and the resume (the
sampler's padding aside). ``--deterministic`` gives the same bits at 1, 2 or 4 ranks,
straight or resumed (docs/reproducibility.md): micro-shards, and each epoch's tail that
fills no whole global batch left out.
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
from dtrain.checkpoint import CheckpointManager, split_global_batch
from dtrain.serialization import CheckpointError
from dtrain.data import DataLoader, DistributedSampler
from dtrain.data.datasets import digits
from dtrain.parallel import DistributedDataParallel

LATEST = "latest"  # bare --resume: the newest intact checkpoint, which must exist
BATCH_SIZE = 32  # rows per rank of a fresh run's step, without --batch-size


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
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"rows per rank per forward ({BATCH_SIZE}); a step's global batch is this x ranks. A "
                         f"resumed run keeps the checkpoint's global batch, taking at most this many rows per "
                         f"forward (default: the saved run's) and accumulating the rest")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deterministic", action="store_true",
                    help="the same bits at any world size: dtrain.use_deterministic_algorithms(True), DDP "
                         "micro-shards of --micro-shard-size rows, drop_last (also DTRAIN_DETERMINISTIC=1)")
    ap.add_argument("--micro-shard-size", type=int, default=8, metavar="ROWS",
                    help="rows per micro-shard in deterministic mode (default 8; must divide the rows per forward)")
    ap.add_argument("--checkpoint", default="runs/digits_mlp.ckpt", metavar="PATH",
                    help="checkpoint series DIR/NAME.ckpt: files DIR/NAME-<step>.ckpt")
    ap.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                    help="checkpoint series DIR/ckpt-<step>.ckpt (instead of --checkpoint)")
    ap.add_argument("--keep-last", type=int, default=2, metavar="K", help="checkpoints to keep")
    ap.add_argument("--save-every", type=int, default=0, metavar="N",
                    help="also save every N steps (0: only at the end of each epoch)")
    ap.add_argument("--resume", nargs="?", const=LATEST, default=None, metavar="auto|PATH",
                    help="alone: continue from the newest intact checkpoint (an error if none); "
                         "'auto': the same, or start fresh if there is none; PATH: that file. "
                         "Any number of ranks that divides the saved global batch")
    ap.add_argument("--stop-after", type=int, default=None, metavar="K",
                    help="stop after K epochs of this run (as if preempted); --resume continues")
    ap.add_argument("--loss-log", default=None, metavar="FILE",
                    help="append 'step loss' per step (rank 0's rows of the step)")
    ap.add_argument("--step-delay", type=float, default=0.0, metavar="SECONDS",
                    help="sleep after every step (to stand in for a slower model)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if (args.epochs < 1 or (args.batch_size is not None and args.batch_size < 1) or args.keep_last < 1
            or args.save_every < 0 or args.micro_shard_size < 1):
        ap.error(f"--epochs, --batch-size, --micro-shard-size and --keep-last must be >= 1 and --save-every >= 0, "
                 f"got {args.epochs}, {args.batch_size}, {args.micro_shard_size}, {args.keep_last} and "
                 f"{args.save_every}")
    return ap, args


def main(argv=None):
    """Train; returns ``(final test accuracy, mean training loss of each epoch this run finished)``
    (under several ranks, the loss is this rank's)."""
    ap, args = parse_args(argv)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group()
    was_deterministic = dtrain.are_deterministic_algorithms_enabled()
    try:
        return train(ap, args)
    finally:
        dtrain.use_deterministic_algorithms(was_deterministic)  # main() may be called in a longer process
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
    deterministic = args.deterministic or dtrain.are_deterministic_algorithms_enabled()
    if deterministic:
        dtrain.use_deterministic_algorithms(True)

    dtrain.manual_seed(args.seed)
    train_set, test_set = digits(train=True), digits(train=False)
    # deterministic: every step holds the same rows at any world size, so the epoch's tail that
    # fills no global batch is left out (the sampler's padding would depend on the world size)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                 drop_last=deterministic)
    test_loader = DataLoader(test_set, batch_size=256)
    model = build_model()
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()

    # steps done and the epoch's loss sums (this rank's; a resumed run goes on with rank 0's)
    pos, first = {"step": 0, "loss_sum": 0.0, "count": 0}, 0
    global_batch, max_rows = (args.batch_size or BATCH_SIZE) * world, args.batch_size
    # the saved loader state is the sampler's global position, good for a loader of any batch
    # size: this one takes it for the loader of the batch size chosen below
    saved_data = DataLoader(train_set, sampler=sampler)
    info = None
    if args.resume is not None:
        try:
            info = manager.load(model, opt, sched, resume="auto" if args.resume == LATEST else args.resume,
                                data=saved_data)
        except CheckpointError as e:
            if "no data state" not in str(e):
                raise
            raise SystemExit(f"digits_mlp: cannot resume: {e}. It was written by an older digits_mlp, which kept no "
                             f"loader position; start a new run (without --resume) or finish it with that "
                             f"version") from None
        if info is None and args.resume == LATEST:
            ap.error(f"--resume: no checkpoint {manager.path('<step>')} (use --resume auto to start fresh)")
    if info is not None:
        pos, first, global_batch = info["extra"], info["epoch"], info["global_batch"]
        if max_rows is None:  # a rank never holds more rows in one forward than at save
            max_rows = pos["micro_batch"]
    try:
        rows, accumulation = split_global_batch(global_batch, world, max_rows)
    except ValueError as e:
        raise SystemExit(f"digits_mlp: {e} (--nproc sets the ranks; a new run's global batch is --batch-size x "
                         f"ranks)") from None
    train_loader = DataLoader(train_set, batch_size=rows, sampler=sampler, drop_last=deterministic)
    if info is not None:
        train_loader.load_state_dict(saved_data.state_dict())
        if rank == 0:
            done = saved_data.state_dict()["sampler"]["samples_consumed"]
            print(f"resumed from {info['path']} at epoch {first}, step {pos['step']} ({done} of the epoch's "
                  f"{len(train_set)} samples done)", flush=True)
            if (info["world_size"], pos["micro_batch"]) != (world, rows):
                print(f"elastic resume: saved at {info['world_size']} rank(s) x {pos['micro_batch']} rows x "
                      f"{pos['accumulation']} accumulation step(s); now {world} rank(s) x {rows} rows x "
                      f"{accumulation} accumulation step(s): global batch {global_batch} kept", flush=True)
    if deterministic:  # micro-shards at every world size, one rank included: the same shapes everywhere
        net = DistributedDataParallel(model, micro_shard_size=args.micro_shard_size)
    else:
        net = DistributedDataParallel(model) if world > 1 else model
    pos.update(micro_batch=rows, accumulation=accumulation)

    def save(epoch):
        manager.save(pos["step"], model=model, optimizer=opt, scheduler=sched, epoch=epoch, extra=pos,
                     data=train_loader, global_batch=global_batch)

    def train_step(forwards):
        """One optimizer step on this rank's share of the global batch, in len(forwards)
        forwards; DDP averages once, at the last. Returns the loss over the share's rows."""
        share = sum(y.shape[0] for _, y in forwards)  # the epoch's last step may be short
        opt.zero_grad()
        step_loss = 0.0
        for j, (x, y) in enumerate(forwards):
            last = j == len(forwards) - 1
            with contextlib.nullcontext() if last or net is model else net.no_sync():
                loss = loss_fn(net(x), y)
                weight = y.shape[0] / share  # the share's mean loss; 1.0 (exact) without accumulation
                (loss * weight).backward()
            step_loss += loss.item() * weight
            pos["loss_sum"] += loss.item() * y.shape[0]
            pos["count"] += y.shape[0]
        opt.step()
        pos["step"] += 1
        return step_loss

    history = []
    last = args.epochs if args.stop_after is None else min(args.epochs, first + args.stop_after)
    log_file = open(args.loss_log, "a") if args.loss_log and rank == 0 else contextlib.nullcontext()
    with preemption.handler() as stop, log_file as log:
        for epoch in tqdm(range(first, last), desc="epochs", disable=args.quiet or rank != 0 or None):
            sampler.set_epoch(epoch)  # the loaded epoch keeps the loaded position
            batches = iter(train_loader)
            while forwards := list(itertools.islice(batches, accumulation)):
                if deterministic and len(forwards) < accumulation:
                    break  # the epoch's tail fills no step: left out at every world size
                step_loss = train_step(forwards)
                if log:
                    log.write(f"{pos['step']} {step_loss!r}\n")
                    log.flush()
                time.sleep(args.step_delay)
                if stop.should_stop():  # every rank agrees, so all save and leave at this step
                    save(epoch)
                    preemption.exit_preempted(
                        f"rank {rank}: preempted (signal {stop.signum}) at step {pos['step']}; "
                        f"checkpoint {manager.path(pos['step'])} saved; resume with --resume auto")
                if args.save_every and pos["step"] % args.save_every == 0:
                    save(epoch)
            sched.step()
            history.append(pos["loss_sum"] / pos["count"] if pos["count"] else float("nan"))
            acc = evaluate(model, test_loader)  # every replica holds the same weights
            if rank == 0:
                print(f"epoch {epoch:3d}  loss {history[-1]:.4f}  test accuracy {acc:.4f}")
            pos.update(loss_sum=0.0, count=0)
            save(epoch + 1)
    acc = evaluate(model, test_loader)
    if rank == 0:
        print(f"final test accuracy {acc:.4f}")
    return acc, history


if __name__ == "__main__":
    main()
