"""DistributedSampler's layout for deterministic training: contiguous blocks of the loader's batch.

DistributedDataParallel's micro-shards (``micro_shard_size``) number the rows of a step's
global batch as forward j, then rank r, then the rank's rows: rank r's j-th batch of b rows
must be positions (j x N + r) x b .. of the step's global batch. ``DistributedSampler(...,
batch_size=b)`` deals the order so, and a DataLoader asks for it by itself in deterministic
mode. These tests read the batches of every rank's loader in DDP's order and check that each
step's global batch is the same list of samples at any world size, per-rank batch and
gradient accumulation, straight through or stopped and resumed on another world size.
(tests/parallel/test_deterministic_loader.py trains through it under real ranks.)
"""
import itertools

import pytest

import dtrain
from dtrain.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

GLOBAL = 8  # rows per step over all ranks and accumulated forwards
# (world size, rows per rank per forward): accumulation is GLOBAL // (world x rows)
SETUPS = [(1, 8), (1, 4), (2, 4), (2, 2), (4, 2), (4, 1), (8, 1)]


@pytest.fixture
def deterministic():
    dtrain.use_deterministic_algorithms(True)
    yield
    dtrain.use_deterministic_algorithms(False)


def loaders(n, world, rows, drop_last, state=None, explicit=False):
    data = TensorDataset(dtrain.arange(n))
    out = []
    for rank in range(world):
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, seed=3, drop_last=drop_last,
                                     batch_size=rows if explicit else None)
        loader = DataLoader(data, batch_size=rows, sampler=sampler, drop_last=True)
        if state is not None:
            loader.load_state_dict(state)
        out.append(loader)
    return out


def steps(ranks, epochs, first_epoch=0, stop=None):
    """The global batch of each step, read as a training loop with DDP does (every rank's
    loader in lockstep, ``accumulation`` forwards per step, an epoch's tail that fills no
    step left out), in the order DDP's micro-shards number the rows. Returns (steps, the
    state of rank 0's loader at ``stop`` steps, the epoch there)."""
    world, rows = len(ranks), ranks[0].batch_size
    accumulation = GLOBAL // (world * rows)
    out = []
    for epoch in range(first_epoch, epochs):
        for loader in ranks:
            loader.sampler.set_epoch(epoch)
        iters = [iter(loader) for loader in ranks]
        while True:
            forwards = [list(itertools.islice(it, accumulation)) for it in iters]
            if any(len(f) < accumulation for f in forwards):
                break
            # forward j of every rank, ranks in order within it: DDP's (j x N + r) numbering
            out.append([int(i) for j in range(accumulation) for f in forwards for i in f[j][0].tolist()])
            if stop is not None and len(out) == stop:
                return out, ranks[0].state_dict(), epoch
    return out, None, None


def reference(n, drop_last, epochs=3):
    """One rank, one forward of the whole global batch per step: the plain order in chunks."""
    return steps(loaders(n, 1, GLOBAL, drop_last), epochs)[0]


