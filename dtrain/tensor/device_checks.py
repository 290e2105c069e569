"""Value checks of ops' arguments (indices, probabilities) on a GPU, without a host
synchronisation per op.

On NumPy arrays an op checks its arguments at once (free: the values are on the host). On a
GPU, reading a check's answer would stall the host until the device has caught up, several
times per training step; so the ops compute the check on the device, :func:`defer` keeps
its answer (a small device array), and the next time the program reads a value to the host
(``.item()``, ``.tolist()``, printing, ``.cpu()``, ``dtrain.cuda.synchronize()``) the kept
answers are read with it: the first failed check raises its error there, naming the op and
the bad value, as PyTorch's device-side asserts surface at the next synchronisation.
Until then the op's result is wrong (CuPy wraps an out-of-range index around: memory stays
safe), but never used silently: the error comes at the first look at any value. Checks are
kept one per op and device (a repeated check keeps its first failure), so a loop that never
reads a value does not grow them.
With ``CUDA_LAUNCH_BLOCKING=1`` (PyTorch's switch for finding the failing op) each check is
read at once and raises in its op.
"""
import os
import threading

import numpy

from . import dtypes

_lock = threading.Lock()
_pending = {}  # (key, device id) -> (xp, state, make_error)


def _blocking():
    return os.environ.get("CUDA_LAUNCH_BLOCKING", "") == "1"


def defer(xp, bad, values, key, make_error):
    """Keep a device-side check until the next host read.

    Args:
        xp: the array module of the check's arrays (CuPy).
        bad: a 0-d device array, true where the check failed.
        values: 0-d device arrays that ``make_error`` needs for its message (given to it as
            Python ints, or floats if any of them is floating).
        key: names the check (with everything ``make_error`` depends on besides ``values``);
            a check repeated before the next host read keeps its first failure.
        make_error: ``make_error(*values)`` -> the exception to raise.

    Example:
        >>> defer(cupy, (idx.min() < 0) | (idx.max() >= n), [idx.min(), idx.max()], ("embedding", n),
        ...       lambda lo, hi: IndexError(f"embedding: values in [{lo}, {hi}]"))
    """
    dtype = xp.float64 if any(dtypes.is_floating(v.dtype) for v in values) else xp.int64
    state = xp.stack([bad.astype(dtype)] + [v.astype(dtype, copy=False) for v in values])
    if xp is numpy or _blocking():  # a NumPy state costs nothing to read
        _raise_failed([(xp, state, make_error)], at_op=True)
        return
    slot = (key, state.device.id)
    with _lock:
        old = _pending.get(slot)
        if old is not None:
            state = xp.where(old[1][0] != 0, old[1], state)
        _pending[slot] = (xp, state, make_error)


def check_range(array, low, high, key, make_error):
    """Raise ``make_error(min, max)`` unless ``low <= array < high`` (``array``: non-empty,
    integer): at once for a NumPy array; for a CuPy array, checked on the device and raised
    at the next host synchronisation (:func:`defer`)."""
    if isinstance(array, numpy.ndarray):
        lo, hi = int(array.min()), int(array.max())
        if lo < low or hi >= high:
            raise make_error(lo, hi)
        return
    from .backend import get_array_module  # backend imports this module
    range_check(get_array_module(array), [(array, low, high)], key, make_error)


def range_check(xp, arrays, key, make_error):
    """Device arrays only: :func:`defer` the check ``low <= a.min()`` and ``a.max() < high`` for each ``(a, low, high)``
    of ``arrays`` (non-empty integer device arrays); ``make_error(lo0, hi0, lo1, hi1, ...)``."""
    bad, values = None, []
    for a, low, high in arrays:
        lo, hi = a.min(), a.max()
        out = (lo < low) | (hi >= high)
        bad = out if bad is None else bad | out
        values += [lo, hi]
    defer(xp, bad, values, key, make_error)


def raise_pending():
    """Read the kept checks (one small copy per device) and raise the first failed one's error;
    called where a value goes to the host. A no-op when nothing is kept."""
    if not _pending:
        return
    with _lock:
        kept = list(_pending.values())
        _pending.clear()
    _raise_failed(kept, at_op=False)


def _raise_failed(kept, at_op):
    by_device = {}
    for xp, state, make_error in kept:
        by_device.setdefault(None if xp is numpy else state.device.id, []).append((xp, state, make_error))
    for device, checks in by_device.items():
        xp = checks[0][0]
        if device is None:
            flat = xp.concatenate([s for _, s, _ in checks]).tolist()
        else:
            with checks[0][1].device:  # one copy to the host for all of this device's checks
                flat = xp.concatenate([s for _, s, _ in checks]).get().tolist()
        start = 0
        for _, state, make_error in checks:
            values = flat[start:start + state.size]
            start += state.size
            if values[0]:
                error = make_error(*(int(v) if state.dtype.kind == "i" else v for v in values[1:]))
                where = "" if at_op else (f" (found on cuda:{device} at the next host synchronisation after "
                                          f"the op; run with CUDA_LAUNCH_BLOCKING=1 to raise it in the op)")
                raise type(error)(f"{error}{where}")
