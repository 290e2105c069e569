"""The rank side of tests/test_checkpoint_rng_ranks.py: checkpoints keep each rank's RNG
streams. Every rank seeds its generators differently (nanoGPT's ``manual_seed(1337 + rank)``),
draws, saves, draws more (recorded), loads and draws again: a collective save gives each rank
its own recorded numbers back. Rank 0 writes ``after-<world>.npy``, its draws right after the
save of ``gathered-<world>.ckpt``, for the jobs of another world size that load that file.

    mpiexec -n 2 python tests/rank_rng_ranks.py DIR
    mpiexec -n 4 python tests/rank_rng_ranks.py DIR DIR/gathered-2.ckpt DIR/gathered-1.ckpt  # + elastic loads
"""
import os
import random
import sys
import warnings

import numpy as np

import dtrain
import dtrain.nn.functional as F


def seed(rank):
    """Streams of their own on each rank: dtrain's default generators (the CPU's and every
    GPU's), NumPy's and Python's."""
    dtrain.manual_seed(1337 + rank)
    np.random.seed(rank)
    random.seed(rank)


GPU_DRAWS = 12  # how many numbers draw() adds where a GPU is visible


def draw(gpu=None):
    """One vector of numbers from every stream a checkpoint restores: dtrain.randn, a
    default-mode dropout mask, NumPy's and Python's global RNGs, and where a GPU is visible
    (the CuPy emulation too) the same two on GPU ``gpu`` (default: the current device)."""
    out = [dtrain.randn(4).array, F.dropout(dtrain.ones(8), 0.5, training=True).array, np.random.rand(3),
           [random.random()]]
    if dtrain.cuda.is_available():
        device = f"cuda:{dtrain.cuda.current_device() if gpu is None else gpu}"
        out += [dtrain.randn(4, device=device).cpu().numpy(),
                F.dropout(dtrain.ones(8, device=device), 0.5, training=True).cpu().numpy()]
    return np.concatenate(out)


def recorded_after(save, load, gpu=None):
    """Draw, ``save()``, draw (recorded), ``load()``, draw again (on GPU ``gpu``, see draw):
    (the recorded draws, the draws after the load, the warnings the load gave)."""
    draw(gpu)
    save()
    after = draw(gpu)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load()
    return after, draw(gpu), [str(w.message) for w in caught]


def main(folder, *others):
    from rank_harness import RankChecks, gathered
    from dtrain.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
    import dtrain.comm as dist

    harness = RankChecks()
    rank, world = harness.rank, harness.world_size
    if dtrain.cuda.is_available():  # each rank its own GPU, as under DDP (the emulation has 2 per process)
        dtrain.cuda.set_device(rank % dtrain.cuda.device_count())

    def own_streams_back(save, load):
        seed(rank)
        after, again, caught = recorded_after(save, load)
        everyone = gathered(after)  # before any assert: a rank that failed first must still join the collective
        np.testing.assert_array_equal(again, after)
        assert caught == [], caught
        # the property is only checked if the ranks' streams differ
        assert all(not np.array_equal(everyone[i], everyone[j]) for i in range(world) for j in range(i)), everyone
        return after

    def manager():
        saver = CheckpointManager(os.path.join(folder, f"manager-{world}"))
        own_streams_back(lambda: saver.save(1), lambda: saver.load(resume="auto"))

    def gathered_save():
        path = os.path.join(folder, f"gathered-{world}.ckpt")
        after = own_streams_back(lambda: (save_checkpoint(path, step=1, gather_rng=True), dist.barrier()),
                                 lambda: load_checkpoint(path))
        saved = dtrain.load(path)
        assert len(saved["rng_ranks"]) == world and saved["world_size"] == world, (len(saved["rng_ranks"]), world)
        np.testing.assert_array_equal(saved["rng"]["numpy"][1], saved["rng_ranks"][0]["numpy"][1])
        if rank == 0:
            np.save(os.path.join(folder, f"after-{world}.npy"), after)

    def rank0_save():
        """Without gather_rng (a save on rank 0 alone): no per-rank list, rank 0's streams on
        every rank after the load, as before per-rank states existed, and no warning (on the
        GPU every rank draws on rank 0's device, cuda:0)."""
        path = os.path.join(folder, f"rank0-{world}.ckpt")
        seed(rank)
        after, again, caught = recorded_after(lambda: (rank == 0 and save_checkpoint(path, step=1), dist.barrier()),
                                              lambda: load_checkpoint(path), gpu=0)
        rank0 = gathered(after)[0]  # before any assert, as above
        assert "rng_ranks" not in dtrain.load(path) and caught == [], caught
        np.testing.assert_array_equal(again, rank0)

    def elastic(other):
        """A checkpoint of another world size (``other``, with ``after-<its world>.npy`` beside
        it): every rank gets rank 0's streams, rank 0 warns once (on the GPU: rank 0's device's,
        cuda:0). A single-process file has no rng_ranks: its one "rng" is the whole set."""
        saved_world = len(dtrain.load(other).get("rng_ranks", [None]))
        seed(rank)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_checkpoint(other)
        np.testing.assert_array_equal(draw(gpu=0), np.load(os.path.join(folder, f"after-{saved_world}.npy")))
        messages = [str(w.message) for w in caught]
        if rank == 0:
            assert len(messages) == 1 and (f"holds the RNG states of {saved_world} rank(s), this job has {world}: "
                                           f"every rank restored rank 0's") in messages[0], messages
        else:
            assert messages == [], messages

    harness.run("manager: each rank's own streams back", manager)
    harness.run("save_checkpoint(gather_rng=True): each rank's own streams back", gathered_save)
    harness.run("a save on rank 0 alone: rank 0's streams, as before", rank0_save)
    for other in others:
        harness.run(f"another world size ({os.path.basename(other)}): rank 0's streams, one warning", elastic, other)
    harness.finish()


if __name__ == "__main__":
    main(*sys.argv[1:])
