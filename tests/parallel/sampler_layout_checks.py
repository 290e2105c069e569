"""The ordinary PyTorch program in deterministic mode: DistributedSampler + DataLoader + DDP.

Run on every rank under ``mpiexec -n N python sampler_layout_checks.py OUT [RESUME]``, or
in one process through :func:`main` (``with_harness=False``).

The reference CNN of deterministic_checks.py (BatchNorm, dropout) trains for 30 steps on a
dataset of 100 samples through ``DistributedSampler(shuffle=True)`` and
``DataLoader(batch_size=rows, drop_last=True)``, with ``micro_shard_size=2`` and a global
batch of 8 (``8 // (rows x N)`` forwards accumulated per step): nothing deals the rows by
hand. 100 is no multiple of 8, so each epoch ends in a partial batch that drop_last leaves
out (and, with accumulation, a forward that fills no step, which the loop leaves out), and
the 30 steps cross two epoch boundaries. Checks (tests/rank_harness.py):

* ``straight``: 30 steps of 8 // N rows per rank; rank 0 writes ``OUT/straight.npz``;
* ``accumulated`` (where 8 // 2N rows is a whole number of micro-shards): 30 steps of
  8 // 2N rows per rank, two forwards per step; ``OUT/accumulated.npz``;
* ``stop``: the straight training stopped at step 17 (mid-epoch) with ``save_checkpoint``
  (model, optimizer, the loader's state, RNG states) to ``OUT/stop17.ckpt``;
* ``resumed`` (with RESUME, a ``stop`` checkpoint of another world size): loaded, trained on
  to step 30, ``OUT/resumed.npz``.

tests/parallel/test_sampler_layout.py compares them across world sizes.
"""
import contextlib
import itertools
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from dtrain.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402
from deterministic_checks import cnn, save, wrap  # noqa: E402

STEPS, BATCH, MICRO, SAMPLES, STOP = 30, 8, 2, 100, 17


def dataset():
    rng = np.random.default_rng(11)
    return TensorDataset(dtrain.tensor(rng.standard_normal((SAMPLES, 3, 16, 16)).astype(np.float32)),
                         dtrain.tensor(rng.integers(0, 10, SAMPLES)))


def train(rows, out=None, name=None, stop=None, resume=None):
    """Train the deterministic CNN with ``rows`` per rank per forward up to step ``stop``
    (checkpoint there to ``OUT/stop17.ckpt``) or STEPS (rank 0 saves ``OUT/<name>.npz``),
    from ``resume``'s checkpoint if given. Returns the model."""
    world = dist.get_world_size()
    accumulation, left = divmod(BATCH, rows * world)
    assert accumulation >= 1 and not left, f"{rows} rows x {world} ranks do not divide the global batch {BATCH}"
    data = dataset()
    dtrain.manual_seed(0)
    model = cnn(True)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    net = wrap(model, True)  # deterministic mode on, micro_shard_size=MICRO
    sampler = DistributedSampler(data, shuffle=True, seed=3)  # rank and world from the process group
    loader = DataLoader(data, batch_size=rows, sampler=sampler, drop_last=True)
    step, epoch = 0, 0
    if resume is not None:
        saved = load_checkpoint(resume, model, opt, data=loader)
        step, epoch = saved["step"], saved["epoch"]
    end = STEPS if stop is None else stop
    try:
        while step < end:
            sampler.set_epoch(epoch)  # the loaded epoch keeps the loaded position
            batches = iter(loader)
            while step < end:
                forwards = list(itertools.islice(batches, accumulation))
                if len(forwards) < accumulation:
                    break  # the epoch's tail fills no step: left out at every world size
                opt.zero_grad()
                for j, (x, y) in enumerate(forwards):
                    with net.no_sync() if j < accumulation - 1 else contextlib.nullcontext():
                        (F.cross_entropy(net(x), y) / accumulation).backward()
                opt.step()
                step += 1
            else:
                break
            epoch += 1
        if stop is not None:
            save_checkpoint(os.path.join(out, "stop17.ckpt"), model, opt, epoch=epoch, step=step, data=loader,
                            global_batch=BATCH)
    finally:
        dtrain.use_deterministic_algorithms(False)
    if name is not None:
        save(out, name, model)
    return model


def checks(out, resume=None):
    """(name, function, args) of this world size's checks."""
    world = dist.get_world_size()
    todo = [("straight", train, (BATCH // world, out, "straight"))]
    if (BATCH // (2 * world)) % MICRO == 0 and BATCH // (2 * world):
        todo.append(("accumulated", train, (BATCH // (2 * world), out, "accumulated")))
    todo.append(("stop", train, (BATCH // world, out, None, STOP)))
    if resume is not None:
        todo.append(("resumed", train, (BATCH // world, out, "resumed", None, resume)))
    return todo


def main(out, resume=None):
    from rank_harness import RankChecks
    harness = RankChecks()
    for name, fn, args in checks(out, resume):
        harness.run(name, fn, *args)
    harness.finish()


if __name__ == "__main__":
    main(*sys.argv[1:])
