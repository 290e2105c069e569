"""Training checkpoints: everything a run needs to go on, on the same or another number of ranks.

A checkpoint is one :func:`dtrain.serialization.save` file (safe, checksummed, written
atomically) holding a dict::

    {"dtrain_checkpoint": 2, "model": ..., "optimizer": ..., "scheduler": ..., "scaler": ...,
     "data": ..., "epoch": ..., "step": ..., "world_size": ..., "global_batch": ..., "extra": ...,
     "rng": {"dtrain": ..., "numpy": ..., "python": ..., "cuda": [...]},
     "rng_ranks": [{"dtrain": ..., ...}, ...]}   # only from a save of several ranks

``data`` is a DataLoader's (or a sampler's) ``state_dict()``: where the epoch is, counted in
samples all ranks consumed, so a resume goes on mid-epoch with the next sample, on any world
size. ``world_size`` and ``global_batch`` are the job's at save: :func:`split_global_batch`
turns them into the per-rank batch and gradient accumulation that keep the global batch on
another number of ranks. Version 1 files (without scaler, data, world_size, global_batch)
still load; those parts are None.

The RNG states are dtrain's CPU generator, NumPy's global RandomState, Python's ``random``
module and the CUDA generators of every visible device (``dtrain.cuda.get_rng_state_all()``,
[] without a GPU), stored as numbers and arrays (no pickle), so that a resumed run draws the
same random numbers as an uninterrupted one. A file without "cuda" (written before it was
saved) loads and leaves the CUDA generators alone; so does a load without a GPU (no draw
there can use them: ignored, as ``torch.cuda.set_rng_state_all`` is on a CPU-only build); a
load that sees another number of GPUs than the save restores the devices both have and
warns, naming both counts.

Under several ranks each rank has its own streams (seeded per rank, nanoGPT's
``manual_seed(1337 + rank)``; default-mode dropout; its own GPU). A collective save
(:meth:`CheckpointManager.save`, or ``save_checkpoint(..., gather_rng=True)`` on every rank)
gathers them into ``rng_ranks``, one "rng" dict per rank in rank order ("rng" is then rank
0's); a single-process save writes no ``rng_ranks`` (its "rng" is the one rank's). On a load
at the same world size rank r restores ``rng_ranks[r]``; on another world size (or from a
file without ``rng_ranks``) every rank restores "rng", rank 0's, and, when the file says how
many ranks saved it, rank 0 warns once that the per-rank streams are not continued.
Deterministic mode does not need them: its per-sample randomness comes from the shared
default generator, drawn alike on every rank (``dtrain/parallel/micro_shards.py``).

:class:`CheckpointManager` keeps a series of them in a directory (the last K, resume from
the newest intact one), and under several ranks has rank 0 write and every rank agree.
"""
import glob
import os
import random
import re
import reprlib
import warnings

import numpy

from .serialization import CheckpointError, file_name, load, save_state, stored_checksum
from . import cuda as dtrain_cuda
from .tensor import random as dtrain_random
from .tensor.device_rng import check_generator_state

_MARKER = "dtrain_checkpoint"
_VERSION = 2
_STATES = ("model", "optimizer", "scheduler", "scaler", "data")  # objects with state_dict / load_state_dict
_NEW_IN_2 = ("scaler", "data", "world_size", "global_batch")  # None when a version 1 file is read
_INFO = ("epoch", "step", "world_size", "global_batch", "extra")  # what load returns as saved


def _world_size():
    from . import comm
    return comm.get_world_size() if comm.is_initialized() else 1


def _fully_sharded(model):
    """Whether ``model`` (or a module in it) is under fully_shard: its optimizer holds shards."""
    from .distributed.fsdp.fully_shard import shard_placements
    from .nn import Module
    inner = getattr(model, "module", model)  # DistributedDataParallel's
    return isinstance(inner, Module) and bool(shard_placements(inner))


