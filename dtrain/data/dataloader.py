"""DataLoader: batches from a dataset, optionally prefetched by background worker threads.

Workers are threads, not processes: nothing is pickled, the dataset is shared, and the
NumPy kernels that do the work release the GIL. Each worker has its own task queue and
all share one result queue; the main thread hands out batch indices round-robin, keeps at
most ``prefetch_factor * num_workers`` batches in flight, and yields them in order.
The workers run with the CUDA device that is current in the thread that starts them.

``state_dict()`` / ``load_state_dict()`` (torchdata's StatefulDataLoader names) resume a
pass in its middle. The loader counts the batches and samples it *yielded to its user*,
not those its workers fetched ahead, and asks its sampler for the state after that many
(see sampler.py): prefetched batches that were never yielded are loaded again, none is
lost or repeated.
"""
import functools
import itertools
import queue
import reprlib
import threading
import weakref

from ..tensor import backend
from ..tensor.deterministic import are_deterministic_algorithms_enabled
from ..tensor.random import sample_random
from ..timing import phase
from .collate import default_collate, default_convert
from .dataset import IterableDataset
from .sampler import (BatchSampler, DistributedSampler, RandomSampler, Sampler, SequentialSampler, _ResumableSampler,
                      check_generator, draw_seed)

_local = threading.local()


class WorkerInfo:
    """What ``get_worker_info()`` returns inside a worker thread.

    Attributes:
        id: this worker's index in ``range(num_workers)``.
        num_workers: the number of workers of the DataLoader.
        seed: ``base_seed + id``, with ``base_seed`` drawn once per epoch (or once for
            persistent workers) from the loader's generator.
        dataset: the dataset (shared by all workers, not a copy).
    """

    def __init__(self, id, num_workers, seed, dataset):
        self.id, self.num_workers, self.seed, self.dataset = id, num_workers, seed, dataset

    def __repr__(self):
        return f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed})"


def get_worker_info():
    """The WorkerInfo of the current DataLoader worker thread, or None outside a worker.

    Example:
        >>> class Shards(IterableDataset):
        ...     def __iter__(self):
        ...         info = get_worker_info()
        ...         start, step = (0, 1) if info is None else (info.id, info.num_workers)
        ...         return iter(range(start, 100, step))
    """
    return getattr(_local, "info", None)


class _InfiniteConstantSampler(Sampler):
    """The sampler of an IterableDataset: no indices, the fetcher reads the stream."""

    def __iter__(self):
        return itertools.repeat(None)


class _MapFetcher:
    def __init__(self, dataset, auto_collation, collate_fn, drop_last):
        self.dataset, self.auto_collation, self.collate_fn = dataset, auto_collation, collate_fn

    def _sample(self, i, key):
        if key is None:
            return self.dataset[i]
        with sample_random(key, i):  # deterministic mode: the sample's random draws are its own
            return self.dataset[i]

    def fetch(self, index, key=None):
        """The batch of ``index``; with a pass key (deterministic mode), every sample loaded
        inside ``sample_random(key, i)`` (one by one: a batched ``__getitems__`` is not used)."""
        if not self.auto_collation:
            return self.collate_fn(self._sample(index, key))
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None and key is None:
            return self.collate_fn(getitems(index))
        return self.collate_fn([self._sample(i, key) for i in index])


class _IterableFetcher:
    """Reads batches from ``iter(dataset)``; raises StopIteration once it is exhausted."""

    def __init__(self, dataset, auto_collation, collate_fn, drop_last):
        self.iterator, self.auto_collation, self.collate_fn = iter(dataset), auto_collation, collate_fn
        self.drop_last, self.ended = drop_last, False

    def fetch(self, index, key=None):
        if self.ended:
            raise StopIteration
        if not self.auto_collation:
            return self.collate_fn(next(self.iterator))
        data = list(itertools.islice(self.iterator, len(index)))
        if len(data) < len(index):
            self.ended = True
            if not data or self.drop_last:
                raise StopIteration
        return self.collate_fn(data)


