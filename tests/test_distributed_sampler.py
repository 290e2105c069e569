"""DistributedSampler: PyTorch's structure (padding, drop_last, rank striding, seed + epoch)."""
import itertools
import warnings

import pytest
import dtrain.comm as comm
from dtrain.data import DataLoader, DistributedSampler, TensorDataset
from dtrain.tensor import arange

SEEDS_EPOCHS = [(0, 0), (-3, 5), (2 ** 40, 1)]


def shares(n, replicas, **kw):
    """Every rank's index list, from one sampler per rank (as the ranks of a job would build them)."""
    return [list(DistributedSampler(range(n), num_replicas=replicas, rank=r, **kw)) for r in range(replicas)]


def check_structure(n, replicas, shuffle, drop_last, seed, epoch):
    samplers = [DistributedSampler(range(n), replicas, r, shuffle=shuffle, seed=seed, drop_last=drop_last)
                for r in range(replicas)]
    for s in samplers:
        s.set_epoch(epoch)
    lists = [list(s) for s in samplers]
    per_rank = n // replicas if drop_last else -(-n // replicas)
    assert [len(x) for x in lists] == [len(s) for s in samplers] == [per_rank] * replicas
    # rank r holds positions r, r + replicas, ... of one order that all ranks share
    order = [lists[i % replicas][i // replicas] for i in range(per_rank * replicas)]
    if drop_last:
        assert len(set(order)) == len(order) and set(order) <= set(range(n)), order
    else:
        assert sorted(order[:n]) == list(range(n)), order
        assert order[n:] == [order[i % n] for i in range(len(order) - n)], "padding must repeat the start"
    if not shuffle:
        assert order[:min(n, len(order))] == list(range(min(n, len(order))))
    return order


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_structure_on_a_grid(shuffle, drop_last):
    """For every size 0..25, 1..8 replicas and several seeds and epochs: equal lengths (= len()),
    ranks disjoint and covering the dataset apart from PyTorch's padding (which repeats the
    order's start), and a deterministic order."""
    for n, replicas, (seed, epoch) in itertools.product(range(26), range(1, 9), SEEDS_EPOCHS):
        order = check_structure(n, replicas, shuffle, drop_last, seed, epoch)
        assert check_structure(n, replicas, shuffle, drop_last, seed, epoch) == order


@pytest.mark.parametrize("n,replicas", [(1, 4), (2, 7), (3, 3), (10, 3), (0, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_small_datasets_pad_several_times(n, replicas, drop_last):
    """A dataset smaller than the number of replicas is repeated several times to pad (or
    gives every rank nothing with drop_last); the structure holds at the edges."""
    check_structure(n, replicas, True, drop_last, seed=3, epoch=1)


def test_padding_example():
    """5 indices over 2 ranks without shuffling: rank 1 gets 1, 3 and the padded 0 (PyTorch's docs)."""
    assert shares(5, 2, shuffle=False) == [[0, 2, 4], [1, 3, 0]]


def test_same_seed_and_epoch_same_order_different_epochs_differ():
    """Samplers built separately with one seed and epoch agree; another epoch or seed reorders."""
    def order(seed, epoch):
        s = DistributedSampler(range(50), num_replicas=1, rank=0, seed=seed)
        s.set_epoch(epoch)
        return list(s)
    assert order(7, 2) == order(7, 2)
    assert sorted(order(7, 2)) == list(range(50))
    orders = [order(7, e) for e in range(4)] + [order(100, 0)]
    assert len({tuple(o) for o in orders}) == len(orders), "epochs / seeds must give different orders"


def test_seed_plus_epoch_is_what_counts():
    """As PyTorch, the generator is seeded with seed + epoch: (seed 5, epoch 0) == (seed 3, epoch 2)."""
    a = DistributedSampler(range(30), 2, 1, seed=5)
    b = DistributedSampler(range(30), 2, 1, seed=3)
    b.set_epoch(2)
    assert list(a) == list(b)


@pytest.mark.parametrize("n,replicas,drop_last", list(itertools.product(range(13), range(1, 6),
                                                                               [False, True])))
def test_unshuffled_and_len_identical_to_pytorch(n, replicas, drop_last):
    """With shuffle=False every rank's list is exactly PyTorch's; len() equals PyTorch's,
    shuffled or not."""
    torch_data = pytest.importorskip("torch.utils.data")
    for rank in range(replicas):
        for shuffle in (False, True):
            ours = DistributedSampler(range(n), replicas, rank, shuffle=shuffle, drop_last=drop_last)
            theirs = torch_data.DistributedSampler(range(n), replicas, rank, shuffle=shuffle, drop_last=drop_last)
            assert len(ours) == len(theirs)
            if not shuffle:
                assert list(ours) == list(theirs)


def test_dataloader_reads_the_ranks_share():
    """A DataLoader with a DistributedSampler yields exactly that rank's indices, in batches."""
    data = TensorDataset(arange(11))
    expected = list(DistributedSampler(data, num_replicas=3, rank=2, seed=5))
    sampler = DistributedSampler(data, num_replicas=3, rank=2, seed=1)
    sampler.set_epoch(4)
    got = [int(v) for (batch,) in DataLoader(data, batch_size=2, sampler=sampler) for v in batch]
    assert got == expected and len(got) == 4


def test_warns_once_when_epoch_not_set():
    """A shuffling sampler iterated a second time at the same epoch warns, once; set_epoch
    to a new epoch, or shuffle=False, does not warn."""
    s = DistributedSampler(range(8), 2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(s)
        s.set_epoch(1)
        list(s)
        list(DistributedSampler(range(8), 2, 0, shuffle=False))
        unshuffled = DistributedSampler(range(8), 2, 0, shuffle=False)
        list(unshuffled), list(unshuffled)
    with pytest.warns(UserWarning, match=r"epoch 1.*set_epoch"):
        list(s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(s)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_replicas=4, rank=5), r"Invalid rank 5, rank should be in the interval \[0, 3\]"),
    (dict(num_replicas=4, rank=4), r"Invalid rank 4, rank should be in the interval \[0, 3\]"),
    (dict(num_replicas=2, rank=-1), r"Invalid rank -1, rank should be in the interval \[0, 1\]"),
    (dict(num_replicas=2, rank=0.5), r"Invalid rank 0.5"),
    (dict(num_replicas=0, rank=0), r"Invalid num_replicas 0, num_replicas should be an integer >= 1"),
    (dict(num_replicas=2.0, rank=0), r"Invalid num_replicas 2.0"),
])
def test_invalid_rank_or_replicas(kwargs, match):
    """A rank outside [0, num_replicas - 1] or a non-positive num_replicas is refused, quoting
    the value and the allowed range."""
    with pytest.raises(ValueError, match=match):
        DistributedSampler(range(4), **kwargs)


@pytest.mark.parametrize("kwargs,missing", [(dict(), "num_replicas"), (dict(num_replicas=2), "rank"),
                                            (dict(rank=0), "num_replicas")])
def test_defaults_need_a_process_group(monkeypatch, kwargs, missing):
    """Without an initialized process group, an omitted num_replicas or rank is an error that
    says to pass them or to call init_process_group."""
    monkeypatch.setattr(comm, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match=f"{missing}=None requires distributed package.*"
                                           f"pass num_replicas and rank.*init_process_group"):
        DistributedSampler(range(4), **kwargs)


def test_defaults_come_from_the_process_group(monkeypatch):
    """With a process group, num_replicas and rank default to its world size and rank."""
    monkeypatch.setattr(comm, "is_initialized", lambda: True)
    monkeypatch.setattr(comm, "get_world_size", lambda: 3)
    monkeypatch.setattr(comm, "get_rank", lambda: 2)
    s = DistributedSampler(range(7), shuffle=False)
    assert (s.num_replicas, s.rank, list(s)) == (3, 2, [2, 5, 1])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_peeking_a_batch_before_the_epoch_loop_does_not_warn(num_workers):
    """The tutorials' pattern: ``next(iter(loader))`` to peek a batch, then epochs that call
    set_epoch first, gives no warning, also when workers prefetched the whole epoch for the
    peek; a partial pass after a full one does not warn either, only a second full pass at
    the same epoch without set_epoch between does."""
    data = TensorDataset(arange(16))
    sampler = DistributedSampler(data, num_replicas=2, rank=0)
    loader = DataLoader(data, batch_size=2, sampler=sampler, num_workers=num_workers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        next(iter(loader))
        for epoch in range(3):
            sampler.set_epoch(epoch)
            assert len(list(loader)) == 4
        if num_workers == 0:  # workers would prefetch this whole small epoch: a full pass
            next(iter(loader))
    with pytest.warns(UserWarning, match=r"again at epoch 2.*set_epoch"):
        list(loader)
