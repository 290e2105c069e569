"""The CPU buffer pool: uninitialized arrays for ops' large results, gradients and scratch
(im2col columns), reused across calls instead of allocated fresh. A fresh multi-MB NumPy
array costs a page fault per 4 KiB on its first touch: ~8% of the reference CNN step for its
im2col buffers alone, and ~6,000 faults (25 MB of fresh pages, ~7% of its time) for its
convolution outputs, ReLUs and pool gradients (benchmarks/RESULTS.md, Session 6); Linear's
weight gradients made deterministic mode's micro-shard sums fault ~1,800 times per MLP step.
CuPy's memory pool already reuses device memory, so on a GPU these are plain ``xp.empty``.

A buffer is handed out again only once nothing else holds it (no array, view or tensor):
the pool reads each buffer's reference count, which is the pool's own list entry alone when
every result, view, saved-for-backward array and ``.grad`` made from it has died. So results
kept by the caller never change under later calls, and a training loop reuses last step's
buffers. Free buffers are kept up to POOL_SIZE in all; held ones stay listed (a GPT step
holds ~40 of its activations at once until backward frees them; the next step then reuses
every one of them).

``output`` pools arrays larger than OUTPUT_BYTES (1 MiB). Smaller ones malloc mostly serves
from memory it kept (the MLP step's 1 MiB ReLU arrays fault no pages): pooling them measured
no gain. (benchmarks/output_pool.py is the A/B: it raises OUTPUT_BYTES out of reach.)
"""
import math
import sys
import threading

from ..backend import CPU, get_array_module, is_cuda_array, module_for

POOL_SIZE = 64  # free buffers kept, in all (held ones are listed beyond it)
OUTPUT_BYTES = 1 << 20  # output pools arrays larger than this (read at each call: a benchmark patches it)


def _refcount(pool, i):
    return sys.getrefcount(pool[i])


_POOL, _POOL_LOCK = {}, threading.Lock()  # (shape, dtype) -> buffers, held or free
_UNHELD_REFCOUNT = _refcount([object()], 0)  # what a buffer held by the pool alone shows (interpreters differ)
_NUMPY = module_for(CPU)


def pooled():
    """Every buffer in the pool (held or free), for tests."""
    with _POOL_LOCK:
        return [b for bufs in _POOL.values() for b in bufs]


def _evict_one_free(keep):
    """Drops one free buffer other than ``keep`` from the pool (with _POOL_LOCK held)."""
    for key, bufs in _POOL.items():
        for i in range(len(bufs)):
            if bufs[i] is not keep and _refcount(bufs, i) == _UNHELD_REFCOUNT:
                del bufs[i]
                if not bufs:
                    del _POOL[key]
                return


def workspace(like, shape, dtype=None):
    """An uninitialized array of ``shape`` with like's dtype (or ``dtype``) and device. On the
    CPU it reuses a buffer of an earlier call that nothing holds any more (no array, view or
    tensor); on a GPU it is a plain ``xp.empty`` (CuPy's memory pool already reuses memory)."""
    xp = get_array_module(like)
    dtype = like.dtype if dtype is None else xp.dtype(dtype)
    if is_cuda_array(like):
        return xp.empty(shape, dtype=dtype)
    key = (tuple(shape), dtype)
    with _POOL_LOCK:
        bufs = _POOL.get(key)
        if bufs is None:
            bufs = _POOL[key] = []
        for i in range(len(bufs)):
            if _refcount(bufs, i) == _UNHELD_REFCOUNT:
                return bufs[i]
        fresh = xp.empty(shape, dtype=dtype)
        bufs.append(fresh)
        if sum(map(len, _POOL.values())) > POOL_SIZE:
            _evict_one_free(fresh)
        return fresh


def output(xp, shape, dtype):
    """An uninitialized array for an op's result on ``xp``'s device: on the CPU, when it is
    larger than OUTPUT_BYTES, a pooled buffer nothing holds (``workspace``); else a fresh
    ``xp.empty``."""
    dtype = xp.dtype(dtype)
    if xp is not _NUMPY or math.prod(shape) * dtype.itemsize <= OUTPUT_BYTES:
        return xp.empty(shape, dtype=dtype)
    return workspace(_POOL_LIKE, tuple(shape), dtype)


_POOL_LIKE = _NUMPY.empty(0)  # the device and module output's pooled buffers are for
