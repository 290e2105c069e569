"""dtrain.data: datasets, samplers, collation and the DataLoader (with and without worker threads)."""
import collections
import gc
import threading
import time

import numpy as np
import pytest

import dtrain
from dtrain.data import (BatchSampler, ChainDataset, ConcatDataset, DataLoader, Dataset, IterableDataset,
                         RandomSampler, SequentialSampler, Subset, SubsetRandomSampler, TensorDataset,
                         default_collate, default_convert, get_worker_info, random_split)

try:
    import torch
    import torch.utils.data as tud
except ImportError:
    torch = tud = None

needs_torch = pytest.mark.skipif(torch is None, reason="compares with PyTorch")
Point = collections.namedtuple("Point", ["x", "y"])


def ids_dataset(n):
    """A TensorDataset whose sample i is (features, i), so batches tell which samples they hold."""
    return TensorDataset(dtrain.arange(n * 2, dtype=dtrain.float32).view(n, 2), dtrain.arange(n))


def labels(loader):
    return [batch[1].tolist() for batch in loader]


def plain(x):
    """A nested batch (dtrain or torch tensors) as plain Python: tensors become (dtype, shape, values)."""
    if isinstance(x, dtrain.Tensor) or (torch is not None and isinstance(x, torch.Tensor)):
        a = x.numpy()
        return "tensor", str(a.dtype), a.shape, a.tolist()
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x).__name__, tuple(plain(v) for v in x)
    if isinstance(x, (list, tuple)):
        return type(x).__name__, [plain(v) for v in x]
    return x


def new_threads(before):
    return [t for t in threading.enumerate() if t not in before]


class Slow(Dataset):
    """Sample i is i, after a short sleep (so worker threads are busy when the loop stops)."""

    def __init__(self, n, delay=0.005):
        self.n, self.delay, self.calls = n, delay, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.calls += 1
        time.sleep(self.delay)
        return i


class Stream(IterableDataset):
    """0..n-1; with workers, worker w yields w, w + num_workers, ... (sharding by get_worker_info)."""

    def __init__(self, n, sized=True):
        self.n, self.sized = n, sized

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))

    def __len__(self):
        if not self.sized:
            raise TypeError("Stream has no len()")
        return self.n


# ---- datasets ----------------------------------------------------------------------------
def test_tensor_dataset_rows():
    """Sample i of a TensorDataset is the tuple of row i of each tensor; len is dim 0."""
    x, y = dtrain.randn(5, 3), dtrain.arange(5)
    ds = TensorDataset(x, y)
    assert len(ds) == 5
    xi, yi = ds[3]
    np.testing.assert_array_equal(xi.numpy(), x.numpy()[3])
    assert yi.item() == 3
    assert ds[-1][1].item() == 4


def test_tensor_dataset_keeps_graph():
    """A row of a tensor that requires grad is still connected to it."""
    x = dtrain.randn(4, 2, requires_grad=True)
    TensorDataset(x)[1][0].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.eye(4)[1][:, None].repeat(2, 1))


@pytest.mark.parametrize("tensors, error, match", [
    ((dtrain.zeros(4, 2), dtrain.zeros(3)), ValueError, r"Size mismatch.*\[4, 3\]"),
    ((), ValueError, "at least one tensor"),
    ((dtrain.zeros(3), np.zeros(3)), TypeError, "argument 1 is a ndarray, expected a Tensor"),
    ((dtrain.tensor(1.0),), ValueError, "argument 0 is a 0-d tensor"),
])
def test_tensor_dataset_errors(tensors, error, match):
    """Bad TensorDataset arguments raise an error naming the sizes or the bad argument."""
    with pytest.raises(error, match=match):
        TensorDataset(*tensors)


def test_subset_and_concat():
    """Subset reads the given indices; ConcatDataset (and Dataset + Dataset) joins end to end,
    negative indices counting from the end."""
    a, b = ids_dataset(3), ids_dataset(4)
    assert [Subset(b, [3, 0])[i][1].item() for i in range(2)] == [3, 0]
    assert len(Subset(b, [3, 0])) == 2
    cat = a + b
    assert isinstance(cat, ConcatDataset) and len(cat) == 7 and cat.cumulative_sizes == [3, 7]
    assert [cat[i][1].item() for i in range(-7, 7)] == [0, 1, 2, 0, 1, 2, 3] * 2


