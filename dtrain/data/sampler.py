"""Samplers: the order in which a DataLoader reads dataset indices, as ``torch.utils.data``.

A sampler is an iterable of indices with ``__len__``; one whose order changes per epoch
draws fresh randomness at each ``iter()`` (or, for rank-aware samplers, derives it from
``seed + epoch`` given by ``set_epoch``).
"""
import numbers

from ..tensor import backend, dtypes, random


def check_generator(generator):
    """Return ``generator`` if it is None or a dtrain CPU Generator, else raise TypeError."""
    if generator is not None and not isinstance(generator, random.Generator):
        raise TypeError(f"generator must be a dtrain.Generator, got {type(generator).__name__}")
    if generator is not None and generator.device != backend.CPU:
        raise ValueError(f"samplers need a CPU generator, got one on {generator.device}")
    return generator


def draw_seed(generator=None):
    """A 63-bit seed drawn from ``generator`` or from dtrain's default CPU generator,
    so that ``dtrain.manual_seed`` makes everything seeded from it reproducible."""
    return int(random.integers_array(0, 2 ** 63 - 1, (), dtypes.int64, backend.CPU, generator))


def randperm_list(n, generator):
    return random.permutation_array(n, dtypes.int64, backend.CPU, generator).tolist()


def _check_positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} should be a positive integer value, but got {name}={value}")


class Sampler:
    """Base class of samplers: subclasses define ``__iter__`` (indices) and usually ``__len__``.

    Args:
        data_source: ignored; accepted for PyTorch compatibility.
    """

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class SequentialSampler(Sampler):
    """Indices 0, 1, ..., len(data_source) - 1 in order.

    Example:
        >>> list(SequentialSampler(range(3)))
        [0, 1, 2]
    """

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """Indices in random order: a fresh permutation each epoch, or draws with replacement.

    Args:
        data_source: a sized dataset.
        replacement: draw ``num_samples`` indices independently (with repeats) if True.
        num_samples: how many indices per epoch (default ``len(data_source)``); without
            replacement, more than ``len(data_source)`` concatenates permutations.
        generator: a dtrain.Generator; by default each epoch seeds a new generator from
            dtrain's default one, so ``dtrain.manual_seed(s)`` fixes the sequence of epochs.

    Example:
        >>> dtrain.manual_seed(0); sorted(RandomSampler(range(4)))
        [0, 1, 2, 3]
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = check_generator(generator)
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement}")
        _check_positive_int("num_samples", self.num_samples)

    @property
    def num_samples(self):
        # the dataset may grow or shrink after the sampler is built
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n = len(self.data_source)
        generator = self.generator if self.generator is not None else random.Generator().manual_seed(draw_seed())
        if self.replacement:
            yield from random.integers_array(0, n, (self.num_samples,), dtypes.int64, backend.CPU, generator).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from randperm_list(n, generator)
        yield from randperm_list(n, generator)[:self.num_samples % n]

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order (a new one each epoch), without replacement.

    Args:
        indices: a sequence of dataset indices.
        generator: a dtrain.Generator (default: dtrain's default CPU generator).

    Example:
        >>> sorted(SubsetRandomSampler([5, 7, 9]))
        [5, 7, 9]
    """

    def __init__(self, indices, generator=None):
        self.indices = indices
        self.generator = check_generator(generator)

    def __iter__(self):
        for i in randperm_list(len(self.indices), self.generator):
            yield self.indices[i]

    def __len__(self):
        return len(self.indices)


class BatchSampler(Sampler):
    """Groups the indices of another sampler into lists of ``batch_size``.

    Args:
        sampler: a sampler or any iterable of indices.
        batch_size: the size of each batch (a positive int).
        drop_last: drop the last batch if it is smaller than ``batch_size``.

    Example:
        >>> list(BatchSampler(SequentialSampler(range(5)), 2, drop_last=False))
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, sampler, batch_size, drop_last):
        _check_positive_int("batch_size", batch_size)
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)
