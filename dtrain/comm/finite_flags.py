"""A coalesced all-reduce that also tells whether any rank sent a non-finite value.

DDP's non-finite check (dtrain/parallel/nonfinite.py) needs, per bucket, this rank's squared
norm of every gradient (to name the culprit on the rare path) and one flag, the same on
every rank, saying whether any rank's were non-finite. ``all_reduce_coalesced(...,
finite_check=FiniteCheck(...))`` computes both where the data is already being read:

* through the shared-memory all-reduce (:mod:`.shm`, one node, NumPy): the result, not the
  inputs, on the comm thread: each rank takes one dot of each piece of the result it has
  just summed (in cache; 1/N of the message per rank) and the ranks' verdicts travel through
  the window's control slots. NaN and inf pass through a sum, so the result is non-finite iff
  some rank's values were (or the sum overflowed). Only then (the rare path) are the ranks'
  own values in that piece looked at, while still there (this rank's arrays before the result
  overwrites them, the others' slots): ``seen``. The main thread pays nothing; the comm
  thread ~1/N of a dot over the message, from cache;
* any other path (MPI's own all-reduce below the shared-memory threshold, across hosts, NCCL,
  one process): this rank's squared norm of each array is taken just before the reduction,
  on the thread that runs it, and the flag rides in the message as one trailing element (no
  extra collective).

A squared norm that is not finite (NaN or inf in the values, or a norm past the dtype's
range: float32 above ~1.8e19) sets the flag, as ``clip_grad_norm_(error_if_nonfinite=True)``
would refuse such a gradient.
"""
import numpy

from ..tensor.backend import asnumpy, get_array_module


def squared_norm(xp, a):
    """``sum(a * a)`` as one BLAS dot (the cheapest full read of the values: NaN and inf propagate)."""
    flat = a.reshape(-1)
    if flat.dtype.itemsize < 4:  # float16's range (65504) is passed by the squares of ordinary gradients
        flat = flat.astype(xp.float32)
    return xp.vdot(flat, flat).real


def norm_dtype(xp, dtype):
    """The dtype the squared norms of ``dtype`` values are kept in."""
    return xp.float64 if dtype.itemsize >= 8 else xp.float32


class FiniteCheck:
    """What one coalesced all-reduce of ``count`` arrays like ``like`` reports (reusable: call
    :meth:`reset` before each).

    Attributes:
        flag: one element of the message's dtype: after the call, non-zero iff some rank's
            values (or the sum) were non-finite; the same on every rank. On a GPU it stays on
            the device (reading it is the caller's one synchronization).
        seen: (shared-memory path, rare) ``(group rank, array index) -> 1 (NaN) or 2 (inf)``
            for the ranks' values this rank saw non-finite.
        norms: (other paths) per array, this rank's squared norm of what it sent, or None.
    """

    def __init__(self, like, count):
        self.count = count
        self.flag = get_array_module(like).zeros(1, like.dtype)
        self.seen, self.norms = {}, None

    def reset(self):
        self.seen.clear()
        self.norms = None

    def take(self, arrays, scale=None):
        """This rank's norms of ``arrays`` (as multiplied by ``scale``, if given) and its own
        flag, here and now (before the flag is reduced in the message)."""
        xp = get_array_module(self.flag)
        self.norms = xp.zeros(len(arrays), norm_dtype(xp, self.flag.dtype))
        for k, a in enumerate(arrays):
            self.norms[k] = squared_norm(xp, a)
        if scale is not None:
            self.norms *= scale * scale
        self.flag[...] = ~xp.isfinite(self.norms.sum())

    def found(self, rank):
        """The rare path: ``(group rank, array index) -> kind`` of what this rank (group rank
        ``rank``) knows to be non-finite: its own arrays from its norms, or what it saw."""
        if self.norms is None:
            return dict(self.seen)
        norms = asnumpy(self.norms)
        return {(rank, int(k)): 1 if numpy.isnan(norms[k]) else 2 for k in numpy.flatnonzero(~numpy.isfinite(norms))}