class _Failure:
    """An exception raised in a worker, carried to the main thread."""

    def __init__(self, exc, worker_id, where):
        self.exc, self.worker_id, self.where = exc, worker_id, where

    def reraise(self, batch):
        exc = self.exc
        msg = (f"Caught {type(exc).__name__} in DataLoader worker thread {self.worker_id} {self.where} "
               f"batch {batch}: {exc}")
        try:  # the same type, so callers' except clauses still match (as PyTorch does)
            err = type(exc)(msg)
        except Exception:
            err = RuntimeError(msg)
        try:
            raise err from exc
        finally:
            err = exc = None  # break the frame <-> traceback cycle so a dropped iterator stops its threads


_EXHAUSTED = object()  # a worker's IterableDataset iterator has ended


def _worker_loop(info, make_fetcher, worker_init_fn, tasks, results, stop, cuda_device):
    _local.info = info
    if cuda_device is not None:  # "cuda" in the dataset or collate_fn means the loader's device
        backend.cupy.cuda.Device(cuda_device).use()
    failure = None
    try:
        if worker_init_fn is not None:
            worker_init_fn(info.id)
    except BaseException as e:  # reported with the first batch this worker is given
        failure = _Failure(e, info.id, "in worker_init_fn, before")
    fetcher, fetcher_epoch = None, None
    while True:
        task = tasks.get()
        if task is None or stop.is_set():
            return
        epoch, idx, index = task
        if failure is None:
            try:
                if epoch is not fetcher_epoch:  # a new epoch: a fresh iter() of an IterableDataset
                    fetcher, fetcher_epoch = make_fetcher(), epoch
                data = fetcher.fetch(index, epoch.key)
            except StopIteration:
                data = _EXHAUSTED
            except BaseException as e:
                data = _Failure(e, info.id, "while loading")
        results.put((epoch, idx, failure or data))


class _WorkerPool:
    """``num_workers`` daemon threads, each with a task queue, sharing one result queue."""

    def __init__(self, loader, base_seed):
        n = loader.num_workers
        self.tasks = [queue.SimpleQueue() for _ in range(n)]
        self.results = queue.SimpleQueue()
        self.stop = threading.Event()
        self.join_timeout = loader.timeout or None
        self.owner = None  # the epoch token of the iterator allowed to use a persistent pool
        # a new thread starts on CUDA device 0: the workers take the current device of the
        # thread that starts them (a rank's, after set_device(local_rank))
        cuda_device = backend.current_cuda_index() if backend.cuda_is_available() else None
        self.threads = [
            threading.Thread(target=_worker_loop, name=f"dtrain-data-worker-{i}", daemon=True,
                             args=(WorkerInfo(i, n, base_seed + i, loader.dataset), loader._fetcher_factory(),
                                   loader.worker_init_fn, self.tasks[i], self.results, self.stop, cuda_device))
            for i in range(n)]
        for t in self.threads:
            t.start()

    def shutdown(self):
        self.stop.set()
        for q in self.tasks:
            q.put(None)
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(self.join_timeout)  # a worker stuck past the timeout is left behind (daemon)


class _Progress:
    """What one iterator of a loader has yielded to its user: batches, samples, and the pass
    of the sampler those samples count in (its token, taken with the first index)."""

    def __init__(self, base_seed, batches=0):
        self.base_seed, self.batches, self.samples, self.token = base_seed, batches, 0, None
        self.exhausted = False  # the pass ended: what the loader dropped (drop_last) counts as consumed

    def add(self, index, auto_collation):
        self.batches += 1
        self.samples += len(index) if auto_collation and index is not None else 1


class _Pass:
    """A token of one iterator's pass, carrying its per-sample random key (or None)."""

    def __init__(self, key):
        self.key = key


def _sample_key(source, base_seed):
    """Deterministic mode's key of the pass's per-sample random streams, or None outside it:
    (seed + epoch) of a DistributedSampler, the same on every rank at any world size (so a
    sample's augmentation does not depend on which rank loads it); else the pass's base seed."""
    if not are_deterministic_algorithms_enabled():
        return None
    if isinstance(source, DistributedSampler):
        return (source.seed + source.epoch) % 2 ** 64
    return base_seed


