"""Mid-epoch resume of samplers and DataLoaders (issue 17): stop a pass, take state_dict(),
load it into fresh objects (on another number of ranks for DistributedSampler) and the
epoch goes on with the next sample; no sample is lost or repeated, prefetching included.

The ranks of a job are simulated in one process: one sampler (and loader) per rank, built
with num_replicas/rank as the ranks of a job would build them, stepped in lockstep.
tests/test_resume_elastic.py runs the same under real ranks.
"""
import collections
import itertools

import pytest

import dtrain
from dtrain.data import (DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler,
                         TensorDataset)
from dtrain.data.sampler import BatchSampler

WORLDS = [(1, 2), (4, 2), (2, 3)]  # (ranks at the stop, ranks at the resume)


def global_order(n, shuffle, seed, epoch):
    """The epoch's order that every rank's share is cut from (a one-rank sampler's pass)."""
    s = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
    s.set_epoch(epoch)
    return list(s)


def interleave(shares):
    """The ranks' lists, merged back into global order (rank r holds positions r, r + N, ...)."""
    return [i for rnd in itertools.zip_longest(*shares) for i in rnd if i is not None]


def loaders(n, world, batch_size, shuffle, drop_last, seed, num_workers):
    data = TensorDataset(dtrain.arange(n))
    out = []
    for rank in range(world):
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
        out.append(DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=num_workers))
    return out


def run_ranks(ranks, epoch, stop=None):
    """Every rank's loader at ``epoch`` (set_epoch first, as a training loop does), stepped in
    lockstep for ``stop`` batches (None: the whole pass). Returns (each rank's indices, each
    rank's state_dict taken there)."""
    seen, iters = [[] for _ in ranks], []
    for loader in ranks:
        loader.sampler.set_epoch(epoch)
        iters.append(iter(loader))
    for _ in range(len(ranks[0]) if stop is None else stop):
        for r, it in enumerate(iters):
            seen[r] += [int(v) for v in next(it)[0]]
    return seen, [loader.state_dict() for loader in ranks]


def check_resume(n, before, after, batch_size, shuffle, drop_last, stop, num_workers=0, seed=3, epoch=1):
    ranks = loaders(n, before, batch_size, shuffle, drop_last, seed, num_workers)
    first, states = run_ranks(ranks, epoch, stop)
    assert all(s["sampler"] == states[0]["sampler"] for s in states), "the ranks' states differ"
    state = states[0]
    assert state["sampler"]["samples_consumed"] == min(n, len(interleave(first)))
    resumed = loaders(n, after, batch_size, shuffle, drop_last, seed, num_workers)
    for loader in resumed:
        loader.load_state_dict(state)
    second, _ = run_ranks(resumed, epoch)
    assert len({len(s) for s in second}) == 1, "the resumed ranks got passes of different lengths"
    order, done = global_order(n, shuffle, seed, epoch), len(interleave(first))
    rest = max(0, n - done)  # a stop after the whole pass (padding included) leaves nothing
    seen = interleave(first) + interleave(second)
    counts = collections.Counter(seen)
    if drop_last:
        # each sample at most once; only the order's last (rest mod new ranks) are left out
        assert max(counts.values(), default=1) == 1, counts
        assert seen == order[:len(seen)] and len(order) - len(seen) == rest % after
    else:
        # every sample; the only repeats are a pass's padding: the resumed pass's (fewer than
        # the new ranks), or the first's when it was stopped only after its end
        assert seen[:n] == order and set(counts) == set(range(n))
        assert len(seen) - n == (-rest) % after + max(0, done - n)


@pytest.mark.parametrize("before,after", WORLDS)
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_once_across_a_stop_and_a_resume_on_another_world_size(before, after, shuffle, drop_last):
    """For datasets of 0..25 samples, batch sizes 1 and 3 and every stopping batch of the
    pass: the samples seen before the stop on `before` ranks and after the resume on `after`
    ranks are the epoch's order, each sample exactly once (without drop_last, the resumed
    pass's padding, < `after` samples, repeats the order's start; with drop_last, fewer than
    `after` of the order's tail are left out)."""
    for n, batch_size in itertools.product(range(26), (1, 3)):
        per_rank = len(loaders(n, before, batch_size, shuffle, drop_last, 3, 0)[0])
        for stop in range(per_rank + 1):
            check_resume(n, before, after, batch_size, shuffle, drop_last, stop)