def _full_options(**kw):
    from .distributed.checkpoint import StateDictOptions
    return StateDictOptions(full_state_dict=True, **kw)


def _rng_state():
    """This process's RNG states: what a checkpoint's "rng" entry holds."""
    return {"dtrain": dtrain_random.get_rng_state(), "numpy": numpy.random.get_state(),
            "python": random.getstate(), "cuda": dtrain_cuda.get_rng_state_all()}


def _gathered_rng():
    """Every rank's RNG states in rank order under several ranks (a collective: every rank
    calls it), else None: a single-process checkpoint stores no per-rank list."""
    if not _distributed():
        return None
    from . import comm
    states = [None] * comm.get_world_size()
    comm.all_gather_object(states, _rng_state())  # all ranks get the list: files written by any rank agree
    return states


def _collect(model, optimizer, scheduler, scaler, data, epoch, step, world_size, global_batch, extra,
             rng_ranks=None):
    """The checkpoint dict of the given objects (RNG states included: this process's, or with
    ``rng_ranks`` (from _gathered_rng) every rank's, "rng" being rank 0's). A fully_shard
    model's optimizer state is saved whole, keyed by parameter name (gathered to rank 0:
    collective), so that it reshards at load on any world size."""
    ckpt = {_MARKER: _VERSION}
    for key, obj in zip(_STATES, (model, optimizer, scheduler, scaler, data)):
        if obj is None:
            ckpt[key] = None
        elif key == "optimizer" and model is not None and _fully_sharded(model):
            from .distributed.checkpoint import get_optimizer_state_dict
            ckpt[key] = get_optimizer_state_dict(model, obj, options=_full_options(cpu_offload=True))
        else:
            ckpt[key] = obj.state_dict()
    if global_batch is not None and (not isinstance(global_batch, int) or isinstance(global_batch, bool)
                                     or global_batch < 1):
        raise ValueError(f"save_checkpoint: global_batch must be a positive int (samples per optimizer step "
                         f"over all ranks) or None, got {global_batch!r}")
    ckpt.update(epoch=epoch, step=step, world_size=_world_size() if world_size is None else int(world_size),
                global_batch=global_batch, extra=extra, rng=_rng_state() if rng_ranks is None else rng_ranks[0])
    if rng_ranks is not None:
        ckpt["rng_ranks"] = rng_ranks
    return ckpt


