"""Training checkpoints: model, optimizer and scheduler state, epoch/step and every RNG.

A checkpoint is one :func:`dtrain.serialization.save` file (safe, checksummed, written
atomically) holding a dict::

    {"dtrain_checkpoint": 1, "model": ..., "optimizer": ..., "scheduler": ...,
     "epoch": ..., "step": ..., "extra": ..., "rng": {"dtrain": ..., "numpy": ..., "python": ...}}

The RNG states are dtrain's CPU generator, NumPy's global RandomState and Python's
``random`` module, stored as numbers and arrays (no pickle), so that a resumed run draws
the same random numbers as an uninterrupted one. CUDA generators are not saved.
"""
import glob
import os
import random
import warnings

import numpy

from .serialization import CheckpointError, file_name, load, save
from .tensor import random as dtrain_random

_MARKER = "dtrain_checkpoint"
_VERSION = 1


def save_checkpoint(path, model=None, optimizer=None, scheduler=None, epoch=None, step=None, extra=None):
    """Save a training checkpoint to ``path`` (atomically: a crash never leaves a half file).

    Args:
        path: file path (str or os.PathLike) or a binary file object.
        model, optimizer, scheduler: objects with ``state_dict()`` (a Module, an Optimizer,
            an LR scheduler, or anything alike), or None to leave that part out.
        epoch, step: int or None.
        extra: any value :func:`dtrain.save` accepts (e.g. a dict of metrics), or None.

    Example:
        >>> save_checkpoint("run/epoch3.ckpt", model, opt, sched, epoch=3, step=1200)
    """
    save({
        _MARKER: _VERSION,
        "model": None if model is None else model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": epoch,
        "step": step,
        "extra": extra,
        "rng": {"dtrain": dtrain_random.get_rng_state(),
                "numpy": numpy.random.get_state(),
                "python": random.getstate()},
    }, path)


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, map_location=None, restore_rng=True):
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Args:
        path: file path or binary file object.
        model, optimizer, scheduler: objects with ``load_state_dict()``; each one given
            must have its state in the checkpoint. Loaded in that order (the model first,
            so an optimizer sees the restored parameters).
        map_location: where tensors go, as in :func:`dtrain.load` (default: the CPU).
        restore_rng: restore dtrain's CPU generator, NumPy's and Python's RNG states.

    Returns:
        dict with ``"epoch"``, ``"step"`` and ``"extra"`` as saved.

    Raises:
        CheckpointError: the file is unreadable (see :func:`dtrain.load`), is not a
            checkpoint, or lacks the state of an object passed in.

    Example:
        >>> info = load_checkpoint("run/epoch3.ckpt", model, opt, sched)
        >>> start_epoch = info["epoch"] + 1
    """
    ckpt = _load(path, map_location)
    for key, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if ckpt[key] is None:
            raise CheckpointError(f"{file_name(path)}: the checkpoint has no {key} state "
                                  f"(it was saved with {key}=None); do not pass {key}= to load_checkpoint")
        obj.load_state_dict(ckpt[key])
    if restore_rng:
        rng = ckpt["rng"]
        dtrain_random.set_rng_state(rng["dtrain"])
        numpy.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    return {"epoch": ckpt["epoch"], "step": ckpt["step"], "extra": ckpt["extra"]}


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
    ckpt = load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or _MARKER not in ckpt:
        raise CheckpointError(f"{file_name(path)}: not a checkpoint written by save_checkpoint "
                              "(a plain dtrain.save file? load it with dtrain.load)")
    if ckpt[_MARKER] != _VERSION:
        raise CheckpointError(f"{file_name(path)}: unknown checkpoint version {ckpt[_MARKER]!r}: this dtrain "
                              f"reads version {_VERSION} (was it written by a newer dtrain?)")
    return ckpt
