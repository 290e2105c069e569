"""Samplers: the order in which a DataLoader reads dataset indices, as ``torch.utils.data``.

A sampler is an iterable of indices with ``__len__``; one whose order changes per epoch
draws fresh randomness at each ``iter()`` (or, for rank-aware samplers, derives it from
``seed + epoch`` given by ``set_epoch``).

SequentialSampler, RandomSampler and DistributedSampler are resumable mid-pass (torchdata's
StatefulDataLoader protocol): ``state_dict()`` records where the current pass is, and after
``load_state_dict(state)`` the next ``iter()`` continues with the next index. A DataLoader
asks them for the state after the batches it *yielded* (not the ones its workers prefetched).
DistributedSampler's state is global (samples consumed by all ranks together), so it resumes
on any number of ranks. Its ``batch_size`` layout (contiguous blocks round-robin, asked for by
a BatchSampler in deterministic mode) is the one DistributedDataParallel's micro-shards need.
"""
import itertools
import numbers
import warnings

from ..tensor import backend, dtypes, random
from ..tensor.deterministic import are_deterministic_algorithms_enabled


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


def _check_state(owner, state, expected):
    """``state`` as a dict holding ``expected``'s keys, each equal to the value given (None: any
    int >= 0); ValueError naming the key and both values otherwise."""
    if not isinstance(state, dict) or not set(expected) <= set(state):
        missing = sorted(set(expected) - set(state)) if isinstance(state, dict) else sorted(expected)
        raise ValueError(f"{owner}.load_state_dict: expected a state_dict() of {owner}, got "
                         f"{type(state).__name__} lacking {missing}")
    for key, value in expected.items():
        got = state[key]
        if value is None:
            if not isinstance(got, numbers.Integral) or isinstance(got, bool) or got < 0:
                raise ValueError(f"{owner}.load_state_dict: {key} must be an int >= 0, got {got!r}")
        elif isinstance(got, bool) != isinstance(value, bool) or got != value:
            raise ValueError(f"{owner}.load_state_dict: the state was saved with {key}={got!r}, this sampler has "
                             f"{key}={value!r}: the resumed pass would not continue the saved order; build the "
                             f"sampler with the saved settings")
    return state


class _ResumableSampler(Sampler):
    """A sampler that knows where its current pass is: ``state_dict()`` / ``load_state_dict()``.

    Subclasses call ``_begin_pass()`` in ``__iter__`` and wrap the pass in ``_counted``; they
    define ``_state_after(yielded)``: the state to resume after ``yielded`` indices of the
    current pass (a DataLoader passes the count of what it gave its user, which is behind
    what the sampler produced when workers prefetch)."""

    _yielded = 0
    _pass_token = None  # a new object per pass: a DataLoader checks its count is of this pass

    def _begin_pass(self, already=0):
        self._pass_token, self._yielded = object(), int(already)
        return self._pass_token

    def _counted(self, indices, token):
        for i in indices:
            if self._pass_token is token:  # an older pass's iterator no longer counts
                self._yielded += 1
            yield i

    def state_dict(self):
        """Where the current pass is: ``load_state_dict`` of it makes the next ``iter()``
        continue with the index after the last one this sampler produced."""
        return self._state_after(self._yielded)


class SequentialSampler(_ResumableSampler):
    """Indices 0, 1, ..., len(data_source) - 1 in order.

    Example:
        >>> list(SequentialSampler(range(3)))
        [0, 1, 2]
    """

    def __init__(self, data_source):
        self.data_source = data_source
        self._skip, self._resuming = 0, False  # a loaded state's position, for the next pass

    def __iter__(self):
        skip, self._skip, self._resuming = self._skip, 0, False
        return self._counted(range(skip, len(self.data_source)), self._begin_pass(skip))

    def _state_after(self, yielded):
        return {"samples_yielded": yielded, "dataset_len": len(self.data_source)}

    def load_state_dict(self, state):
        """Resume: the next ``iter()`` starts after the ``samples_yielded`` indices of the state."""
        _check_state("SequentialSampler", state, {"samples_yielded": None, "dataset_len": len(self.data_source)})
        skip = int(state["samples_yielded"])
        self._resuming = skip < len(self.data_source)  # a finished pass: the next one is whole
        self._skip = skip if self._resuming else 0
        self._begin_pass(self._skip)

    def _resumes_next(self):
        return self._resuming

    def __len__(self):
        return len(self.data_source)