@pytest.mark.parametrize("world,batch_size,deterministic", [(2, 3, False), (4, 2, False), (3, 2, True)])
def test_a_resume_on_as_many_ranks_deals_the_rest_of_the_uninterrupted_pass(world, batch_size, deterministic):
    """On the same number of ranks, every rank's resumed pass is exactly the rest of its
    uninterrupted pass, padding included (it repeats the order's start, as PyTorch's): a run
    stopped and resumed trains on what it would have (23 samples: 1, 1 and 1 padding)."""
    dtrain.use_deterministic_algorithms(deterministic)  # the block layout of the loader's batches
    try:
        for stop in range(len(loaders(23, world, batch_size, True, False, 3, 0)[0]) + 1):
            whole, _ = run_ranks(loaders(23, world, batch_size, True, False, 3, 0), 1)
            first, states = run_ranks(loaders(23, world, batch_size, True, False, 3, 0), 1, stop)
            resumed = loaders(23, world, batch_size, True, False, 3, 0)
            for loader in resumed:
                loader.load_state_dict(states[0])
            rest, _ = run_ranks(resumed, 1)
            assert [a + b for a, b in zip(first, rest)] == whole, f"stopped after batch {stop}"
    finally:
        dtrain.use_deterministic_algorithms(False)


@pytest.mark.parametrize("before,after", WORLDS)
def test_prefetched_batches_are_neither_lost_nor_repeated(before, after):
    """With worker threads that load up to 4 batches ahead, the state counts the batches
    yielded to the caller: stopping at batch 1, 2 or 5 (of 7 or more) and resuming gives the whole
    epoch once."""
    for stop in (1, 2, 5):
        check_resume(83, before, after, 3, True, False, stop, num_workers=2)


def test_the_sampler_is_ahead_of_the_loader_but_the_state_is_the_loaders():
    """Workers have drawn more indices than were yielded; state_dict() counts the yielded ones."""
    data = TensorDataset(dtrain.arange(40))
    sampler = DistributedSampler(data, num_replicas=2, rank=0, seed=1)
    loader = DataLoader(data, batch_size=2, sampler=sampler, num_workers=2, prefetch_factor=2)
    it = iter(loader)
    next(it)
    assert sampler.state_dict()["samples_consumed"] > 4  # the workers' prefetch
    state = loader.state_dict()
    assert (state["batches_yielded"], state["samples_yielded"], state["sampler"]["samples_consumed"]) == (1, 2, 4)
    del it


