"""A coalesced all-reduce that also tells whether any rank sent a non-finite value.

DDP's non-finite check (dtrain/parallel/nonfinite.py) needs, per bucket, this rank's squared
norm of every gradient (to name the culprit on the rare path) and one flag, the same on
every rank, saying whether any rank's were non-finite. ``all_reduce_coalesced(...,
finite_check=FiniteCheck(...))`` computes both where the data is already being read:

* through the shared-memory all-reduce (:mod:`.shm`, one node, NumPy): on the comm thread,
  fused with its copy-in, chunk by chunk while each chunk is in cache (a BLAS dot of values
  just copied costs about half of a dot reading them from memory, and the main thread pays
  nothing); the flags travel through the window's control slots, not in the message;
* any other path (MPI's own all-reduce below the shared-memory threshold, across hosts, NCCL,
  one process): the norms are taken just before the reduction, on the thread that runs it,
  and the flag rides in the message as one trailing element (no extra collective).

A squared norm that is not finite (NaN or inf in the values, or a norm past the dtype's
range: float32 above ~1.8e19) sets the flag, as ``clip_grad_norm_(error_if_nonfinite=True)``
would refuse such a gradient.
"""
from ..tensor.backend import get_array_module


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
    """What one coalesced all-reduce of ``count`` arrays like ``like`` reports.

    Attributes:
        norms: per array, this rank's squared norm of the values it sent (after ``scale``).
        flag: one element of the message's dtype: before the reduction this rank's flag (1 if
            any of its norms is not finite, else 0); after it, non-zero iff some rank's was.
            On a GPU both stay on the device (reading ``flag`` is the caller's one sync).
    """

    def __init__(self, like, count):
        xp = get_array_module(like)
        self.norms = xp.zeros(count, norm_dtype(xp, like.dtype))
        self.flag = xp.zeros(1, like.dtype)

    def take(self, arrays, scale=None):
        """This rank's norms of ``arrays`` (as multiplied by ``scale``, if given) and its own
        flag, here and now (not fused)."""
        xp = get_array_module(self.norms)
        for k, a in enumerate(arrays):
            self.norms[k] = squared_norm(xp, a)
        if scale is not None:
            self.norms *= scale * scale
        self.flag[...] = ~xp.isfinite(self.norms.sum())