@pytest.mark.parametrize("index", [7, -8])
def test_concat_index_out_of_range(index):
    """An index outside [-len, len) raises IndexError naming it and the length."""
    with pytest.raises(IndexError, match=f"index {index} is out of range.*length 7"):
        (ids_dataset(3) + ids_dataset(4))[index]


def test_concat_errors():
    """ConcatDataset refuses an empty list and IterableDatasets."""
    with pytest.raises(ValueError, match="should not be an empty iterable"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="dataset 1 is a Stream.*ChainDataset"):
        ConcatDataset([ids_dataset(2), Stream(3)])


def test_chain_dataset():
    """IterableDataset + IterableDataset chains the streams; len adds up; map-style parts are refused."""
    chain = Stream(2) + Stream(3)
    assert isinstance(chain, ChainDataset) and list(chain) == [0, 1, 0, 1, 2] and len(chain) == 5
    with pytest.raises(TypeError, match="dataset 1 is a TensorDataset"):
        list(ChainDataset([Stream(2), ids_dataset(2)]))


def test_base_classes_need_overrides():
    """The abstract Dataset / IterableDataset say which method a subclass must define."""
    with pytest.raises(NotImplementedError, match="__getitem__"):
        Dataset()[0]
    with pytest.raises(NotImplementedError, match="__iter__"):
        iter(IterableDataset())


def test_random_split_lengths():
    """random_split gives disjoint subsets of the asked lengths covering the dataset, the same
    for the same generator seed."""
    ds = ids_dataset(10)
    parts = random_split(ds, [3, 7], generator=dtrain.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [3, 7]
    assert sorted(parts[0].indices + parts[1].indices) == list(range(10))
    again = random_split(ds, [3, 7], generator=dtrain.Generator().manual_seed(1))
    assert again[0].indices == parts[0].indices
    assert random_split(ds, [3, 7], generator=dtrain.Generator().manual_seed(2))[0].indices != parts[0].indices


@pytest.mark.parametrize("n, fractions", [(10, [0.5, 0.5]), (11, [0.3, 0.3, 0.4]), (7, [0.1, 0.2, 0.7])])
def test_random_split_fractions(n, fractions):
    """Fractions become lengths as in PyTorch: floor each, hand the remainder out round-robin."""
    expected = [int(np.floor(n * f)) for f in fractions]
    for i in range(n - sum(expected)):
        expected[i % len(expected)] += 1
    parts = random_split(ids_dataset(n), fractions)
    assert [len(p) for p in parts] == expected
    if tud is not None:
        assert expected == [len(p) for p in tud.random_split(range(n), fractions)]


def test_random_split_warns_on_empty_split():
    """A fraction that rounds to an empty split warns."""
    with pytest.warns(UserWarning, match="split at index 1 is 0"):
        assert [len(p) for p in random_split(ids_dataset(2), [0.1, 0.1, 0.8])] == [1, 0, 1]


@pytest.mark.parametrize("lengths, match", [
    ([3, 4], r"Sum of input lengths.*sum to 7, the dataset has 10"),
    ([1.5, -0.5], "Fraction at index 0 is not between 0 and 1"),
    ([12, -2], "got -2 at index 1"),
])
def test_random_split_errors(lengths, match):
    """Lengths that do not split the dataset raise ValueError with the numbers."""
    with pytest.raises(ValueError, match=match):
        random_split(ids_dataset(10), lengths)


# ---- samplers ----------------------------------------------------------------------------
def test_sequential_and_random_sampler():
    """SequentialSampler counts up; RandomSampler gives a permutation, a new one each epoch."""
    assert list(SequentialSampler(range(4))) == [0, 1, 2, 3] and len(SequentialSampler(range(4))) == 4
    dtrain.manual_seed(0)
    sampler = RandomSampler(range(50))
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    dtrain.manual_seed(0)
    assert list(sampler) == first


def test_random_sampler_num_samples():
    """num_samples beyond len concatenates permutations; with replacement draws in range."""
    seq = list(RandomSampler(range(4), num_samples=10))
    assert len(seq) == 10 and sorted(seq[:4]) == sorted(seq[4:8]) == [0, 1, 2, 3]
    draws = list(RandomSampler(range(3), replacement=True, num_samples=200))
    assert len(draws) == 200 and set(draws) == {0, 1, 2}
    assert len(RandomSampler(range(3), replacement=True, num_samples=7)) == 7


def test_random_sampler_generator():
    """With a generator the order depends only on its seed."""
    a = list(RandomSampler(range(20), generator=dtrain.Generator().manual_seed(3)))
    dtrain.manual_seed(99)
    assert list(RandomSampler(range(20), generator=dtrain.Generator().manual_seed(3))) == a


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(replacement=1), TypeError, "replacement should be a boolean value, but got replacement=1"),
    (dict(num_samples=0), ValueError, "num_samples should be a positive integer value, but got num_samples=0"),
    (dict(num_samples=2.5), ValueError, "num_samples=2.5"),
    (dict(generator=np.random.default_rng(0)), TypeError, "must be a dtrain.Generator, got Generator"),
])
def test_random_sampler_errors(kwargs, error, match):
    """Bad RandomSampler arguments are rejected in the constructor, quoting the value."""
    with pytest.raises(error, match=match):
        RandomSampler(range(5), **kwargs)