class _BaseIter:
    def __init__(self, loader):
        self._loader = loader
        source = loader._resumable_source
        resumed = loader._resume_seed is not None and source is not None and source._resumes_next()
        skip, loader._skip_batches = loader._skip_batches, 0
        # drawn whatever num_workers is, as PyTorch does, so a seeded shuffle gives the same
        # order with and without workers (the sampler draws its own seed after this one); a
        # resumed pass takes the saved pass's seed instead, drawing nothing, as it drew nothing
        self._base_seed = loader._resume_seed if resumed or skip else draw_seed(loader.generator)
        loader._resume_seed = None
        self._index_iter = iter(loader._index_sampler)
        # a sampler without a state of its own is fast-forwarded: only indices are drawn, no data
        for _ in itertools.islice(self._index_iter, skip):
            pass
        self._progress = loader._progress = _Progress(self._base_seed, skip)
        self._sample_key = _sample_key(loader._resumable_source, self._base_seed)

    def _next_index(self):
        index = next(self._index_iter)
        progress = self._progress
        if progress.token is None:
            source = self._loader._resumable_source
            progress.token = source._pass_token if source is not None else False
        return index

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._loader)


class _SingleThreadIter(_BaseIter):
    def __init__(self, loader):
        super().__init__(loader)
        self._fetcher = loader._fetcher_factory()()

    def __next__(self):
        with phase("data-wait"):
            try:
                index = self._next_index()
            except StopIteration:
                self._progress.exhausted = True
                raise
            try:
                return self._fetcher.fetch(index, self._sample_key)
            finally:  # a batch that raised is passed too: the next call goes on with the next one
                self._progress.add(index, self._loader._auto_collation)


class _ThreadIter(_BaseIter):
    def __init__(self, loader):
        super().__init__(loader)
        self._epoch = _Pass(self._sample_key)  # identifies this iterator's tasks and results
        pool = loader._pool
        if pool is None:
            pool = _WorkerPool(loader, self._base_seed)
            if loader.persistent_workers:
                loader._pool = pool
                weakref.finalize(loader, pool.shutdown)
        # the worker threads hold no reference to this iterator, so dropping it (a loop left
        # by break, or an exception) runs the finalizer that stops them
        self._close = weakref.finalize(self, pool.shutdown) if not loader.persistent_workers else (lambda: None)
        pool.owner = self._epoch
        self._pool = pool
        self._active = [True] * loader.num_workers
        self._workers = itertools.cycle(range(loader.num_workers))
        self._task_worker = {}  # batch idx -> worker id
        self._task_index = {}  # batch idx -> its indices, counted when the batch reaches the user
        self._buffer = {}  # results that arrived ahead of their turn
        self._send_idx = self._rcvd_idx = 0
        self._limit = loader.prefetch_factor * loader.num_workers
        self._sampler_done = False
        self._dispatch()

    def _dispatch(self):
        while not self._sampler_done and self._send_idx - self._rcvd_idx < self._limit and any(self._active):
            try:
                index = self._next_index()
            except StopIteration:
                self._sampler_done = True
                return
            w = next(self._workers)
            while not self._active[w]:
                w = next(self._workers)
            self._pool.tasks[w].put((self._epoch, self._send_idx, index))
            self._task_worker[self._send_idx] = w
            self._task_index[self._send_idx] = index
            self._send_idx += 1

    def _receive(self):
        if self._pool.owner is not self._epoch:
            raise RuntimeError("this DataLoader iterator was superseded by a newer one: with persistent_workers=True "
                               "only the latest iter(loader) can be used")
        timeout = self._loader.timeout
        try:
            epoch, idx, data = self._pool.results.get(timeout=timeout if timeout > 0 else None)
        except queue.Empty:
            self._sampler_done, self._send_idx = True, self._rcvd_idx  # this iterator is over
            self._close()
            raise RuntimeError(f"DataLoader timed out after {timeout} seconds waiting for a batch") from None
        if epoch is self._epoch:  # a persistent pool may still deliver an earlier epoch's batches
            self._buffer[idx] = data

    def __next__(self):
        while self._rcvd_idx < self._send_idx:
            if self._rcvd_idx not in self._buffer:
                with phase("data-wait"):
                    self._receive()
                continue
            idx = self._rcvd_idx
            data = self._buffer.pop(idx)
            worker = self._task_worker.pop(idx)
            index = self._task_index.pop(idx)
            self._rcvd_idx += 1
            if data is _EXHAUSTED:
                self._active[worker] = False
            else:
                self._progress.add(index, self._loader._auto_collation)
            self._dispatch()
            if isinstance(data, _Failure):
                data.reraise(idx)  # the next call goes on with the next batch, as in PyTorch
            if data is not _EXHAUSTED:
                return data
        self._progress.exhausted = True
        self._close()
        raise StopIteration


