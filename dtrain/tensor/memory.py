"""``dtrain.tensor.memory``: bytes of tensor storage alive, and their peak, on any device (the CPU
counterpart of ``dtrain.cuda.memory_allocated`` / ``max_memory_allocated``).

Tracking is opt-in and costs nothing while off (one ``is None`` test per Tensor made). While it
is on, every array a Tensor wraps is counted once by its base array (views share their base's
bytes: a view, a reshape or ``.data`` adds nothing), together with the arrays a recorded
Function keeps for its backward (a dropout mask, a saved normalisation), until the base array is
freed. Not counted: arrays that no Tensor wraps and no Function keeps (temporaries inside one
op, the backward walk's gradients before they reach a ``.grad``), arrays made before tracking
began unless passed to ``enable``/``track`` (e.g. ``model.parameters()``), and Python objects.

Example:
    >>> from dtrain.tensor import memory
    >>> with memory.track(model.parameters()):
    ...     model(x).sum().backward()
    >>> memory.max_memory_allocated()      # peak bytes: parameters, activations, gradients
"""
import contextlib
import sys
import threading
import weakref

import numpy

from . import backend
from .tensor import Tensor

_tensor_module = sys.modules[Tensor.__module__]  # the package's name ``tensor`` is the creation function

_lock = threading.RLock()  # a finalizer may run (an array freed) while this thread holds it
_live = {}                 # id(base array) -> (bytes, device, finalizer)
_stats = {}                # device -> [bytes allocated, peak]


def enable(tensors=()):
    """Start counting, from zero, the bytes of the arrays Tensors wrap from now on, plus those
    of ``tensors`` (Tensors that exist already, e.g. a model's parameters and buffers).

    Raises RuntimeError if tracking is already on (tracking does not nest)."""
    if _tensor_module.memory_hook is not None:
        raise RuntimeError("dtrain.tensor.memory: tracking is already on (call disable() first; it does not nest)")
    with _lock:
        _live.clear()
        _stats.clear()
        for t in tensors:
            _count(t.array)
        _tensor_module.memory_hook = _register


def disable():
    """Stop counting; the figures stay as they were at this moment until the next ``enable``."""
    _tensor_module.memory_hook = None
    with _lock:
        for _, _, finalizer in _live.values():
            finalizer.detach()
        _live.clear()


def is_enabled():
    """True while tracking is on."""
    return _tensor_module.memory_hook is not None


@contextlib.contextmanager
def track(tensors=()):
    """Track inside a ``with`` block (``enable(tensors)`` on entry, ``disable()`` on exit).

    Example:
        >>> with memory.track():
        ...     x = dtrain.zeros(1000, dtype=dtrain.float64)
        ...     memory.memory_allocated()
        8000
    """
    enable(tensors)
    try:
        yield
    finally:
        disable()


def memory_allocated(device="cpu"):
    """Bytes of tracked tensor storage alive on ``device`` (a Device or its name, e.g. "cuda:0")."""
    return _stats.get(_key(device), [0, 0])[0]


def max_memory_allocated(device="cpu"):
    """The peak of ``memory_allocated(device)`` since tracking began or the last reset."""
    return _stats.get(_key(device), [0, 0])[1]


def reset_peak_memory_stats(device="cpu"):
    """Restart the peak on ``device`` from the bytes alive now."""
    with _lock:
        stats = _stats.get(_key(device))
        if stats is not None:
            stats[1] = stats[0]


def storage_resized(array, nbytes):
    """Count ``nbytes`` for the storage (base array) of ``array`` from now on, as PyTorch's
    ``untyped_storage().resize_()`` changes what the allocator holds: fully_shard releases the
    pages of a gathered parameter buffer that the autograd graph still views, and fills them
    again before backward reads them. Nothing happens if that storage is not tracked."""
    types = _array_types()
    base = array
    while isinstance(base.base, types):
        base = base.base
    with _lock:
        entry = _live.get(id(base))
        if entry is None:
            return
        stats = _stats[entry[1]]
        stats[0] += nbytes - entry[0]
        stats[1] = max(stats[1], stats[0])
        _live[id(base)] = (nbytes, entry[1], entry[2])


def _key(device):
    return str(backend.resolve(backend.Device(device)))


def _array_types():
    return (numpy.ndarray,) if backend.cupy is None else (numpy.ndarray, backend.cupy.ndarray)


def _register(array, grad_fn):
    """Tensor's hook: count ``array`` and the arrays ``grad_fn`` saved for its backward."""
    _count(array)
    if grad_fn is not None:
        types = _array_types()
        for saved in grad_fn.__dict__.values():
            if isinstance(saved, types):
                _count(saved)


def _count(array):
    types = _array_types()
    if not isinstance(array, types):
        return
    base = array
    while isinstance(base.base, types):
        base = base.base
    key = id(base)
    if key in _live:
        return
    with _lock:
        if key in _live:
            return
        device = str(backend.device_of(base))
        try:
            finalizer = weakref.finalize(base, _release, key)
        except TypeError as e:
            raise TypeError(f"dtrain.tensor.memory: cannot track a {type(base).__name__} (it takes no weak "
                            f"reference); on CUDA use dtrain.cuda.memory_allocated") from e
        _live[key] = (base.nbytes, device, finalizer)
        stats = _stats.setdefault(device, [0, 0])
        stats[0] += base.nbytes
        stats[1] = max(stats[1], stats[0])


def _release(key):
    with _lock:
        entry = _live.pop(key, None)
        if entry is not None:
            _stats[entry[1]][0] -= entry[0]