class RandomSampler(_ResumableSampler):
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
        self._pass_rng = None  # the generator state the current pass began with
        self._resume = None  # a loaded (generator state, indices to skip), for the next pass

    @property
    def num_samples(self):
        # the dataset may grow or shrink after the sampler is built
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        generator = self.generator if self.generator is not None else random.Generator()
        if self._resume is not None:  # replay the saved pass's draws (the default generator is not drawn from)
            (rng, skip), self._resume = self._resume, None
            generator.set_state(rng)
        else:
            skip = 0
            if self.generator is None:
                generator.manual_seed(draw_seed())
        self._pass_rng = generator.get_state()
        token = self._begin_pass(skip)
        return self._counted(itertools.islice(self._draw(generator), skip, None), token)

    def _draw(self, generator):
        n = len(self.data_source)
        if self.replacement:
            yield from random.integers_array(0, n, (self.num_samples,), dtypes.int64, backend.CPU, generator).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from randperm_list(n, generator)
        yield from randperm_list(n, generator)[:self.num_samples % n]

    def _state_after(self, yielded):
        # before any pass there is no order to replay: generator None resumes with a new pass
        return {"generator": self._pass_rng, "samples_yielded": yielded, "num_samples": self.num_samples,
                "replacement": self.replacement}

    def load_state_dict(self, state):
        """Resume: the next ``iter()`` redraws the saved pass's order (from the generator state
        it began with) and continues after its ``samples_yielded`` indices."""
        _check_state("RandomSampler", state, {"samples_yielded": None, "num_samples": self.num_samples,
                                              "replacement": self.replacement})
        if state.get("generator") is not None and not isinstance(state["generator"], dict):
            raise ValueError(f"RandomSampler.load_state_dict: the generator state is "
                             f"{type(state['generator']).__name__}, not a Generator.get_state() dict or None")
        skip = int(state["samples_yielded"])
        # a finished pass (or none begun): the next one draws a new order, as without the stop
        fresh = skip >= self.num_samples or state["generator"] is None
        self._resume = None if fresh else (state["generator"], skip)
        self._pass_rng = state["generator"]
        self._begin_pass(skip)

    def _resumes_next(self):
        return self._resume is not None

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
        if isinstance(sampler, DistributedSampler) and sampler.batch_size not in (None, batch_size):
            raise ValueError(f"BatchSampler: batch_size={batch_size} but its DistributedSampler deals blocks of "
                             f"batch_size={sampler.batch_size}: a batch would not be one contiguous block of the "
                             f"global order (the rows DistributedDataParallel's micro-shards expect); give the "
                             f"DataLoader and the DistributedSampler the same batch_size")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self):
        # the sampler's pass begins at iter(), not at the first batch: a DataLoader's state
        # taken before its first batch is then of this pass
        if isinstance(self.sampler, DistributedSampler):  # it deals blocks of our batch size when asked
            return self._batches(self.sampler._iter_for_batches(self.batch_size))
        return self._batches(iter(self.sampler))

    def _batches(self, indices):
        batch = []
        for index in indices:
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


