"""Datasets and their combinators, as ``torch.utils.data``: Dataset, IterableDataset,
TensorDataset, Subset, ConcatDataset, ChainDataset, random_split."""
import bisect
import itertools
import math
import numbers
import warnings

from ..tensor import Tensor
from .sampler import randperm_list, check_generator


class Dataset:
    """A map-style dataset: subclasses define ``__getitem__(index)`` and ``__len__``.

    They may also define ``__getitems__(indices)`` returning the list of samples, which the
    DataLoader then calls once per batch instead of ``__getitem__`` per sample.

    Example:
        >>> class Squares(Dataset):
        ...     def __len__(self): return 10
        ...     def __getitem__(self, i): return i * i
    """

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A stream of samples: subclasses define ``__iter__``.

    With ``num_workers > 0`` every worker thread iterates its own ``iter(dataset)``; use
    ``dtrain.data.get_worker_info()`` inside ``__iter__`` to give each worker a share.

    Example:
        >>> class Count(IterableDataset):
        ...     def __iter__(self): return iter(range(5))
    """

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")

    def __add__(self, other):
        return ChainDataset([self, other])


class TensorDataset(Dataset):
    """Samples are the rows of tensors that share their first dimension.

    Args:
        *tensors: Tensors with the same size in dim 0; sample ``i`` is
            ``tuple(t[i] for t in tensors)``.

    Example:
        >>> ds = TensorDataset(dtrain.randn(100, 3), dtrain.arange(100))
        >>> x, y = ds[0]
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"TensorDataset: argument {i} is a {type(t).__name__}, expected a Tensor "
                                f"(convert it with dtrain.as_tensor)")
            if t.ndim == 0:
                raise ValueError(f"TensorDataset: argument {i} is a 0-d tensor, expected at least one dimension")
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) > 1:
            raise ValueError(f"Size mismatch between tensors: TensorDataset needs the same size in dim 0, "
                             f"got sizes {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(_row(t, index) for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


def _row(t, index):
    # an int index on a tensor that needs no graph: wrapping the NumPy/CuPy view directly
    # skips the indexing op, which dominates a per-sample loader loop
    if isinstance(index, numbers.Integral) and not t.requires_grad:
        return Tensor._wrap(t.array[index])
    return t[index]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order.

    Args:
        dataset: a map-style dataset.
        indices: a sequence of indices into ``dataset``.

    Example:
        >>> Subset(TensorDataset(dtrain.arange(10)), [2, 4])[1]
        (tensor(4),)
    """

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """Map-style datasets joined end to end.

    Args:
        datasets: a non-empty iterable of map-style datasets.

    Example:
        >>> len(ConcatDataset([TensorDataset(dtrain.zeros(3)), TensorDataset(dtrain.ones(2))]))
        5
    """

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("datasets should not be an empty iterable")
        for i, d in enumerate(self.datasets):
            if isinstance(d, IterableDataset):
                raise TypeError(f"ConcatDataset does not support IterableDataset (dataset {i} is a "
                                f"{type(d).__name__}): use ChainDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a ConcatDataset of length {n}")
        idx = idx % n
        d = bisect.bisect_right(self.cumulative_sizes, idx)
        return self.datasets[d][idx - (self.cumulative_sizes[d - 1] if d else 0)]


class ChainDataset(IterableDataset):
    """Iterable datasets chained one after the other (what ``IterableDataset + other`` gives).

    Args:
        datasets: an iterable of IterableDatasets.

    Example:
        >>> list(ChainDataset([stream_a, stream_b]))
    """

    def __init__(self, datasets):
        self.datasets = datasets

    def __iter__(self):
        for d in self._checked():
            yield from d

    def __len__(self):
        return sum(len(d) for d in self._checked())

    def _checked(self):
        for i, d in enumerate(self.datasets):
            if not isinstance(d, IterableDataset):
                raise TypeError(f"ChainDataset only supports IterableDataset, dataset {i} is a {type(d).__name__}")
            yield d


def random_split(dataset, lengths, generator=None):
    """Split ``dataset`` into non-overlapping random Subsets of the given lengths.

    Args:
        dataset: a map-style dataset.
        lengths: the lengths of the splits (summing to ``len(dataset)``), or fractions
            summing to 1; ``floor(len * fraction)`` each, the remainder handed out one by
            one from the first split on.
        generator: a dtrain.Generator (default: dtrain's default CPU generator).

    Returns:
        A list of Subsets.

    Example:
        >>> train, val = random_split(ds, [0.8, 0.2], generator=dtrain.Generator().manual_seed(0))
    """
    check_generator(generator)
    lengths = list(lengths)
    n = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, frac in enumerate(lengths):
            if not 0 <= frac <= 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1: {frac}")
        fractions, lengths = lengths, [math.floor(n * frac) for frac in lengths]
        for i in range(n - sum(lengths)):
            lengths[i % len(lengths)] += 1
        for i, length in enumerate(lengths):
            if length == 0:
                warnings.warn(f"Length of split at index {i} is 0 (fraction {fractions[i]} of {n} samples). "
                              f"This might result in an empty dataset.")
    for i, length in enumerate(lengths):
        if not isinstance(length, numbers.Integral) or length < 0:
            raise ValueError(f"random_split: lengths must be non-negative ints or fractions summing to 1, "
                             f"got {lengths[i]!r} at index {i}")
    if sum(lengths) != n:
        raise ValueError(f"Sum of input lengths does not equal the length of the input dataset! "
                         f"(lengths {lengths} sum to {sum(lengths)}, the dataset has {n} samples)")
    indices = randperm_list(n, generator)
    return [Subset(dataset, indices[end - length:end])
            for end, length in zip(itertools.accumulate(lengths), lengths)]