@pytest.mark.parametrize("before,after", WORLDS)
def test_a_sampler_alone_resumes_on_another_world_size(before, after):
    """Without a DataLoader, a DistributedSampler's own state (indices it produced) resumes."""
    n, k = 23, 4
    samplers = [DistributedSampler(range(n), before, r, seed=9) for r in range(before)]
    its = [iter(s) for s in samplers]
    first = [[next(it) for _ in range(k)] for it in its]
    state = samplers[0].state_dict()
    assert state["samples_consumed"] == k * before and state["num_replicas"] == before
    resumed = [DistributedSampler(range(n), after, r, seed=9) for r in range(after)]
    for s in resumed:
        s.load_state_dict(state)
        assert s.state_dict()["samples_consumed"] == k * before  # a state loaded is the state given
        assert len(s) == -(-(n - k * before) // after)
    seen = interleave(first) + interleave([list(s) for s in resumed])
    assert seen[:n] == global_order(n, True, 9, 0)


def test_set_epoch_keeps_the_loaded_epoch_and_drops_it_for_another():
    """A loop that calls set_epoch(saved epoch) first resumes mid-epoch; set_epoch to another
    epoch starts that epoch from its beginning (and the next epoch after a resume is whole)."""
    s = DistributedSampler(range(10), 2, 0, seed=0)
    s.set_epoch(3)
    it = iter(s)
    next(it), next(it)
    state = s.state_dict()
    t = DistributedSampler(range(10), 2, 0, seed=0)
    t.load_state_dict(state)
    t.set_epoch(3)
    assert len(list(t)) == 3
    t.set_epoch(4)
    assert len(list(t)) == 5
    t.load_state_dict(state)
    t.set_epoch(5)
    assert len(t) == 5 and t.state_dict()["samples_consumed"] == 0


def test_a_finished_epoch_resumes_empty_then_the_next_is_whole():
    """A state taken at the end of a pass says the whole epoch is consumed: that epoch resumes
    with nothing left, the next one is whole."""
    s = DistributedSampler(range(7), 2, 1, drop_last=False)
    list(s)
    state = s.state_dict()
    assert state["samples_consumed"] == 7
    t = DistributedSampler(range(7), 3, 2)
    t.load_state_dict(state)
    assert list(t) == []
    t.set_epoch(1)
    assert len(list(t)) == 3


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_pass_the_loader_finished_is_done_even_what_drop_last_left_out(num_workers):
    """With the loader's drop_last, the last short batch of each rank is never yielded; a state
    taken after the pass ended still says the whole epoch is consumed, so resuming that epoch on
    fewer ranks does not train on the left-out samples."""
    data = TensorDataset(dtrain.arange(30))
    ranks = [DataLoader(data, batch_size=4, drop_last=True, num_workers=num_workers,
                        sampler=DistributedSampler(data, 3, r, seed=1)) for r in range(3)]
    for loader in ranks:
        assert len([b for b in loader]) == 2  # 10 samples per rank: 2 batches, 2 samples left out
    state = ranks[0].state_dict()
    assert state["sampler"]["samples_consumed"] == 30 and state["samples_yielded"] == 8
    resumed = DataLoader(data, batch_size=4, drop_last=True, sampler=DistributedSampler(data, 1, 0, seed=1))
    resumed.load_state_dict(state)
    assert list(resumed) == []


def pass_then_resume(make_loader, stop, epochs=2):
    """The batches of `epochs` passes straight, and split at batch `stop` of the first pass by
    a state_dict, a fresh loader and restored RNG (as a checkpoint restores them). As torchdata's
    StatefulDataLoader, a state taken at the end of a pass resumes with the next pass."""
    dtrain.manual_seed(0)
    loader, straight = make_loader(), []
    for _ in range(epochs):
        straight += [b.tolist() for b in loader]
    dtrain.manual_seed(0)
    loader = make_loader()
    it, split = iter(loader), []
    for _ in range(stop):
        split.append(next(it).tolist())
    state, rng = loader.state_dict(), dtrain.get_rng_state()
    del it
    dtrain.manual_seed(123)  # the resumed process starts from other random state
    loader = make_loader()
    dtrain.set_rng_state(rng)
    loader.load_state_dict(state)
    # the rest of the stopped pass, then the other passes (a pass stopped at its end is done)
    for _ in range(epochs if stop < len(loader) else epochs - 1):
        split += [b.tolist() for b in loader]
    return straight, split


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop", [0, 1, 4, 6])
def test_shuffled_and_sequential_loaders_resume_as_if_never_stopped(num_workers, stop):
    """A shuffle=True loader (RandomSampler) replays the stopped pass's order from where it was
    and the next epoch draws what it would have drawn; a sequential one goes on from the
    index after the last yielded. Stopping at 0 and at the end of the pass (6 of 6) too."""
    data = dtrain.arange(23)
    for shuffle in (True, False):
        straight, split = pass_then_resume(
            lambda: DataLoader(data, batch_size=4, shuffle=shuffle, num_workers=num_workers), stop)
        assert split == straight


def test_a_batch_sampler_is_fast_forwarded():
    """A sampler without state of its own (a user batch_sampler) is fast-forwarded by the
    batches yielded: only indices are drawn again, no data."""
    fetched = []

    class Data(list):
        def __getitem__(self, i):
            fetched.append(i)
            return super().__getitem__(i)

    data = Data(range(20))
    make = lambda: DataLoader(data, batch_sampler=[[i, i + 1] for i in range(0, 20, 2)])  # noqa: E731
    straight, split = pass_then_resume(make, 3, epochs=1)
    assert split == straight
    assert collections.Counter(fetched) == {i: 2 for i in range(20)}  # once straight, once split


def test_a_loaded_state_is_the_state_until_the_next_batch():
    """state_dict() right after load_state_dict() is the loaded one (a checkpoint taken before
    the first resumed batch loses nothing)."""
    data = TensorDataset(dtrain.arange(30))
    a = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, 2, 1))
    it = iter(a)
    next(it), next(it)
    state = a.state_dict()
    b = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, 3, 1))
    b.load_state_dict(state)
    assert b.state_dict()["sampler"] == {**state["sampler"], "num_replicas": 3}  # the count is global


# ---- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("change,match", [
    (dict(seed=4), r"the state was saved with seed=4, this sampler has seed=3: the resumed pass would not continue"),
    (dict(shuffle=False), r"the state was saved with shuffle=False, this sampler has shuffle=True"),
    (dict(drop_last=True), r"the state was saved with drop_last=True, this sampler has drop_last=False"),
    (dict(dataset_len=11), r"the state was saved with dataset_len=11, this sampler has dataset_len=10"),
    (dict(samples_consumed=11), r"samples_consumed=11 is more than the dataset's 10 samples"),
    (dict(samples_consumed=-1), r"samples_consumed must be an int >= 0, got -1"),
    (dict(epoch="1"), r"epoch must be an int >= 0, got '1'"),
])
def test_a_distributed_state_of_other_settings_is_refused(change, match):
    """A state of another seed, shuffle, drop_last or dataset length (which would not continue
    the saved order), or a position out of range, is refused naming the key and both values."""
    state = DistributedSampler(range(10), 2, 0, seed=3).state_dict()
    state.update(change)
    with pytest.raises(ValueError, match=f"DistributedSampler.load_state_dict: {match}"):
        DistributedSampler(range(10), 4, 1, seed=3).load_state_dict(state)


