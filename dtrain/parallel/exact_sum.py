"""An all-reduce whose result does not depend on how the summands are spread over the ranks.

Floating-point addition is not associative: summing the same K micro-shard gradients as
4 + 4 on two ranks or as 2 + 2 + 2 + 2 on four gives different last bits. Integers add
exactly, in any order. So each array is turned into fixed point, 64-bit integers scaled by a
power of two shared by every summand, the integers are all-reduced (SUM), and the sum is
turned back into floating point: the same integers in, the same bits out, whatever the
world size, the split of summands over ranks or the order MPI adds them in.

The shared scale comes from one small MAX all-reduce of each tensor's largest magnitude: a
tensor whose largest magnitude is below 2**e is scaled by 2**(62 - HEADROOM_BITS - e), so each
summand fits in 62 - HEADROOM_BITS bits and up to 2**HEADROOM_BITS summands cannot overflow
int64. Precision: every value keeps the bits down to 2**-(62 - HEADROOM_BITS) of its tensor's
largest magnitude (42 bits with HEADROOM_BITS = 20: far below float32's 24-bit significands;
smaller values lose their low bits exactly as in any fixed-point sum). Scaling by a power of
two is exact, so when every summand is multiplied by 2**k (the same gradients with a
1/local_batch constant that differs by a power of two) the integers do not change.

Cost against a float32 all-reduce: twice the bytes (int64), one small extra all-reduce, and
about four passes over the data to convert (:class:`ExactSum` keeps its buffers from call to
call, so the conversions touch no freshly mapped memory).
"""
import math

import numpy

from .. import comm as dist
from ..tensor.backend import asnumpy, get_array_module

HEADROOM_BITS = 20  # up to 2**20 summands (micro-shards) over all ranks
MANTISSA_BITS = 62 - HEADROOM_BITS
NO_SUMMAND = -1.0  # the magnitude reported for a tensor this rank has no summand of
NON_FINITE = math.inf  # ... and for one with an inf or NaN summand
ROUNDER = 1.5 * 2 ** 52  # see ExactSum._add_fixed; summands stay below 2**MANTISSA_BITS < 2**51
ROUNDER_BITS = int(numpy.array(ROUNDER).view(numpy.int64))