class DistributedSampler(_ResumableSampler):
    """The share of the dataset's indices that one rank reads, as
    ``torch.utils.data.distributed.DistributedSampler``.

    All ranks draw the same order (shuffled with ``seed + epoch``, or 0..n-1), extend it to
    a multiple of ``num_replicas`` by repeating indices from its start (or, with
    ``drop_last``, cut the tail), and rank ``r`` takes every ``num_replicas``-th index from
    ``r``. So every rank gets ``len(sampler)`` indices and the ranks' shares are disjoint
    apart from the padding. Call ``set_epoch(epoch)`` at the start of every epoch: without it
    every epoch repeats the same order (a warning says so once, at the end of a second full
    pass at one epoch without set_epoch between).

    The layout for deterministic training (``batch_size``): DistributedDataParallel's
    micro-shards (``micro_shard_size``) need rank ``r``'s ``f``-th batch of ``b`` rows to be
    the order's block ``f * num_replicas + r`` of ``b`` contiguous positions, so that the
    rows of every global batch (and of each forward under gradient accumulation) lie in
    the same order across the ranks at any world size. With ``batch_size=b`` the sampler
    deals the order in such blocks instead of strided; a DataLoader (its BatchSampler)
    asks for that layout by itself in deterministic mode
    (``dtrain.use_deterministic_algorithms(True)``), with its own ``batch_size``. Each rank
    still gets ``len(sampler)`` indices (the same padding or cut as the strided layout); the
    last round, shorter than ``num_replicas`` blocks, is split evenly into contiguous pieces.
    At one rank both layouts are the plain order.

    Mid-epoch resume, on any number of ranks: ``state_dict()`` records the epoch, the seed
    and how many samples of the epoch's order all ranks together consumed (the ranks move
    in step, as under DDP: after each rank took k indices, positions 0 .. k*num_replicas - 1
    of the order are done). After ``load_state_dict(state)`` (on every rank, with any
    ``num_replicas``), the next ``iter()`` at that epoch deals out the rest of the order,
    from the next global position, as a pass of its own: padded (or, with ``drop_last``,
    cut) to a multiple of the new ``num_replicas``, and ``len()`` is that pass's length.
    ``set_epoch`` to another epoch drops the loaded position; ``set_epoch`` to the loaded
    epoch keeps it (so a loop that calls ``set_epoch(epoch)`` first resumes correctly).

    Args:
        dataset: a sized dataset.
        num_replicas: the number of ranks (default: the world size of the process group).
        rank: this rank, in ``[0, num_replicas - 1]`` (default: the rank in the process group).
        shuffle: shuffle the indices (the same way on every rank) if True.
        seed: the shuffling seed; must be the same on every rank.
        drop_last: drop the tail so each rank gets ``len(dataset) // num_replicas`` indices,
            instead of padding so each gets ``ceil(len(dataset) / num_replicas)``.
        batch_size: (dtrain) deal contiguous blocks of this many indices (the DataLoader's
            ``batch_size``: rows per rank per forward) round-robin over the ranks, the layout
            deterministic training needs; None (default): PyTorch's strided layout, or in
            deterministic mode under a DataLoader, blocks of the loader's ``batch_size``.

    Example:
        >>> list(DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False))
        [1, 3, 0]
        >>> list(DistributedSampler(range(8), num_replicas=2, rank=1, shuffle=False, batch_size=2))
        [2, 3, 6, 7]
        >>> for epoch in range(epochs):
        ...     sampler.set_epoch(epoch)
        ...     for x, y in DataLoader(dataset, batch_size=32, sampler=sampler): ...
        >>> state = sampler.state_dict()   # mid-epoch, at 4 ranks
        >>> DistributedSampler(dataset, num_replicas=2, rank=r).load_state_dict(state)  # goes on at 2
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False,
                 batch_size=None):
        if num_replicas is None:
            num_replicas = _process_group_default("num_replicas", "get_world_size")
        if rank is None:
            rank = _process_group_default("rank", "get_rank")
        if not isinstance(num_replicas, numbers.Integral) or isinstance(num_replicas, bool) or num_replicas < 1:
            raise ValueError(f"Invalid num_replicas {num_replicas!r}, num_replicas should be an integer >= 1")
        if not isinstance(rank, numbers.Integral) or isinstance(rank, bool) or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank!r}, rank should be in the interval [0, {num_replicas - 1}]")
        if batch_size is not None:
            _check_positive_int("batch_size", batch_size)
        self.dataset = dataset
        self.batch_size = None if batch_size is None else int(batch_size)
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
        self._resume_at = None  # (epoch, global position) of a loaded state, for the next pass at that epoch
        self._pass_start = 0  # the global position the current pass began at
        self._pass_block = None  # the block size of the current pass's layout (None: strided)

    def _start(self):
        """The global position the next pass at ``self.epoch`` begins at."""
        return self._resume_at[1] if self._resume_at is not None and self._resume_at[0] == self.epoch else 0

    def _pass_size(self, start):
        """Indices per rank of a pass that begins at global position ``start``."""
        rest = max(0, len(self.dataset) - start)
        return rest // self.num_replicas if self.drop_last else -(-rest // self.num_replicas)

    def __iter__(self):
        return self._iter_blocks(self.batch_size)

    def _iter_for_batches(self, batch_size):
        """The pass a BatchSampler of ``batch_size`` groups: in blocks of the sampler's own
        ``batch_size``, else (deterministic mode) of ``batch_size``, else strided."""
        block = self.batch_size
        if block is None and are_deterministic_algorithms_enabled():
            block = batch_size
        return self._iter_blocks(block)

    def _iter_blocks(self, block):
        n = len(self.dataset)
        start = self._start()
        self._resume_at = None
        if self.shuffle:
            # seed + epoch wraps modulo 2**64, as torch.Generator.manual_seed does
            indices = randperm_list(n, random.Generator().manual_seed((self.seed + self.epoch) % 2 ** 64))
        else:
            indices = list(range(n))
        # from a resumed position the rest of the order is dealt out as a pass of its own (at
        # start 0, PyTorch's pass exactly): positions consumed before the stop are not dealt again
        # but as padding, which repeats the order's start as PyTorch's does, so that a resume on
        # as many ranks (its position a multiple of them) deals the uninterrupted pass's rest exactly
        order, indices = indices, indices[start:]
        total = self._pass_size(start) * self.num_replicas
        if self.drop_last:
            indices = indices[:total]
        elif indices:
            padding = total - len(indices)
            indices += (order * -(-padding // n))[:padding]  # repeats the start, several times if short
        assert len(indices) == total, f"{len(indices)} indices, expected {total} ({self.num_replicas} x pass size)"
        self._pass_start, self._pass_block = start, block
        token = self._begin_pass()
        return self._pass(self._counted(self._share(indices, block), token), self.epoch)

    def _share(self, indices, block):
        """This rank's indices of the pass's ``indices`` (a multiple of num_replicas of them)."""
        ranks, rank = self.num_replicas, self.rank
        if block is None:
            return indices[rank::ranks]
        per_rank = len(indices) // ranks
        rounds = per_rank // block
        mine = [i for f in range(rounds) for i in indices[(f * ranks + rank) * block:(f * ranks + rank + 1) * block]]
        # the last round (fewer than num_replicas blocks) split evenly: rank r's rows are then
        # rows r*t .. (r+1)*t of that round, the place DDP's micro-shards give a batch of t rows
        tail, base = per_rank - rounds * block, rounds * block * ranks
        return mine + indices[base + rank * tail:base + (rank + 1) * tail]

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
        # the current pass's (or, before it begins, the next one's): a resumed pass is shorter
        return self._pass_size(self._pass_start)

    def set_epoch(self, epoch):
        """Set the epoch; with ``shuffle=True`` each epoch has its own order (``seed + epoch``).

        Args:
            epoch: the epoch number, the same on every rank.
        """
        self.epoch = epoch
        self._completed_epoch = None
        if self._resume_at is not None and self._resume_at[0] != epoch:
            self._resume_at = None  # another epoch: the loaded position is of no use any more
        self._pass_start = self._start()
        self._begin_pass()

    def _resumes_next(self):
        return self._resume_at is not None and self._resume_at[0] == self.epoch

    def _state_after(self, yielded):
        # the ranks move in step: after each took `yielded`, the pass's first yielded x num_replicas
        # positions are done (at the end, padding takes the count past the dataset: clamp).
        # In blocks, that holds at a block's end (where a DataLoader asks) or the pass's end; in
        # the middle of a block only the whole rounds before it count (its indices come again).
        yielded, block = int(yielded), self._pass_block
        if block is not None and yielded < self._pass_size(self._pass_start):
            yielded -= yielded % block
        consumed = min(len(self.dataset), self._pass_start + yielded * self.num_replicas)
        return {"epoch": self.epoch, "seed": self.seed, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "dataset_len": len(self.dataset), "num_replicas": self.num_replicas, "samples_consumed": consumed}

    def state_dict(self):
        """The epoch, the seed and ``samples_consumed``: how many positions of the epoch's order
        all ranks together consumed (this rank's count of indices produced x ``num_replicas``).
        Every rank returns the same dict while the ranks move in step.

        Returns:
            dict: ``epoch``, ``seed``, ``shuffle``, ``drop_last``, ``dataset_len``,
            ``num_replicas`` (at save, for information) and ``samples_consumed``.
        """
        return super().state_dict()

    def load_state_dict(self, state):
        """Resume a saved pass, on any ``num_replicas``: the next ``iter()`` at the saved epoch
        (which this sets) continues with the order's next global position.

        Args:
            state: a ``state_dict()`` of a DistributedSampler over the same dataset length
                with the same ``seed``, ``shuffle`` and ``drop_last``.

        Raises:
            ValueError: the state is not such a dict (naming the key and both values).
        """
        n = len(self.dataset)
        _check_state("DistributedSampler", state, {"seed": self.seed, "shuffle": self.shuffle,
                                                   "drop_last": self.drop_last, "dataset_len": n,
                                                   "epoch": None, "samples_consumed": None})
        if state["samples_consumed"] > n:
            raise ValueError(f"DistributedSampler.load_state_dict: samples_consumed={state['samples_consumed']} "
                             f"is more than the dataset's {n} samples")
        self.epoch = int(state["epoch"])
        self._completed_epoch = None
        self._resume_at = (self.epoch, int(state["samples_consumed"]))
        self._pass_start = self._resume_at[1]
        self._begin_pass()
