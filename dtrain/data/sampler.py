"""Samplers: the order in which a DataLoader reads dataset indices, as ``torch.utils.data``.

A sampler is an iterable of indices with ``__len__``; one whose order changes per epoch
draws fresh randomness at each ``iter()`` (or, for rank-aware samplers, derives it from
``seed + epoch`` given by ``set_epoch``).
"""
import numbers
import warnings

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


# The distributed layer (dtrain.comm) sits above data, so data never imports it: the top
# package registers it here as the source of DistributedSampler's rank and world size.
_process_group_source = [None]


def set_process_group_source(source):
    """Take DistributedSampler's default ``num_replicas``/``rank`` from ``source``: a module or
    object with ``is_initialized()``, ``get_world_size()`` and ``get_rank()`` (dtrain.comm,
    registered by ``import dtrain``), or None for none."""
    _process_group_source[0] = source


def _process_group_default(what, getter):
    """``num_replicas``/``rank`` from the default process group, or PyTorch's error."""
    source = _process_group_source[0]
    if source is None or not source.is_initialized():
        raise RuntimeError(f"DistributedSampler: {what}=None requires distributed package to be available and "
                           f"the default process group to be initialized: pass num_replicas and rank "
                           f"explicitly, or call dtrain.comm.init_process_group() first")
    return getattr(source, getter)()


class DistributedSampler(Sampler):
    """The share of the dataset's indices that one rank reads, as
    ``torch.utils.data.distributed.DistributedSampler``.

    All ranks draw the same order (shuffled with ``seed + epoch``, or 0..n-1), extend it to
    a multiple of ``num_replicas`` by repeating indices from its start (or, with
    ``drop_last``, cut the tail), and rank ``r`` takes every ``num_replicas``-th index from
    ``r``. So every rank gets ``len(sampler)`` indices and the ranks' shares are disjoint
    apart from the padding. Call ``set_epoch(epoch)`` at the start of every epoch: without it
    every epoch repeats the same order (a warning says so once, at the end of a second full
    pass at one epoch without set_epoch between).

    Args:
        dataset: a sized dataset.
        num_replicas: the number of ranks (default: the world size of the process group).
        rank: this rank, in ``[0, num_replicas - 1]`` (default: the rank in the process group).
        shuffle: shuffle the indices (the same way on every rank) if True.
        seed: the shuffling seed; must be the same on every rank.
        drop_last: drop the tail so each rank gets ``len(dataset) // num_replicas`` indices,
            instead of padding so each gets ``ceil(len(dataset) / num_replicas)``.

    Example:
        >>> list(DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False))
        [1, 3, 0]
        >>> for epoch in range(epochs):
        ...     sampler.set_epoch(epoch)
        ...     for x, y in DataLoader(dataset, batch_size=32, sampler=sampler): ...
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None:
            num_replicas = _process_group_default("num_replicas", "get_world_size")
        if rank is None:
            rank = _process_group_default("rank", "get_rank")
        if not isinstance(num_replicas, numbers.Integral) or isinstance(num_replicas, bool) or num_replicas < 1:
            raise ValueError(f"Invalid num_replicas {num_replicas!r}, num_replicas should be an integer >= 1")
        if not isinstance(rank, numbers.Integral) or isinstance(rank, bool) or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank!r}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.epoch = 0
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        n = len(dataset)
        if drop_last:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self._completed_epoch = None  # the epoch of the last full pass, for the set_epoch warning
        self._warned = False

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            # seed + epoch wraps modulo 2**64, as torch.Generator.manual_seed does
            indices = randperm_list(n, random.Generator().manual_seed((self.seed + self.epoch) % 2 ** 64))
        else:
            indices = list(range(n))
        if self.drop_last:
            indices = indices[:self.total_size]
        elif indices:
            padding = self.total_size - n
            indices += (indices * -(-padding // n))[:padding]  # repeats the start, several times if n < replicas
        assert len(indices) == self.total_size, f"{len(indices)} indices, expected total_size {self.total_size}"
        return self._pass(indices[self.rank:self.total_size:self.num_replicas], self.epoch)

    def _pass(self, indices, epoch):
        yield from indices
        # Warn only after a second full pass at one epoch with no set_epoch between: peeking
        # a batch (next(iter(loader))) before an epoch loop that calls set_epoch is fine,
        # even when loader workers prefetched the whole (small) epoch for the peek.
        if self.shuffle and self._completed_epoch == epoch and not self._warned:
            self._warned = True
            warnings.warn(f"DistributedSampler is iterated again at epoch {epoch}: this full pass repeated "
                          f"the previous one's order; call sampler.set_epoch(epoch) at the start of every epoch",
                          stacklevel=2)
        self._completed_epoch = epoch

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Set the epoch; with ``shuffle=True`` each epoch has its own order (``seed + epoch``).

        Args:
            epoch: the epoch number, the same on every rank.
        """
        self.epoch = epoch
        self._completed_epoch = None