class ExactSum:
    """Sums arrays across the ranks of a group exactly, in fixed point; keeps its int64 and
    float64 work buffers between calls (one instance per kind of call, e.g. DDP's gradients).

    Args:
        group: the process group (None: the default group).

    Example:
        >>> summer = ExactSum()
        >>> summer([[g0, g1]], like=[p.array], divisor=world_size)   # 2 of 4 micro-shards here
        [array(...)]
    """

    def __init__(self, group=None):
        self.group = group
        self.fixed = self.scratch = None
        self.nonfinite = []  # after a call: the tensors some rank's summands of held an inf or NaN (results all NaN)

    def __call__(self, summands, like, divisor=1):
        """Per tensor, the sum over every rank's summands divided by ``divisor``.

        Args:
            summands: one entry per tensor, in the same order on every rank: a list of this
                rank's arrays to add (any number, none included), each shaped like its ``like``.
            like: per tensor, an array of its shape, dtype and device (e.g. the parameter's).
            divisor: what the sum is divided by at the end (in float64; exact for powers of two).

        Returns:
            per tensor, in its ``like``'s dtype: the sum divided by ``divisor``; None for a tensor
            no rank had a summand of; all NaN for one whose summands held an inf or NaN on some rank.
        """
        if len(summands) != len(like):
            raise ValueError(f"exact_sum: {len(summands)} lists of summands for {len(like)} tensors")
        xp = get_array_module(like[0]) if like else numpy
        world = dist.get_world_size(self.group)
        _check_headroom(max((len(s) for s in summands), default=0) * world)  # before any work
        # one MAX all-reduce: each tensor's largest magnitude, and (last) the most summands of one rank
        peaks = numpy.array([_peak(s) for s in summands] + [max((len(s) for s in summands), default=0)],
                            numpy.float64)
        dist.all_reduce(peaks, op=dist.ReduceOp.MAX, group=self.group)
        _check_headroom(int(peaks[-1]) * world)  # another rank may hold more
        scales = [_scale(peak) for peak in peaks[:-1]]
        # the MAX above already said it, on every rank alike: free for DDP's non-finite check
        self.nonfinite = [i for i, peak in enumerate(peaks[:-1]) if peak == NON_FINITE]
        live = [i for i, scale in enumerate(scales) if scale is not None]
        offsets, total = {}, 0
        for i in live:
            offsets[i] = total
            total += like[i].size
        fixed = self._buffer("fixed", xp, total, xp.int64)
        for i in live:
            view = fixed[offsets[i]:offsets[i] + like[i].size]
            if not summands[i]:
                view[...] = 0  # a rank without summands of a tensor adds zeros
            for k, a in enumerate(summands[i]):
                self._add_fixed(xp, a, scales[i], view, first=k == 0)
            if len(summands[i]) > 1:  # each added summand brought ROUNDER_BITS along (see _add_fixed)
                view -= _wrapped((len(summands[i]) - 1) * ROUNDER_BITS)
        if live:
            dist.all_reduce(fixed, group=self.group)
        out = []
        for i, (peak, scale) in enumerate(zip(peaks[:-1], scales)):
            if peak == NO_SUMMAND:
                out.append(None)
            elif scale is None:  # an inf or NaN somewhere: the sum is not a number
                out.append(xp.full(like[i].shape, xp.nan, like[i].dtype))
            else:
                # one pass: int64 times 2**-scale / divisor in float64, rounded once more to the
                # dtype; the factor is the same at every world size when the summands scale with it
                result = xp.empty(like[i].shape, like[i].dtype)
                xp.multiply(fixed[offsets[i]:offsets[i] + like[i].size].reshape(like[i].shape),
                            2.0 ** -scale / divisor, out=result, casting="unsafe")
                out.append(result)
        return out

    def _buffer(self, name, xp, size, dtype):
        """A kept work buffer of at least ``size`` elements (regrown when too small)."""
        buf = getattr(self, name)
        if buf is None or buf.size < size or get_array_module(buf) is not xp:
            buf = xp.empty(size, dtype)
            setattr(self, name, buf)
        return buf[:size]

    def _add_fixed(self, xp, a, scale, view, first):
        """Put ``rint(a * 2**scale)`` in the int64 ``view`` (``first``) or add it there.

        In float64, ``a * 2**scale`` is exact (a power of two; float32 and float16 values gain
        nothing but exponent range), and adding ROUNDER = 1.5 * 2**52 to a value below 2**51
        in magnitude rounds it to an integer (ties to even, as rint) that the low bits of the
        float64 then hold: as int64 those bits are the integer plus ROUNDER_BITS, with no
        float-to-int conversion (astype(int64) is ~4x slower). The first summand is converted
        in ``view``'s own bytes and corrected at once; later ones are added with their offset,
        removed once per tensor by the caller (int64 arithmetic wraps, so the sum is exact).
        """
        work = view.view(xp.float64) if first else self._buffer("scratch", xp, a.size, xp.float64)
        xp.multiply(a.reshape(-1), 2.0 ** scale, out=work, dtype=xp.float64)
        work += ROUNDER
        if first:
            view -= ROUNDER_BITS
        else:
            view += work.view(xp.int64)


def exact_sum(summands, like, group=None, divisor=1):
    """One exact sum across the ranks of ``group`` (see :class:`ExactSum`, which keeps its
    buffers for repeated calls).

    Example:
        >>> exact_sum([[g0, g1]], like=[p.array], divisor=world_size)
        [array(...)]
    """
    return ExactSum(group)(summands, like, divisor)


def _wrapped(n):
    """``n`` modulo 2**64 as a signed int64 value (what int64 arithmetic that wraps adds)."""
    return (n + (1 << 63)) % (1 << 64) - (1 << 63)


def _check_headroom(most):
    if most > 1 << HEADROOM_BITS:
        raise ValueError(f"exact_sum: up to {most} summands per tensor over the ranks, more than the "
                         f"2**{HEADROOM_BITS} the fixed-point sum has headroom for; use fewer, larger micro-shards")


def _peak(arrays):
    """The largest magnitude over ``arrays`` as a host float (NO_SUMMAND without arrays,
    NON_FINITE with an inf or NaN: max and min propagate NaN)."""
    if not arrays:
        return NO_SUMMAND
    peak = max(max(float(asnumpy(a.max())), -float(asnumpy(a.min()))) if a.size else 0.0 for a in arrays)
    return peak if math.isfinite(peak) else NON_FINITE


def _scale(peak):
    """The power of two the summands of a tensor are multiplied by (None: nothing to sum)."""
    if peak == NO_SUMMAND or not math.isfinite(peak):
        return None
    if peak == 0:
        return 0
    return MANTISSA_BITS - math.frexp(peak)[1]  # peak < 2**frexp's exponent