def save_checkpoint(path, model=None, optimizer=None, scheduler=None, epoch=None, step=None, extra=None, *,
                    scaler=None, data=None, world_size=None, global_batch=None, gather_rng=False):
    """Save a training checkpoint to ``path`` (atomically: a crash never leaves a half file).

    Args:
        path: file path (str or os.PathLike) or a binary file object.
        model, optimizer, scheduler, scaler: objects with ``state_dict()`` (a Module, an
            Optimizer, an LR scheduler, a GradScaler, or anything alike), or None to leave
            that part out.
        epoch, step: int or None.
        extra: any plain state :func:`dtrain.save` writes without pickling (numbers, strings,
            tensors, lists and dicts of them, e.g. a dict of metrics), or None.
        data: a DataLoader or a sampler (its ``state_dict()``: where the epoch is), or None.
        world_size: the job's number of ranks (default: the process group's, 1 without one).
        global_batch: samples per optimizer step over all ranks (per-rank batch x gradient
            accumulation x world size), or None; what an elastic resume keeps.
        gather_rng: under several ranks, every rank calls save_checkpoint together (a
            collective) and the file holds each rank's RNG states (``rng_ranks``), so that a
            resume on as many ranks continues each rank's streams. False (default): this
            process's states only, and no rank waits for another (a save on rank 0 alone
            works). :class:`CheckpointManager` always gathers. No effect in one process.

    Example:
        >>> save_checkpoint("run/epoch3.ckpt", model, opt, sched, epoch=3, step=1200, data=loader,
        ...                 global_batch=256)
    """
    if not isinstance(gather_rng, bool):
        raise TypeError(f"save_checkpoint: gather_rng must be a bool, got {gather_rng!r}")
    save_state(_collect(model, optimizer, scheduler, scaler, data, epoch, step, world_size, global_batch, extra,
                        _gathered_rng() if gather_rng else None), path)


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, map_location=None, restore_rng=True, *,
                    scaler=None, data=None):
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Args:
        path: file path or binary file object.
        model, optimizer, scheduler, scaler, data: objects with ``load_state_dict()``; each
            one given must have its state in the checkpoint. Loaded in that order (the model
            first, so an optimizer sees the restored parameters). ``data`` (a DataLoader or a
            sampler) may have another number of ranks than at save.
        map_location: where tensors go, as in :func:`dtrain.load` (default: the CPU).
        restore_rng: restore dtrain's CPU generator, NumPy's and Python's RNG states, and the
            CUDA generators' where a GPU is visible: this rank's own when the file holds every
            rank's and the world size is the one at save, else rank 0's (see the module).

    Returns:
        dict with ``"epoch"``, ``"step"``, ``"world_size"``, ``"global_batch"`` and
        ``"extra"`` as saved.

    Raises:
        CheckpointError: the file is unreadable (see :func:`dtrain.load`), is not a
            checkpoint, or lacks the state of an object passed in.

    Example:
        >>> info = load_checkpoint("run/epoch3.ckpt", model, opt, sched)
        >>> start_epoch = info["epoch"] + 1
    """
    return _restore(_load(path, map_location), path, (model, optimizer, scheduler, scaler, data), restore_rng)


def _restore(ckpt, path, objects, restore_rng):
    """Put a loaded checkpoint dict into the objects (in _STATES' order); returns
    load_checkpoint's dict."""
    for key, obj in zip(_STATES, objects):
        if obj is None:
            continue
        if ckpt[key] is None:
            raise CheckpointError(f"{file_name(path)}: the checkpoint has no {key} state "
                                  f"(it was saved with {key}=None); do not pass {key}= to load_checkpoint")
        if key == "optimizer" and _load_by_name(objects[0], obj, ckpt[key], path):
            continue
        obj.load_state_dict(ckpt[key])
    if restore_rng:
        rng = _rng_to_restore(ckpt, path)
        dtrain_random.set_rng_state(rng["dtrain"])
        numpy.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        _restore_cuda_rng(rng.get("cuda", []), path)
    return {key: ckpt[key] for key in _INFO}


def _rng_to_restore(ckpt, path):
    """This rank's RNG states in the checkpoint: its own entry of ``rng_ranks`` when the file
    holds every rank's and the world size is the one at save; else rank 0's ("rng"), with a
    warning on rank 0 when the file says its ranks' streams and the world size differs."""
    world, rank = _world_size(), _rank()
    per_rank = ckpt.get("rng_ranks")
    if per_rank is None and ckpt["world_size"] == 1:
        per_rank = [ckpt["rng"]]  # a single-process save: its one stream is the whole set
    if per_rank is not None and len(per_rank) == world:
        return per_rank[rank]
    if per_rank is not None and rank == 0:
        warnings.warn(f"{file_name(path)}: the checkpoint holds the RNG states of {len(per_rank)} rank(s), this job "
                      f"has {world}: every rank restored rank 0's, so per-rank random streams (seeded per rank, "
                      f"default-mode dropout) are not continued and their draws differ from an uninterrupted run; "
                      f"deterministic mode does not depend on them (its per-sample randomness comes from the shared "
                      f"default generator, drawn alike on every rank)", RuntimeWarning,
                      stacklevel=4)  # the caller of load_checkpoint or CheckpointManager.load
    return ckpt["rng"]


def _restore_cuda_rng(states, path):
    """The saved CUDA generator states into this process's devices (see the module for
    what a file without them, a CPU-only load and another number of GPUs do)."""
    count = dtrain_cuda.device_count()
    if count == 0 or not states:
        return
    if len(states) != count:
        kept = min(len(states), count)
        rest = f" ({_devices(kept, count)} keep their state)" if count > kept else ""
        warnings.warn(f"{file_name(path)}: the checkpoint holds the CUDA RNG states of {len(states)} device(s), "
                      f"this process sees {count}: restored {_devices(0, kept)}{rest}; random draws on a "
                      f"device without its saved state differ from an uninterrupted run", RuntimeWarning,
                      stacklevel=5)  # the caller of load_checkpoint or CheckpointManager.load
    dtrain_cuda.set_rng_state_all(states[:count])


def _devices(first, end):
    return f"cuda:{first}" if end - first == 1 else f"cuda:{first} to cuda:{end - 1}"


def split_global_batch(global_batch, world_size, max_per_rank=None):
    """The per-rank batch and gradient accumulation that keep ``global_batch`` on ``world_size``
    ranks: ``per_rank * accumulation * world_size == global_batch`` exactly, with
    ``per_rank <= max_per_rank`` (the rows one rank can hold in one forward) and as few
    accumulation steps as that allows.

    Args:
        global_batch: samples per optimizer step over all ranks (a positive int).
        world_size: the number of ranks now (a positive int).
        max_per_rank: the most rows per rank and forward (None: no limit).

    Returns:
        ``(per_rank, accumulation_steps)``.

    Raises:
        ValueError: ``global_batch`` is not a multiple of ``world_size``: the message names
            the world sizes that keep it and the global batches this world size can run
            (a different global batch changes the run).

    Example:
        >>> split_global_batch(16, 2, max_per_rank=4)   # a run of 4 ranks x 4 rows, resumed on 2
        (4, 2)
    """
    for name, value in (("global_batch", global_batch), ("world_size", world_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"split_global_batch: {name} must be a positive int, got {value!r}")
    if max_per_rank is not None and (not isinstance(max_per_rank, int) or isinstance(max_per_rank, bool)
                                     or max_per_rank < 1):
        raise ValueError(f"split_global_batch: max_per_rank must be a positive int or None, got {max_per_rank!r}")
    if global_batch % world_size:
        worlds = [w for w in range(1, global_batch + 1) if global_batch % w == 0]
        below, above = global_batch // world_size * world_size, -(-global_batch // world_size) * world_size
        others = " or ".join(str(b) for b in dict.fromkeys(b for b in (below, above) if b > 0))
        raise ValueError(f"the global batch {global_batch} cannot be kept on {world_size} ranks: it is not a "
                         f"multiple of {world_size}. Keep it with a number of ranks that divides it "
                         f"({', '.join(map(str, worlds))}), or start a new run with a global batch that "
                         f"{world_size} ranks divide ({others}; a different global batch changes the run)")
    rows = global_batch // world_size
    limit = rows if max_per_rank is None else min(rows, max_per_rank)
    # the fewest accumulation steps whose per-rank batch fits the limit (1 row always does)
    accumulation = next(a for a in range(1, rows + 1) if rows % a == 0 and rows // a <= limit)
    return rows // accumulation, accumulation


def _load_by_name(model, optimizer, state, path):
    """Load an optimizer state by parameter name when the model is under fully_shard or the
    state is keyed by name (a fully_shard run's): each rank takes its shards' slices of the
    whole tensors, at any world size. A state keyed by index (a plain or DDP run's) names its
    parameters by the optimizer's order. Returns False when the optimizer's own
    load_state_dict is the one to use."""
    named = any(isinstance(k, str) for group in state.get("param_groups", ()) for k in group.get("params", ()))
    if model is None or not (named or _fully_sharded(model)):
        if named:
            raise CheckpointError(f"{file_name(path)}: the optimizer state is keyed by parameter name (saved from "
                                  f"a fully_shard model): pass model= too, so that its parameters can be named")
        return False
    from .distributed.checkpoint import get_optimizer_state_dict, set_optimizer_state_dict
    if not named:  # by index: the k-th parameter over the groups is the k-th of this optimizer's
        order = [n for group in get_optimizer_state_dict(model, optimizer)["param_groups"] for n in group["params"]]
        if len(order) != sum(len(group["params"]) for group in state["param_groups"]):
            raise CheckpointError(f"{file_name(path)}: the optimizer state has "
                                  f"{sum(len(g['params']) for g in state['param_groups'])} parameters, the "
                                  f"optimizer {len(order)}")
        state = {"state": {order[k]: v for k, v in state["state"].items()},
                 "param_groups": [{**group, "params": [order[k] for k in group["params"]]}
                                  for group in state["param_groups"]]}
    # strict=False: a parameter without saved state starts fresh, as Optimizer.load_state_dict's
    set_optimizer_state_dict(model, optimizer, state, options=_full_options(strict=False))
    return True


def latest_checkpoint(directory, pattern="*.ckpt"):
    """The newest loadable checkpoint in ``directory``, or None if there is none.

    Files matching ``pattern`` are tried newest first (by modification time, then by
    name); one that is corrupted, truncated or not a checkpoint is skipped with a warning.
    Each candidate is read in full to verify its checksum. A missing directory gives None
    (nothing to resume from), so a fresh run and a resumed one can share the same code.

    Args:
        directory: str or os.PathLike.
        pattern: glob pattern of checkpoint file names, relative to ``directory``.

    Returns:
        The path (str) of the newest good checkpoint, or None.

    Example:
        >>> path = latest_checkpoint("run")
        >>> info = load_checkpoint(path, model, opt) if path else None
    """
    paths = [p for p in glob.glob(os.path.join(glob.escape(os.fspath(directory)), pattern)) if os.path.isfile(p)]
    paths.sort(key=lambda p: (os.stat(p).st_mtime_ns, p), reverse=True)
    for p in paths:
        try:
            _load(p, None)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {p}: {e}", RuntimeWarning, stacklevel=2)
            continue
        return p
    return None


def _load(path, map_location):
    """The checkpoint dict in ``path``, checked to have what save_checkpoint writes (every key;
    states that are dicts or None; RNG states that restore): CheckpointError if it has not."""
    ckpt = load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or _MARKER not in ckpt:
        raise CheckpointError(f"{file_name(path)}: not a checkpoint written by save_checkpoint "
                              "(a plain dtrain.save file? load it with dtrain.load)")
    if type(ckpt[_MARKER]) is not int or ckpt[_MARKER] not in (1, _VERSION):  # not an array: `in` must give a bool
        raise CheckpointError(f"{file_name(path)}: unknown checkpoint version {reprlib.repr(ckpt[_MARKER])}: "
                              f"this dtrain reads versions 1 to {_VERSION} (was it written by a newer dtrain?)")
    if ckpt[_MARKER] == 1:
        ckpt = {**dict.fromkeys(_NEW_IN_2), **ckpt}
    problem = _malformed(ckpt)
    if problem is not None:
        raise CheckpointError(f"{file_name(path)}: file is corrupted: {problem}")
    return ckpt


# each RNG state is tried on a scratch generator of its kind: what that one takes, restoring takes
_RNG_KINDS = {"dtrain": lambda state: dtrain_random.Generator("cpu").set_state(state),
              "numpy": lambda state: numpy.random.RandomState().set_state(state),
              "python": lambda state: random.Random().setstate(state),
              # checked without a device (the file may come from a machine with GPUs): what
              # dtrain.cuda.set_rng_state takes
              "cuda": lambda states: [check_generator_state(s) for s in _as_list(states)]}
_RNG_OPTIONAL = ("cuda",)  # absent from files written before it was saved


def _as_list(states):
    if not isinstance(states, (list, tuple)):
        raise TypeError(f"the CUDA RNG states are {type(states).__name__}, not a list (one per device)")
    return states


def _malformed(ckpt):
    """What makes a loaded checkpoint dict other than save_checkpoint writes it, or None."""
    missing = sorted({*_STATES, *_INFO, "rng"} - set(ckpt))
    if missing:
        return f"the checkpoint lacks {missing}"
    for key in _STATES:
        if ckpt[key] is not None and not isinstance(ckpt[key], dict):
            return f"the {key} state is {type(ckpt[key]).__name__} {reprlib.repr(ckpt[key])}, not a dict or None"
    for key in ("world_size", "global_batch"):
        if ckpt[key] is not None and (type(ckpt[key]) is not int or ckpt[key] < 1):
            return f"the {key} is {reprlib.repr(ckpt[key])}, not a positive int or None"
    problem = _malformed_rng(ckpt["rng"], "")
    if problem is not None or "rng_ranks" not in ckpt:  # absent from single-process saves and older files
        return problem
    per_rank = ckpt["rng_ranks"]
    if not isinstance(per_rank, list) or not per_rank:
        return f"the per-rank RNG states (rng_ranks) are {reprlib.repr(per_rank)}, not a list of one dict per rank"
    for rank, rng in enumerate(per_rank):
        problem = _malformed_rng(rng, f" of rank {rank} (rng_ranks[{rank}])")
        if problem is not None:
            return problem
    return None


def _malformed_rng(rng, whose):
    """What makes one "rng" dict (``whose``: which one, for the message) other than _rng_state
    gives, or None."""
    required = set(_RNG_KINDS) - set(_RNG_OPTIONAL)
    if not isinstance(rng, dict) or not required <= set(rng) <= set(_RNG_KINDS):
        return (f"the RNG states{whose} are {reprlib.repr(rng)}, not a dict with the keys {sorted(required)} "
                f"(and optionally {list(_RNG_OPTIONAL)})")
    for kind, restore in _RNG_KINDS.items():
        if kind not in rng:
            continue
        try:
            restore(rng[kind])
        except Exception as e:  # a generator refuses a bad state in many ways (TypeError, ValueError, KeyError, ...)
            return f"the {kind} RNG state{whose} {reprlib.repr(rng[kind])} does not restore ({type(e).__name__}: {e})"
    return None


class CheckpointManager:
    """A series of checkpoints ``<prefix>-<step>.ckpt`` in one directory: save, prune, resume.

    * :meth:`save` writes ``<prefix>-<step>.ckpt`` atomically (see :func:`dtrain.save`),
      and only then deletes the older ones beyond the newest ``keep_last``, so a crash at
      any moment leaves at least the previous checkpoint intact. It also removes the
      temporary files a killed save left behind.
    * :meth:`load` with ``resume="auto"`` loads the newest checkpoint (by step) that reads
      back intact, skipping with a warning (naming the file and the reason) every one that
      raises CheckpointError: truncated, corrupted, or crafted; with no checkpoint at all
      it returns None, so a fresh run and a restarted one share the same command.
    * Under a process group of more than one rank (``dtrain.comm``), every rank calls
      :meth:`save` and :meth:`load` together. Every rank takes the objects' state (so a
      ZeroRedundancyOptimizer's ``consolidate_state_dict``, a collective, is called on
      every rank first, and a sharded state reshards at load on any world size); only
      rank 0 writes (the directory must be
      shared by the ranks that load); it then broadcasts the path and checksum of what it
      wrote, so no rank goes on before the checkpoint is on disk, and all ranks learn the
      same result (an error on rank 0 is raised on every rank). On load, rank 0 picks the
      checkpoint and broadcasts its choice; every rank loads that file and the ranks check
      they read the same content (same stored SHA-256) before any state is restored.
      Every rank's RNG states are saved and, on as many ranks, each rank gets its own back
      (on another world size, rank 0's: see the module).

    Args:
        directory: where the checkpoints go (created if missing).
        keep_last: how many checkpoints to keep (an int >= 1), or None to keep all.
        prefix: the file name prefix (no path separator).

    Example:
        >>> manager = CheckpointManager("runs/exp1", keep_last=3)
        >>> info = manager.load(model, opt, sched, resume="auto")   # None on a fresh start
        >>> start = 0 if info is None else info["step"] + 1
        >>> for step in range(start, steps):
        ...     train_step()
        ...     if step % 100 == 99:
        ...         manager.save(step, model, opt, sched)
    """

    def __init__(self, directory, keep_last=3, prefix="ckpt"):
        if keep_last is not None and (not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1):
            raise ValueError(f"CheckpointManager: keep_last must be an int >= 1 or None (keep all), got {keep_last!r}")
        if not isinstance(prefix, str) or not prefix or os.sep in prefix or (os.altsep and os.altsep in prefix):
            raise ValueError(f"CheckpointManager: prefix must be a non-empty file name part without a path "
                             f"separator, got {prefix!r}")
        self.directory = os.fspath(directory)
        self.keep_last, self.prefix = keep_last, prefix
        self._name = re.compile(rf"{re.escape(prefix)}-(\d+)\.ckpt")
        self._temp = re.compile(rf"\.{re.escape(prefix)}-\d+\.ckpt\.[0-9a-f]+\.tmp")  # serialization's temp names

    def path(self, step):
        """The file of the checkpoint of ``step``: ``<directory>/<prefix>-<step>.ckpt``."""
        return os.path.join(self.directory, f"{self.prefix}-{step}.ckpt")

    def checkpoints(self):
        """``[(step, path), ...]`` of the files of this series, oldest step first (not verified)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            m = self._name.fullmatch(name)
            if m and os.path.isfile(os.path.join(self.directory, name)):
                found.append((int(m.group(1)), os.path.join(self.directory, name)))
        return sorted(found)

    def save(self, step, model=None, optimizer=None, scheduler=None, epoch=None, extra=None, *, scaler=None,
             data=None, global_batch=None):
        """Write the checkpoint of ``step`` (every rank calls it; rank 0 writes), then prune.

        Args:
            step: int >= 0, the training step (or any increasing counter) the state is at.
            model, optimizer, scheduler, epoch, extra, scaler, data, global_batch: as
                :func:`save_checkpoint` (the world size is the process group's).

        Returns:
            the path written (the same string on every rank).

        Raises:
            CheckpointError: rank 0 failed to write (on the other ranks, naming rank 0's error).
        """
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"CheckpointManager.save: step must be an int >= 0, got {step!r}")
        consolidate = getattr(optimizer, "consolidate_state_dict", None)
        if consolidate is not None:  # a ZeroRedundancyOptimizer: its full state, gathered on rank 0 (collective)
            consolidate(to=0)
        # before the try: a collective every rank must reach, whatever its state_dict does
        rng_ranks = _gathered_rng()
        # taken on every rank: a state_dict may be a collective (fully_shard's model gathers
        # its shards); rank 0's error goes to every rank through _on_rank0, as a write error does
        try:
            ckpt, failure = _collect(model, optimizer if _rank() == 0 or consolidate is None else None, scheduler,
                                     scaler, data, epoch, step, None, global_batch, extra, rng_ranks), None
        except Exception as e:
            ckpt, failure = None, e

        def write():
            if failure is not None:
                raise failure
            os.makedirs(self.directory, exist_ok=True)
            path = self.path(step)
            save_state(ckpt, path)
            self._prune(step)
            return path, stored_checksum(path)

        path = _on_rank0(write, f"save checkpoint {self.path(step)}")[0]
        if failure is not None:  # another rank's state failed: rank 0 wrote its own, this rank says so
            raise failure
        return path

    def _prune(self, step):
        older = [p for s, p in self.checkpoints() if s < step]
        # files of later steps (a run resumed from an earlier checkpoint) are left alone
        doomed = [] if self.keep_last is None else older[:max(0, len(older) - (self.keep_last - 1))]
        doomed += [os.path.join(self.directory, n) for n in os.listdir(self.directory) if self._temp.fullmatch(n)]
        for p in doomed:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def latest(self):
        """The path of the newest checkpoint that loads intact, or None (broken ones are
        skipped with a warning). Under several ranks, rank 0 decides for all."""
        return _on_rank0(lambda: self._newest(None)[0], "find the latest checkpoint")

    def _newest(self, map_location):
        for _, path in reversed(self.checkpoints()):
            try:
                return path, _load(path, map_location)
            except CheckpointError as e:
                warnings.warn(f"skipping checkpoint {path}: {e}", RuntimeWarning, stacklevel=2)
        return None, None

    def load(self, model=None, optimizer=None, scheduler=None, resume="auto", map_location=None, restore_rng=True,
             *, scaler=None, data=None):
        """Restore the state from a checkpoint of this series (every rank calls it), saved at
        this or another world size (compare the returned ``world_size`` with the job's, and see
        :func:`split_global_batch`).

        Args:
            model, optimizer, scheduler, map_location, restore_rng, scaler, data: as
                :func:`load_checkpoint`.
            resume: ``"auto"``: the newest intact checkpoint (None if there is none);
                a path: that file (an error if it is broken); None: load nothing.

        Returns:
            None if nothing was loaded, else :func:`load_checkpoint`'s dict plus ``"path"``.

        Raises:
            CheckpointError: an explicit ``resume`` path is broken, the objects do not match
                the checkpoint, or the ranks read different content from the chosen file.
        """
        if resume is None:
            return None
        loaded = {}

        def choose():
            if resume == "auto":
                path, loaded["ckpt"] = self._newest(map_location)
            else:
                path, loaded["ckpt"] = os.fspath(resume), _load(resume, map_location)
            return path, None if path is None else stored_checksum(path)

        path, digest = _on_rank0(choose, "choose the checkpoint to resume from")
        if path is None:
            return None
        ckpt = loaded.get("ckpt")
        if ckpt is None:  # not rank 0: read the file rank 0 chose, and check it is the same content
            ckpt = _agreed_load(path, digest, map_location)
        elif _distributed():
            _agreed_load(path, digest, map_location, ckpt)
        info = _restore(ckpt, path, (model, optimizer, scheduler, scaler, data), restore_rng)
        info["path"] = path
        return info


def _distributed():
    from . import comm
    return comm.is_initialized() and comm.get_world_size() > 1


def _rank():
    from . import comm
    return comm.get_rank() if comm.is_initialized() else 0


def _on_rank0(fn, what):
    """Run ``fn`` on rank 0 only and give its result (picklable) to every rank; one
    process alone just runs it. An exception on rank 0 is raised on every rank."""
    if not _distributed():
        return fn()
    from . import comm
    box, error = [None], None
    if comm.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # every rank must hear about it, or the others wait forever
            error = e
            box[0] = ("error", f"{type(e).__name__}: {e}")
    comm.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "ok":
        return value
    if error is not None:
        raise error
    raise CheckpointError(f"rank 0 failed to {what}: {value}")


def _agreed_load(path, digest, map_location, ckpt=None):
    """Load ``path`` on a rank other than 0 (rank 0 passes its ``ckpt``) and check with all
    ranks that each read the content rank 0 chose; raises the same error on every rank."""
    from . import comm
    problem = None
    if ckpt is None:
        try:
            ckpt = _load(path, map_location)
            mine = stored_checksum(path)
            if mine != digest:
                problem = f"read checksum {mine}, rank 0 read {digest} (is the directory shared by all ranks?)"
        except (CheckpointError, OSError) as e:
            problem = f"{type(e).__name__}: {e}"
    problems = [None] * comm.get_world_size()
    comm.all_gather_object(problems, problem)
    bad = {rank: p for rank, p in enumerate(problems) if p is not None}
    if bad:
        detail = "; ".join(f"rank {rank}: {p}" for rank, p in bad.items())
        raise CheckpointError(f"ranks {sorted(bad)} could not load {path}, which rank 0 chose: {detail}")
    return ckpt