@pytest.mark.parametrize("n", [0, 5, 8, 37, 64, 70])
@pytest.mark.parametrize("explicit", [False, True], ids=["deterministic-mode", "batch_size-keyword"])
def test_every_step_is_the_same_global_batch_at_any_world_size(n, explicit, deterministic):
    """With drop_last on the sampler and the loader, every setup gives the one-rank steps (the
    shuffled order in chunks of 8, an epoch's tail left out), in deterministic mode by itself
    or, with it off, through ``DistributedSampler(batch_size=rows)``."""
    if explicit:
        dtrain.use_deterministic_algorithms(False)
    ref = reference(n, drop_last=True)
    assert len(ref) == 3 * (n // GLOBAL)
    for world, rows in SETUPS:
        assert steps(loaders(n, world, rows, True, explicit=explicit), 3)[0] == ref, (world, rows)


@pytest.mark.parametrize("n", [16, 48])
def test_without_drop_last_on_the_sampler_a_multiple_of_the_global_batch_is_kept(n, deterministic):
    """Without drop_last on the sampler (padding), a dataset the global batch divides needs no
    padding: the same steps at every setup."""
    ref = reference(n, drop_last=False)
    for world, rows in SETUPS:
        assert steps(loaders(n, world, rows, False), 3)[0] == ref, (world, rows)


@pytest.mark.parametrize("n", [37, 64])
@pytest.mark.parametrize("save, load", [((4, 2), (2, 2)), ((2, 4), (1, 8)), ((1, 8), (4, 1)), ((2, 2), (8, 1))])
def test_resumed_on_another_world_size_goes_on_with_the_next_step(n, save, load, deterministic):
    """Stopped at every step of the first two epochs on one setup and resumed with the
    loader's state on another (other world size, rows and accumulation): the steps after the
    stop are the uninterrupted one-rank run's."""
    ref = reference(n, drop_last=True)
    for stop in range(1, 2 * (n // GLOBAL) + 1):
        before, state, epoch = steps(loaders(n, *save, True), 3, stop=stop)
        after = steps(loaders(n, *load, True, state=state), 3, first_epoch=epoch)[0]
        assert before + after == ref, (stop, save, load)


def test_the_strided_layout_is_not_the_same_global_batch(deterministic):
    """The test can fail: PyTorch's strided layout (deterministic mode off, no batch_size)
    gives 2 ranks another row order in each global batch than one rank."""
    dtrain.use_deterministic_algorithms(False)
    ref = reference(32, drop_last=True)
    strided = steps(loaders(32, 2, 4, True), 3)[0]
    assert [sorted(s) for s in strided] == [sorted(s) for s in ref] and strided != ref


def test_blocks_and_the_last_round():
    """Blocks of batch_size round-robin; the last round (fewer than num_replicas blocks) split
    evenly in contiguous pieces; the padding as the strided layout's; at one rank the order."""
    def share(n, world, **kw):
        return [list(DistributedSampler(range(n), world, r, shuffle=False, batch_size=2, **kw)) for r in range(world)]
    assert share(11, 2) == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 0]]
    assert share(11, 3) == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10, 0]]
    assert share(11, 3, drop_last=True) == [[0, 1, 6], [2, 3, 7], [4, 5, 8]]
    assert share(5, 1) == [list(range(5))]
    for n, world in itertools.product(range(12), range(1, 5)):
        strided = [list(DistributedSampler(range(n), world, r, shuffle=False)) for r in range(world)]
        assert sorted(sum(share(n, world), [])) == sorted(sum(strided, [])), (n, world)
        assert [len(s) for s in share(n, world)] == [len(s) for s in strided]


def test_state_in_the_middle_of_a_block_counts_the_whole_rounds_before_it():
    """A DataLoader asks at its batches' ends (a block's end); iterated by hand and stopped in
    the middle of a block, the state counts the rounds before it, so that block's indices come
    again on resume rather than some being lost."""
    ranks = [DistributedSampler(range(20), 2, r, shuffle=False, batch_size=4) for r in range(2)]
    iters = [iter(s) for s in ranks]
    for it in iters:
        list(itertools.islice(it, 6))  # one block and half the next
    state = ranks[0].state_dict()
    assert state["samples_consumed"] == 8
    resumed = DistributedSampler(range(20), 1, 0, shuffle=False)
    resumed.load_state_dict(state)
    assert list(resumed) == list(range(8, 20))
    for it in iters:
        list(it)
    assert ranks[0].state_dict()["samples_consumed"] == 20


def test_a_loader_batch_other_than_the_samplers_blocks_is_refused():
    """The blocks are the DataLoader's batches: another batch_size would put rows of two blocks
    in one batch; the error names both numbers."""
    data = TensorDataset(dtrain.arange(16))
    sampler = DistributedSampler(data, num_replicas=2, rank=0, batch_size=2)
    with pytest.raises(ValueError, match=r"batch_size=4 but its DistributedSampler deals blocks of batch_size=2"):
        DataLoader(data, batch_size=4, sampler=sampler)
    with pytest.raises(ValueError, match=r"batch_size=4 but"):
        BatchSampler(sampler, 4, drop_last=False)
    assert len(DataLoader(data, batch_size=2, sampler=sampler)) == 4


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_batch_size_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=rf"batch_size should be a positive integer value, but got batch_size={bad}"):
        DistributedSampler(range(8), num_replicas=2, rank=0, batch_size=bad)