class DataLoader:
    """Iterates over a dataset in batches, as ``torch.utils.data.DataLoader``.

    Args:
        dataset: a map-style Dataset (``__getitem__``, ``__len__``) or an IterableDataset.
        batch_size: samples per batch (default 1); None yields samples one by one, uncollated.
        shuffle: reshuffle the indices every epoch (map-style datasets only).
        sampler: the order of the indices (a Sampler or any iterable); excludes ``shuffle``.
        batch_sampler: yields whole lists of indices; excludes batch_size, shuffle, sampler
            and drop_last.
        num_workers: background threads that load batches ahead (0: load in the main thread).
        collate_fn: merges a list of samples into a batch (default ``default_collate``, or
            ``default_convert`` when batching is off).
        pin_memory: accepted for compatibility; dtrain does not pin host memory.
        drop_last: drop the last batch if it is smaller than ``batch_size``.
        timeout: seconds to wait for a worker's batch before raising (0: wait forever).
        worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker thread first.
        generator: a dtrain.Generator for the shuffle order and the workers' base seed.
        prefetch_factor: batches loaded ahead per worker (default 2 when num_workers > 0).
        persistent_workers: keep the worker threads alive across epochs.

    Example:
        >>> loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
        >>> for xb, yb in loader:
        ...     loss = F.cross_entropy(model(xb), yb)
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 generator=None, *, prefetch_factor=None, persistent_workers=False):
        if num_workers < 0:
            raise ValueError(f"num_workers option should be non-negative, got {num_workers}; "
                             f"use num_workers=0 to load in the main thread")
        if timeout < 0:
            raise ValueError(f"timeout option should be non-negative, got {timeout}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(f"prefetch_factor={prefetch_factor} needs worker threads: set num_workers > 0, "
                             f"or leave prefetch_factor=None")
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        if prefetch_factor is not None and prefetch_factor <= 0:
            raise ValueError(f"prefetch_factor option should be positive, got {prefetch_factor}")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        check_generator(generator)
        self._is_iterable = isinstance(dataset, IterableDataset)
        if self._is_iterable:
            for name, value in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
                if value not in (None, False):
                    raise ValueError(f"DataLoader with IterableDataset: expected unspecified {name} option, "
                                     f"but got {name}={value}")
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                                 "and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")
        if sampler is None:
            if self._is_iterable:
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.collate_fn = collate_fn if collate_fn is not None else (
            default_collate if batch_sampler is not None else default_convert)
        self.pin_memory, self.timeout, self.worker_init_fn = pin_memory, timeout, worker_init_fn
        self.generator, self.persistent_workers = generator, persistent_workers
        self._pool = None
        self._progress = _Progress(None)  # the latest iterator's (what state_dict reports)
        self._resume_seed, self._skip_batches = None, 0  # a loaded state, for the next iterator
        self._initialized = True

    def __setattr__(self, attr, value):
        if getattr(self, "_initialized", False) and attr in (
                "batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers"):
            raise ValueError(f"{attr} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(attr, value)

    @property
    def _auto_collation(self):
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    @property
    def _resumable_source(self):
        """The sampler of indices whose state says where a pass is, or None (then a resume
        fast-forwards the index sampler by batches)."""
        if isinstance(self.batch_sampler, BatchSampler):
            source = self.batch_sampler.sampler
        else:
            source = self.sampler if self.batch_sampler is None else None
        return source if isinstance(source, _ResumableSampler) else None

    def state_dict(self):
        """Where the current pass is, counting the batches yielded to the caller (batches the
        workers loaded ahead are not counted: after a resume they are loaded again).

        Returns:
            dict: ``batches_yielded``, ``samples_yielded`` (this process's, in the latest
            pass), ``base_seed`` (the workers' base seed of that pass) and ``sampler``: the
            sampler's state after those samples (a DistributedSampler's counts all ranks, so it
            resumes on another world size), or None for a sampler without one.

        Example:
            >>> for i, batch in enumerate(loader):
            ...     if i == 9:
            ...         state = loader.state_dict()   # resumes at the 11th batch
            ...         break
        """
        progress, source = self._progress, self._resumable_source
        sampler_state = None
        if source is not None:
            # the count is of the sampler's current pass only: after set_epoch or another
            # iter(sampler) the sampler's own count is the one that holds
            # (at the end of a pass, the sampler's count: a last batch drop_last left out is done too)
            own = progress.token is not source._pass_token or progress.exhausted
            sampler_state = source.state_dict() if own else source._state_after(progress.samples)
        return {"batches_yielded": progress.batches, "samples_yielded": progress.samples,
                "base_seed": progress.base_seed, "sampler": sampler_state}

    def load_state_dict(self, state_dict):
        """Resume: the next ``iter(loader)`` yields the batch after the last one counted in
        ``state_dict`` (a :meth:`state_dict` of a loader over the same data, in the same order).

        A DistributedSampler's state resumes with any ``num_replicas`` (call this on every
        rank); a SequentialSampler's or RandomSampler's replays the saved pass's order; any
        other sampler or batch_sampler is fast-forwarded by ``batches_yielded`` batches of
        indices (no data is loaded), which continues the pass only if it draws the same order
        again.

        Raises:
            ValueError: the state is no such dict, or the sampler refuses its part (other
                settings), or the dataset is an IterableDataset and the pass is under way.
        """
        keys = {"batches_yielded", "samples_yielded", "base_seed", "sampler"}
        if not isinstance(state_dict, dict) or not keys <= set(state_dict):
            raise ValueError(f"DataLoader.load_state_dict: expected a DataLoader.state_dict(), got "
                             f"{type(state_dict).__name__} {reprlib.repr(state_dict)}")
        batches, source = state_dict["batches_yielded"], self._resumable_source
        if self._is_iterable and batches:
            raise ValueError(f"DataLoader.load_state_dict: cannot resume an IterableDataset "
                             f"({type(self.dataset).__name__}) {batches} batches into its stream: dtrain does not "
                             f"know how to skip ahead in it; resume at a pass boundary, or use a map-style dataset")
        if source is not None and state_dict["sampler"] is not None:
            source.load_state_dict(state_dict["sampler"])
            self._skip_batches = 0
        else:
            self._skip_batches = int(batches)
        self._resume_seed = state_dict["base_seed"]
        self._progress = _Progress(self._resume_seed, self._skip_batches)

    def _fetcher_factory(self):
        # a partial, not a bound method: worker threads must not keep the loader alive
        fetcher = _IterableFetcher if self._is_iterable else _MapFetcher
        return functools.partial(fetcher, self.dataset, self._auto_collation, self.collate_fn, self.drop_last)

    def __iter__(self):
        return _ThreadIter(self) if self.num_workers > 0 else _SingleThreadIter(self)

    def __len__(self):
        if not self._is_iterable:
            return len(self._index_sampler)
        length = len(self.dataset)
        if self.batch_size is not None:
            length = length // self.batch_size if self.drop_last else -(-length // self.batch_size)
        return length