def test_random_sampler_empty_dataset():
    """An empty dataset cannot be shuffled (num_samples would be 0), as in PyTorch."""
    with pytest.raises(ValueError, match="num_samples=0"):
        RandomSampler([])


def test_subset_random_sampler():
    """SubsetRandomSampler yields each given index once, in a seeded random order."""
    dtrain.manual_seed(5)
    first = list(SubsetRandomSampler([10, 20, 30, 40, 50]))
    assert sorted(first) == [10, 20, 30, 40, 50]
    dtrain.manual_seed(5)
    assert list(SubsetRandomSampler([10, 20, 30, 40, 50])) == first
    assert len(SubsetRandomSampler([1, 2])) == 2


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sampler(n, batch_size, drop_last):
    """BatchSampler chunks the indices in order; len counts the batches it yields."""
    batches = list(BatchSampler(range(n), batch_size, drop_last))
    assert len(BatchSampler(range(n), batch_size, drop_last)) == len(batches)
    assert [i for b in batches for i in b] == list(range(len(batches) * batch_size if drop_last else n))
    assert all(len(b) == batch_size for b in batches[:-1])
    if tud is not None:
        assert batches == list(tud.BatchSampler(range(n), batch_size, drop_last))


@pytest.mark.parametrize("batch_size, drop_last, match", [
    (0, False, "batch_size should be a positive integer value, but got batch_size=0"),
    (-2, False, "batch_size=-2"),
    (True, False, "batch_size=True"),
    (2, 1, "drop_last should be a boolean value, but got drop_last=1"),
])
def test_batch_sampler_errors(batch_size, drop_last, match):
    """BatchSampler quotes a bad batch_size or drop_last."""
    with pytest.raises(ValueError, match=match):
        BatchSampler(range(4), batch_size, drop_last)


# ---- collation ---------------------------------------------------------------------------
COLLATE_CASES = {
    "tensors": lambda T: [T([1.0, 2.0]), T([3.0, 4.0])],
    "int tensors": lambda T: [T([[1, 2]]), T([[3, 4]])],
    "ndarrays": lambda T: [np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32)],
    "int32 ndarrays": lambda T: [np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int32)],
    "uint8 ndarrays": lambda T: [np.arange(4, dtype=np.uint8).reshape(2, 2)] * 3,
    "0-d ndarrays": lambda T: [np.array(1.5), np.array(2.5)],
    "numpy scalars": lambda T: [np.float64(1.5), np.float64(2.5)],
    "numpy int32 scalars": lambda T: [np.int32(1), np.int32(2)],
    "floats": lambda T: [1.5, 2.0],
    "ints": lambda T: [1, 2, 3],
    "bools": lambda T: [True, False],
    "strings": lambda T: ["a", "bc"],
    "tuples": lambda T: [(T([1.0]), 0, "a"), (T([2.0]), 1, "b")],
    "lists": lambda T: [[1, 2.5], [3, 4.5]],
    "dicts": lambda T: [{"x": T([1.0]), "y": 0}, {"x": T([2.0]), "y": 1}],
    "namedtuples": lambda T: [Point(1.0, np.zeros(2)), Point(2.0, np.ones(2))],
    "nested": lambda T: [{"a": (1, [2.0, T([3])])}, {"a": (4, [5.0, T([6])])}],
}


