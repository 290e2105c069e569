"""Deterministic-mode trainings run on every rank under ``mpiexec -n N python deterministic_checks.py OUT``.

Five trainings of 30 steps on one global batch of 8 per step (12 for the last), each a check
of tests/rank_harness.py (``rank R: all 5 checks passed``):

* ``gpt_deterministic``: examples/gpt.py's GPT (2 layers, 32 wide, dropout 0.1, AdamW, clipping,
  its cosine schedule) in deterministic mode, ``micro_shard_size=2``;
* ``gpt_default``: the same model without dropout, plain DDP;
* ``cnn_deterministic``: the reference CNN's layers (narrowed: 8 and 16 channels, 16x16 inputs)
  with BatchNorm after each convolution and dropout before the classifier, SGD momentum, in
  deterministic mode, ``micro_shard_size=2``;
* ``cnn_default``: the same CNN with SyncBatchNorm and no dropout (what makes plain DDP equal
  to one process on the global batch), plain DDP;
* ``cnn_deterministic_12``: the deterministic CNN on a global batch of 12 in micro-shards of
  one sample: 12 micro-shards, not a power of two, so summed by the exact integer sum instead
  of the fixed tree (the tree's case is the other deterministic trainings).

Every rank takes the rank-th contiguous block of each global batch (what deterministic mode
asks of the data). Rank 0 writes each training's final parameters and buffers to
``OUT/<check>.npz``; test_deterministic.py compares them across world sizes.
"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
import dtrain.nn as nn  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402
from dtrain.parallel import SyncBatchNorm  # noqa: E402
from examples import gpt  # noqa: E402
from rank_harness import RankChecks  # noqa: E402

STEPS, BATCH, MICRO = 30, 8, 2
GPT_SHAPE = dict(block_size=16, n_layer=2, n_head=2, n_embd=32)


def save(out, name, model):
    if dist.get_rank() == 0:
        np.savez(os.path.join(out, f"{name}.npz"), **{k: v.detach().numpy() for k, v in model.state_dict().items()})


def wrap(model, deterministic, micro=MICRO):
    dtrain.use_deterministic_algorithms(deterministic)
    return DDP(model, micro_shard_size=micro if deterministic else None)


def train_gpt(out, name, deterministic):
    rank, world = dist.get_rank(), dist.get_world_size()
    text = gpt.read_corpus(20_000)
    chars = sorted(set(text))
    data = np.array([chars.index(c) for c in text], dtype=np.int32)
    batches = gpt.Batches(data, GPT_SHAPE["block_size"], BATCH, seed=7)
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    dtrain.manual_seed(1337)
    model = gpt.GPT(len(chars), **GPT_SHAPE, dropout=0.1 if deterministic else 0.0)
    opt = gpt.configure_optimizer(model, lr=3e-3, weight_decay=0.1)
    sched = dtrain.optim.lr_scheduler.LambdaLR(opt, gpt.cosine_with_warmup(5, STEPS))
    net = wrap(model, deterministic)
    try:
        for step in range(STEPS):
            x, y = batches.get(step, rows)
            _, loss = net(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    finally:
        dtrain.use_deterministic_algorithms(False)
    save(out, name, model)


def cnn(deterministic):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.25 if deterministic else 0.0), nn.Linear(16 * 4 * 4, 10))
    return model if deterministic else SyncBatchNorm.convert_sync_batchnorm(model)


def train_cnn(out, name, deterministic, batch=BATCH, micro=MICRO):
    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((STEPS, batch, 3, 16, 16)).astype(np.float32)
    ys = rng.integers(0, 10, (STEPS, batch))
    rows = slice(rank * batch // world, (rank + 1) * batch // world)
    dtrain.manual_seed(0)
    model = cnn(deterministic)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    net = wrap(model, deterministic, micro)
    try:
        for step in range(STEPS):
            opt.zero_grad()
            F.cross_entropy(net(dtrain.tensor(xs[step, rows])), dtrain.tensor(ys[step, rows])).backward()
            opt.step()
    finally:
        dtrain.use_deterministic_algorithms(False)
    save(out, name, model)


def main(out):
    checks = RankChecks()
    checks.run("gpt_deterministic", train_gpt, out, "gpt_deterministic", True)
    checks.run("gpt_default", train_gpt, out, "gpt_default", False)
    checks.run("cnn_deterministic", train_cnn, out, "cnn_deterministic", True)
    checks.run("cnn_default", train_cnn, out, "cnn_default", False)
    checks.run("cnn_deterministic_12", train_cnn, out, "cnn_deterministic_12", True, 12, 1)
    checks.finish()


if __name__ == "__main__":
    main(sys.argv[1])