def test_states_that_are_not_states_are_refused():
    """Not a dict, a dict lacking keys, a random state with a bad generator entry: each a clear
    error."""
    with pytest.raises(ValueError, match=r"DistributedSampler.load_state_dict: expected a state_dict\(\) of "
                                         r"DistributedSampler, got list lacking"):
        DistributedSampler(range(4), 2, 0).load_state_dict([1])
    with pytest.raises(ValueError, match=r"SequentialSampler.load_state_dict: .* lacking \['samples_yielded'\]"):
        SequentialSampler(range(4)).load_state_dict({"dataset_len": 4})
    began = RandomSampler(range(4))
    iter(began)
    bad = dict(began.state_dict(), generator=7)
    with pytest.raises(ValueError, match="RandomSampler.load_state_dict: the generator state is int, not"):
        RandomSampler(range(4)).load_state_dict(bad)
    with pytest.raises(ValueError, match=r"DataLoader.load_state_dict: expected a DataLoader.state_dict\(\), "
                                         r"got dict \{'batches': 1\}"):
        DataLoader(range(4)).load_state_dict({"batches": 1})


def test_an_iterable_dataset_cannot_resume_mid_stream():
    """An IterableDataset's stream cannot be skipped into: a state under way is refused, saying
    what to do; one at a pass boundary loads."""
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(10))

    loader = DataLoader(Stream(), batch_size=2)
    it = iter(loader)
    next(it)
    with pytest.raises(ValueError, match=r"cannot resume an IterableDataset \(Stream\) 1 batches into its "
                                         r"stream.*resume at a pass boundary"):
        DataLoader(Stream(), batch_size=2).load_state_dict(loader.state_dict())
    fresh = DataLoader(Stream(), batch_size=2)
    fresh.load_state_dict(DataLoader(Stream(), batch_size=2).state_dict())
    assert [b.tolist() for b in fresh] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_batch_sampler_of_a_distributed_sampler_counts_samples():
    """A batch_sampler=BatchSampler(DistributedSampler) resumes by the sampler's global state too."""
    data = TensorDataset(dtrain.arange(20))
    a = DataLoader(data, batch_sampler=BatchSampler(DistributedSampler(data, 2, 0, seed=1), 3, False))
    it = iter(a)
    next(it)
    assert a.state_dict()["sampler"]["samples_consumed"] == 6


class Augmented:
    """Sample i is (i, a number drawn from the default CPU stream): a random augmentation."""

    def __len__(self):
        return 30

    def __getitem__(self, i):
        return dtrain.tensor([float(i), float(dtrain.rand(1).item())])


@pytest.fixture
def deterministic():
    dtrain.use_deterministic_algorithms(True)
    yield
    dtrain.use_deterministic_algorithms(False)


def test_deterministic_mode_draws_augmentation_per_sample(deterministic):
    """In deterministic mode each sample's random draws come from (seed + epoch, sample index):
    the same at 1, 2 or 3 ranks, with or without workers, straight or resumed on other ranks;
    another epoch draws others. (Outside it they come from each rank's own stream.)"""
    def table(world, epoch, num_workers, stop=None, state=None):
        loaders_ = []
        for rank in range(world):
            sampler = DistributedSampler(Augmented(), num_replicas=world, rank=rank, seed=5)
            loader = DataLoader(Augmented(), batch_size=4, sampler=sampler, num_workers=num_workers)
            if state is not None:
                loader.load_state_dict(state)
            loaders_.append(loader)
        out, iters = {}, []
        for rank, loader in enumerate(loaders_):
            loader.sampler.set_epoch(epoch)
            dtrain.manual_seed(rank)  # the ranks' default streams differ: the draws must not depend on them
            iters.append(iter(loader))
        for _ in range(len(loaders_[0]) if stop is None else stop):
            for it in iters:
                for i, value in next(it).tolist():
                    out[int(i)] = value
        return out, loaders_[0].state_dict()

    one, _ = table(1, 0, 0)
    assert sorted(one) == list(range(30))
    for world, workers in ((2, 0), (3, 2)):
        assert table(world, 0, workers)[0] == one
    first, state = table(4, 0, 2, stop=2)
    rest, _ = table(2, 0, 0, state=state)
    assert {**first, **rest} == one
    other = table(1, 1, 0)[0]
    assert all(other[i] != one[i] for i in range(30))