@needs_torch
@pytest.mark.parametrize("case", COLLATE_CASES)
def test_default_collate_matches_torch(case):
    """default_collate gives PyTorch's structure, dtypes, shapes and values for each kind of sample."""
    ours = default_collate(COLLATE_CASES[case](dtrain.tensor))
    theirs = tud.default_collate(COLLATE_CASES[case](torch.tensor))
    assert plain(ours) == plain(theirs)


def test_default_collate_dtypes():
    """Python floats collate to float64, ints to int64, bools to bool; NumPy keeps its dtype."""
    assert default_collate([1.0, 2.0]).dtype == dtrain.float64
    assert default_collate([1, 2]).dtype == dtrain.int64
    assert default_collate([True, False]).dtype == dtrain.bool
    assert default_collate([np.zeros(2, np.int16)] * 2).dtype == np.int16
    batch = default_collate([(dtrain.zeros(3), 1)] * 4)
    assert isinstance(batch, list) and batch[0].shape == (4, 3) and batch[1].tolist() == [1] * 4


def test_default_collate_keeps_graph():
    """Samples that require grad are stacked with autograd, so the batch reaches them."""
    x = dtrain.randn(2, requires_grad=True)
    default_collate([x, x * 2]).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


@pytest.mark.parametrize("batch, error, match", [
    ([dtrain.zeros(3), dtrain.zeros(4)], RuntimeError, r"equal size.*\[3\] at entry 0 and \[4\] at entry 1"),
    ([[1, 2], [3]], RuntimeError, r"each element in list of batch should be of equal size.*\[2, 1\]"),
    ([object(), object()], TypeError, "batch must contain tensors, numpy arrays, numbers, dicts or lists; found"),
    ([np.array(["a"]), np.array(["b"])], TypeError, "found <U1"),
])
def test_default_collate_errors(batch, error, match):
    """Batches default_collate cannot merge raise PyTorch's errors, naming what differed."""
    with pytest.raises(error, match=match):
        default_collate(batch)


CONVERT_CASES = {
    "ndarray": lambda: np.arange(3),
    "number": lambda: 3,
    "numpy scalar": lambda: np.float32(2.0),
    "string array": lambda: np.array(["a"]),
    "dict": lambda: {"a": np.zeros(2), "b": "s"},
    "tuple": lambda: (np.zeros(1), 2),
    "namedtuple": lambda: Point(np.zeros(1), 2),
}


@needs_torch
@pytest.mark.parametrize("case", CONVERT_CASES)
def test_default_convert_matches_torch(case):
    """default_convert turns NumPy data into tensors like PyTorch's, leaving the rest."""
    ours, theirs = default_convert(CONVERT_CASES[case]()), tud.default_convert(CONVERT_CASES[case]())
    if isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray)
    else:
        assert plain(ours) == plain(theirs)


