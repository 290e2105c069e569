"""Deterministic mode's switch, and the per-sample random streams it gives dropout.

``use_deterministic_algorithms(True)`` (PyTorch's name; also ``DTRAIN_DETERMINISTIC=1`` in
the environment at import) asks for results that do not depend on the world size: with it,
``DistributedDataParallel(..., micro_shard_size=m)`` computes fixed micro-shards and sums them
in a fixed order (see :mod:`dtrain.parallel.micro_shards`), SyncBatchNorm normalizes each
micro-shard alone, and
dropout draws each sample's mask from a stream of its own (below) instead of one stream per
rank. See docs/reproducibility.md.

Per-sample streams. A rank's stream would give sample i of the global batch another mask at
each world size (at 2 ranks, rank 1's first row is the global batch's row B/2). Inside
:func:`per_sample_random`, which DDP enters around each micro-shard's forward, row r of a
dropout input draws its mask from Philox, a counter-based generator, keyed by ``(stream,
sample_ids[r], call)``: ``stream`` names the step (DDP draws it from the seeded default
generator, so a checkpoint's RNG state restores it), ``sample_ids[r]`` the row's position
in the global batch, and ``call`` counts the draws since the scope opened (the k-th dropout
of one micro-shard's forward is the k-th at every world size).
"""
import contextlib
import os
import threading

import numpy

from . import backend
from .random import philox_generator
from .replay import replayable

_mode = {"enabled": os.environ.get("DTRAIN_DETERMINISTIC", "0") not in ("", "0"), "warn_only": False}
_local = threading.local()  # .scope: the innermost per-sample scope of this thread, or None


def use_deterministic_algorithms(mode, *, warn_only=False):
    """Turn deterministic mode on or off, as ``torch.use_deterministic_algorithms``.

    dtrain's kernels are deterministic already (NumPy/CuPy, no atomics, no algorithm chosen
    by timing); what the mode adds is independence from the world size: exact gradient sums
    over fixed micro-shards (``DistributedDataParallel(..., micro_shard_size=m)``), per
    micro-shard batch statistics and per-sample dropout masks. ``DTRAIN_DETERMINISTIC=1``
    turns it on at import.

    Args:
        mode: True or False.
        warn_only: accepted as PyTorch's (no dtrain op is refused in deterministic mode, so
            there is nothing to turn into a warning); must be a bool.

    Example:
        >>> dtrain.use_deterministic_algorithms(True)
        >>> dtrain.are_deterministic_algorithms_enabled()
        True
    """
    if not isinstance(mode, bool):
        raise TypeError(f"use_deterministic_algorithms expects a bool for mode, got {type(mode).__name__}")
    if not isinstance(warn_only, bool):
        raise TypeError(f"use_deterministic_algorithms expects a bool for warn_only, got {type(warn_only).__name__}")
    _mode["enabled"], _mode["warn_only"] = mode, warn_only


def are_deterministic_algorithms_enabled():
    """Whether deterministic mode is on (``use_deterministic_algorithms`` or DTRAIN_DETERMINISTIC)."""
    return _mode["enabled"]


def is_deterministic_algorithms_warn_only_enabled():
    """The ``warn_only`` given to the last ``use_deterministic_algorithms`` call."""
    return _mode["warn_only"]


class _Scope:
    def __init__(self, sample_ids, stream):
        self.sample_ids, self.stream, self.calls = sample_ids, stream, 0


@contextlib.contextmanager
def per_sample_random(sample_ids, stream):
    """In deterministic mode, draw dropout masks per sample inside the block.

    Args:
        sample_ids: one non-negative integer per row (dim 0) of the batch the block runs
            on: each row's identity, the same at every world size (its position in the
            global batch, or its dataset index).
        stream: a non-negative integer naming the step (or epoch), so the masks change
            from step to step.

    A dropout whose input has ``len(sample_ids)`` rows takes row r's mask from Philox keyed
    by ``(stream, sample_ids[r], k)`` for the k-th draw in the block; other inputs, and any
    draw outside deterministic mode, use the default generator as usual.

    Example:
        >>> with per_sample_random(numpy.arange(8, 12), stream=3):   # rows 8..11 of step 3
        ...     y = F.dropout(x, 0.1)
    """
    ids = numpy.asarray(sample_ids, dtype=numpy.int64).reshape(-1)
    if ids.size and ids.min() < 0:
        raise ValueError(f"per_sample_random: sample_ids must be >= 0, got {int(ids.min())}")
    if int(stream) < 0:
        raise ValueError(f"per_sample_random: stream must be >= 0, got {stream}")
    outer = getattr(_local, "scope", None)
    scope = _local.scope = _Scope(ids, int(stream))
    try:
        with replayable(lambda: _reopened(scope.sample_ids, scope.stream, scope.calls)):
            yield
    finally:
        _local.scope = outer


@contextlib.contextmanager
def _reopened(ids, stream, calls):
    """The scope (ids, stream) again, at draw ``calls``: what a checkpointed block's
    recomputation runs in, so it redraws the masks of the forward (see :mod:`.replay`)."""
    outer = getattr(_local, "scope", None)
    _local.scope = _Scope(ids, stream)
    _local.scope.calls = calls
    try:
        yield
    finally:
        _local.scope = outer


def in_per_sample_scope():
    """Whether a :func:`per_sample_random` block is open in this thread (DDP opens one around
    each micro-shard's forward, in either mode: SyncBatchNorm then normalizes the micro-shard alone)."""
    return getattr(_local, "scope", None) is not None


def per_sample_uniform(shape, dtype, device):
    """Uniform [0, 1) values of ``shape`` drawn row by row from the open per-sample scope,
    or None when there is none (deterministic mode off, no scope, or ``shape[0]`` is not
    the scope's row count: the caller then draws from its generator)."""
    scope = getattr(_local, "scope", None)
    if not _mode["enabled"] or scope is None or not shape or shape[0] != scope.sample_ids.size:
        return None
    call = scope.calls
    scope.calls += 1
    # drawn in float32 (float64 for float64 inputs) on the host, whatever the device: the
    # masks are then the same bits on a CPU and a GPU; float16 has no generator of its own
    draw = numpy.float64 if numpy.dtype(dtype) == numpy.float64 else numpy.float32
    rows = [philox_generator(_key(scope.stream, int(i), call)).random(tuple(shape[1:]), dtype=draw)
            for i in scope.sample_ids]
    host = numpy.stack(rows) if rows else numpy.empty(tuple(shape), draw)
    return host if device.type == "cpu" else backend.to_device(host, device)


def _key(stream, sample, call):
    """Philox's 128-bit key for one (stream, sample, call): the stream in the first 64-bit
    word, the sample (44 bits) and the call (20 bits) packed in the second."""
    return [stream & ((1 << 64) - 1), ((sample & ((1 << 44) - 1)) << 20) | (call & ((1 << 20) - 1))]