# ---- DataLoader --------------------------------------------------------------------------
def test_loader_sequential_batches():
    """Without shuffle, batches are consecutive samples, stacked; the last one may be short."""
    batches = list(DataLoader(ids_dataset(5), batch_size=2))
    assert [b[1].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    np.testing.assert_array_equal(batches[0][0].numpy(), [[0, 1], [2, 3]])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shuffle_visits_every_sample_once(num_workers):
    """A shuffled epoch is a permutation of the dataset; manual_seed reproduces the sequence
    of epochs; successive epochs differ."""
    loader = DataLoader(ids_dataset(40), batch_size=6, shuffle=True, num_workers=num_workers)
    dtrain.manual_seed(7)
    epochs = [sum(labels(loader), []) for _ in range(2)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(40))
    assert epochs[0] != epochs[1]
    dtrain.manual_seed(7)
    assert [sum(labels(loader), []) for _ in range(2)] == epochs


def test_shuffle_with_generator():
    """A loader generator fixes the shuffle independently of the global seed."""
    def order(seed):
        dtrain.manual_seed(seed)
        return labels(DataLoader(ids_dataset(20), batch_size=5, shuffle=True,
                                 generator=dtrain.Generator().manual_seed(11)))
    assert order(1) == order(2)


@pytest.mark.parametrize("n, batch_size, drop_last", [(10, 3, False), (10, 3, True), (9, 3, True),
                                                      (2, 5, False), (2, 5, True), (0, 4, False)])
def test_len_and_drop_last(n, batch_size, drop_last):
    """len(loader) is the number of batches it yields; drop_last drops only a short last batch."""
    loader = DataLoader(ids_dataset(n), batch_size=batch_size, drop_last=drop_last)
    batches = labels(loader)
    assert len(loader) == len(batches) == (n // batch_size if drop_last else -(-n // batch_size))
    assert len(iter(loader)) == len(loader)
    assert all(len(b) == batch_size for b in (batches if drop_last else batches[:-1]))
    if tud is not None:
        assert len(loader) == len(tud.DataLoader(range(n), batch_size=batch_size, drop_last=drop_last))


def test_batch_size_none_yields_converted_samples():
    """batch_size=None turns off batching: samples come one by one, NumPy converted to tensors."""
    class Arrays(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return np.full(2, i), i

    out = list(DataLoader(Arrays(), batch_size=None))
    assert [o[1] for o in out] == [0, 1, 2]
    assert isinstance(out[2][0], dtrain.Tensor) and out[2][0].tolist() == [2, 2]


def test_batch_sampler_and_sampler_options():
    """A batch_sampler decides the batches; a sampler decides the order; collate_fn is applied."""
    loader = DataLoader(ids_dataset(6), batch_sampler=[[5, 0], [1]])
    assert labels(loader) == [[5, 0], [1]] and len(loader) == 2
    loader = DataLoader(ids_dataset(4), batch_size=3, sampler=[3, 2, 1, 0],
                        collate_fn=lambda b: [s[1].item() for s in b])
    assert list(loader) == [[3, 2, 1], [0]]


def test_getitems_is_used():
    """A dataset's __getitems__ serves a whole batch in one call."""
    class Batched(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise AssertionError("__getitem__ should not be called")

        def __getitems__(self, indices):
            return [i * 10 for i in indices]

    assert [b.tolist() for b in DataLoader(Batched(), batch_size=3)] == [[0, 10, 20], [30]]


@pytest.mark.parametrize("num_workers, drop_last, expected", [
    (0, False, [[0, 1], [2, 3], [4, 5], [6, 7], [8]]),
    (1, True, [[0, 1], [2, 3], [4, 5], [6, 7]]),
    # worker w streams w, w+2, ...: batches interleave round-robin over the workers
    (2, False, [[0, 2], [1, 3], [4, 6], [5, 7], [8]]),
])
def test_iterable_dataset(num_workers, drop_last, expected):
    """An IterableDataset is batched as it streams; with workers each iterates its own iter() and
    the batches interleave round-robin over the workers, as in PyTorch."""
    loader = DataLoader(Stream(9), batch_size=2, num_workers=num_workers, drop_last=drop_last)
    assert [b.tolist() for b in loader] == expected
    assert len(loader) == (4 if drop_last else 5)  # len() trusts len(dataset), as PyTorch does


@pytest.mark.parametrize("drop_last, expected", [(False, [[0, 3], [1, 4], [2, 5], [6, 9], [7], [8]]),
                                                 (True, [[0, 3], [1, 4], [2, 5], [6, 9]])])
def test_iterable_dataset_workers_match_torch(drop_last, expected):
    """Three workers over 0..9, sharded by worker id: the batches PyTorch's process workers yield."""
    assert [b.tolist() for b in DataLoader(Stream(10), batch_size=2, num_workers=3, drop_last=drop_last)] == expected


def test_iterable_dataset_len_needs_dataset_len():
    """len() of a loader over an IterableDataset without __len__ raises TypeError."""
    with pytest.raises(TypeError):
        len(DataLoader(Stream(4, sized=False), batch_size=2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size should be a positive integer value, but got batch_size=0"),
    (dict(batch_size=-3), "but got batch_size=-3"),
    (dict(sampler=[0, 1], shuffle=True), "sampler option is mutually exclusive with shuffle"),
    (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive with batch_size"),
    (dict(batch_sampler=[[0]], shuffle=True), "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], sampler=[0]), "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], drop_last=True), "batch_sampler option is mutually exclusive"),
    (dict(batch_size=None, drop_last=True), "batch_size=None option disables auto-batching"),
    (dict(drop_last="yes"), "drop_last should be a boolean value, but got drop_last=yes"),
    (dict(num_workers=-1), "num_workers option should be non-negative, got -1"),
    (dict(timeout=-1), "timeout option should be non-negative, got -1"),
    (dict(prefetch_factor=2), "prefetch_factor=2 needs worker threads"),
    (dict(num_workers=2, prefetch_factor=0), "prefetch_factor option should be positive, got 0"),
    (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
])
def test_loader_argument_errors(kwargs, match):
    """Inconsistent DataLoader arguments raise ValueError quoting the bad option, as PyTorch."""
    with pytest.raises(ValueError, match=match):
        DataLoader(ids_dataset(4), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(shuffle=True), dict(sampler=[0]), dict(batch_sampler=[[0]])])
def test_iterable_dataset_refuses_samplers(kwargs):
    """An IterableDataset has no indices: shuffle, sampler and batch_sampler are refused."""
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"expected unspecified {name} option"):
        DataLoader(Stream(4), **kwargs)


def test_loader_generator_type_and_frozen_attributes():
    """A non-dtrain generator is refused; batch_size etc. cannot change after construction."""
    with pytest.raises(TypeError, match="dtrain.Generator"):
        DataLoader(ids_dataset(4), shuffle=True, generator=np.random.default_rng(0))
    loader = DataLoader(ids_dataset(4))
    with pytest.raises(ValueError, match="batch_size attribute should not be set after DataLoader is initialized"):
        loader.batch_size = 3


# ---- worker threads ----------------------------------------------------------------------
@pytest.mark.parametrize("num_workers, prefetch_factor", [(1, 1), (2, 2), (3, 1), (4, 3)])
def test_workers_match_main_thread(num_workers, prefetch_factor):
    """Worker threads give the same batches in the same order as num_workers=0 (shuffled, seeded)."""
    ds = ids_dataset(37)
    dtrain.manual_seed(3)
    expected = [labels(DataLoader(ds, batch_size=4, shuffle=True)) for _ in range(2)]
    dtrain.manual_seed(3)
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=num_workers, prefetch_factor=prefetch_factor)
    assert [labels(loader) for _ in range(2)] == expected


def test_workers_keep_order_with_uneven_delays():
    """Batches that finish out of order are still yielded in sampler order."""
    class Jitter(Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            time.sleep(0.02 if i % 3 == 0 else 0.0)
            return i

    assert [b.tolist() for b in DataLoader(Jitter(), batch_size=1, num_workers=3)] == [[i] for i in range(12)]


def test_prefetch_is_bounded():
    """At most prefetch_factor * num_workers batches are loaded ahead of the consumer."""
    ds = Slow(100, delay=0.0)
    it = iter(DataLoader(ds, batch_size=2, num_workers=2, prefetch_factor=2))
    next(it)
    time.sleep(0.2)
    assert ds.calls <= (1 + 2 * 2) * 2
    del it


def test_worker_exception_propagates():
    """An exception in a worker reaches the main thread with its type, the batch index and the
    original as __cause__; the loop can go on with the next batch."""
    class Bad(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            if i == 5:
                raise KeyError(f"no sample {i}")
            return i

    it = iter(DataLoader(Bad(), batch_size=2, num_workers=2))
    assert next(it).tolist() == [0, 1] and next(it).tolist() == [2, 3]
    with pytest.raises(KeyError, match="worker thread 0 while loading batch 2: 'no sample 5'") as info:
        next(it)
    assert isinstance(info.value.__cause__, KeyError)
    assert next(it).tolist() == [6, 7]
    with pytest.raises(StopIteration):
        next(it)


def test_worker_exception_of_unusual_type():
    """An exception type that cannot be rebuilt from a message arrives as RuntimeError, cause kept."""
    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(a, b)

    class Bad(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise Odd(1, 2)

    with pytest.raises(RuntimeError, match="Caught Odd.*batch 0") as info:
        list(DataLoader(Bad(), num_workers=1))
    assert isinstance(info.value.__cause__, Odd)


def test_no_threads_leak_on_early_break():
    """Leaving the loop early (break, or an exception in the body) stops and joins the workers."""
    before = set(threading.enumerate())
    loader = DataLoader(Slow(200), batch_size=2, num_workers=3)
    for _ in loader:
        assert len(new_threads(before)) == 3
        break
    assert new_threads(before) == []
    with pytest.raises(ZeroDivisionError):
        for _ in loader:
            1 / 0
    assert new_threads(before) == []


def test_no_threads_leak_after_epoch_or_error():
    """Workers are gone after a full epoch and after a worker's exception once the iterator is dropped."""
    before = set(threading.enumerate())
    list(DataLoader(Slow(10, delay=0), batch_size=3, num_workers=2))
    assert new_threads(before) == []

    class Bad(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise ValueError("bad sample")

    with pytest.raises(ValueError, match="bad sample"):
        list(DataLoader(Bad(), num_workers=2))
    assert new_threads(before) == []


def test_worker_init_fn_and_worker_info():
    """worker_init_fn runs once in each worker thread with its id; get_worker_info is set there
    (id, num_workers, per-worker seed, the dataset) and None in the main thread."""
    seen = {}

    def init(worker_id):
        seen[worker_id] = get_worker_info()

    ds = Slow(8, delay=0)
    list(DataLoader(ds, batch_size=1, num_workers=3, worker_init_fn=init))
    assert sorted(seen) == [0, 1, 2]
    assert all(info.id == w and info.num_workers == 3 and info.dataset is ds for w, info in seen.items())
    assert len({info.seed for info in seen.values()}) == 3
    assert get_worker_info() is None


def test_worker_init_fn_error():
    """An exception in worker_init_fn is raised in the main thread, naming worker_init_fn."""
    def init(worker_id):
        raise OSError("cannot open")

    with pytest.raises(OSError, match="in worker_init_fn, before batch 0: cannot open"):
        list(DataLoader(Slow(4, delay=0), num_workers=2, worker_init_fn=init))


def test_persistent_workers():
    """persistent_workers keeps one set of threads across epochs (worker_init_fn runs once per
    worker) with the same batches as fresh workers; the threads end with the loader."""
    calls = []
    before = set(threading.enumerate())
    loader = DataLoader(Stream(7), batch_size=2, num_workers=2, persistent_workers=True,
                        worker_init_fn=calls.append)
    epochs = [[b.tolist() for b in loader] for _ in range(3)]
    assert epochs[0] == epochs[1] == epochs[2] == [[0, 2], [1, 3], [4, 6], [5]]
    assert sorted(calls) == [0, 1]
    first = iter(loader)
    next(first)
    second = iter(loader)
    assert [b.tolist() for b in second] == epochs[0]
    with pytest.raises(RuntimeError, match="superseded by a newer one"):
        list(first)
    del loader, first, second
    gc.collect()
    assert new_threads(before) == []


def test_timeout():
    """A batch slower than `timeout` raises RuntimeError naming the timeout."""
    release = threading.Event()

    class Stuck(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            release.wait(5)
            return i

    with pytest.raises(RuntimeError, match="DataLoader timed out after 0.05 seconds"):
        list(DataLoader(Stuck(), num_workers=1, timeout=0.05))
    release.set()
