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
a few passes over the data to convert.
"""
import math

import numpy

from .. import comm as dist
from ..tensor.backend import asnumpy, get_array_module

HEADROOM_BITS = 20  # up to 2**20 summands (micro-shards) over all ranks
MANTISSA_BITS = 62 - HEADROOM_BITS
NO_SUMMAND = -1.0  # the magnitude reported for a tensor this rank has no summand of
NON_FINITE = math.inf  # ... and for one with an inf or NaN summand


def exact_sum(summands, like, group=None, divisor=1):
    """Sum arrays across all ranks of ``group`` exactly (in fixed point), then divide.

    Args:
        summands: one entry per tensor, in the same order on every rank: a list of this
            rank's arrays to add (any number, none included), each shaped like its ``like``.
        like: per tensor, an array of its shape, dtype and device (e.g. the parameter's).
        group: the process group (None: the default group).
        divisor: what the sum is divided by at the end (in float64; exact for powers of two).

    Returns:
        per tensor, the sum over every rank's summands divided by ``divisor``, in its
        ``like``'s dtype; None for a tensor no rank had a summand of; all NaN for one whose
        summands held an inf or a NaN on some rank.

    Example:
        >>> exact_sum([[g0, g1]], like=[p.array], divisor=world_size)   # 2 of 4 micro-shards here
        [array(...)]
    """
    if len(summands) != len(like):
        raise ValueError(f"exact_sum: {len(summands)} lists of summands for {len(like)} tensors")
    xp = get_array_module(like[0]) if like else numpy
    _check_headroom(max((len(s) for s in summands), default=0) * dist.get_world_size(group))  # before any work
    # one MAX all-reduce: each tensor's largest magnitude, and (last) the most summands of one rank
    peaks = numpy.array([_peak(xp, s) for s in summands] + [max((len(s) for s in summands), default=0)],
                        numpy.float64)
    dist.all_reduce(peaks, op=dist.ReduceOp.MAX, group=group)
    _check_headroom(int(peaks[-1]) * dist.get_world_size(group))  # another rank may hold more
    scales = [_scale(peak) for peak in peaks[:-1]]
    live = [i for i, scale in enumerate(scales) if scale is not None]
    offsets, start = {}, 0
    for i in live:
        offsets[i] = start
        start += like[i].size
    fixed = xp.zeros(start, xp.int64)  # a rank without summands of a tensor adds zeros
    for i in live:
        view = fixed[offsets[i]:offsets[i] + like[i].size]
        for a in summands[i]:
            view += _to_fixed(xp, a, scales[i]).reshape(-1)
    if live:
        dist.all_reduce(fixed, group=group)
    out = []
    for i, (peak, scale) in enumerate(zip(peaks[:-1], scales)):
        if peak == NO_SUMMAND:
            out.append(None)
        elif scale is None:  # an inf or NaN somewhere: the sum is not a number
            out.append(xp.full(like[i].shape, xp.nan, like[i].dtype))
        else:
            total = xp.ldexp(fixed[offsets[i]:offsets[i] + like[i].size].astype(xp.float64), -scale)
            if divisor != 1:
                total /= divisor
            out.append(total.astype(like[i].dtype).reshape(like[i].shape))
    return out


def _check_headroom(most):
    if most > 1 << HEADROOM_BITS:
        raise ValueError(f"exact_sum: up to {most} summands per tensor over the ranks, more than the "
                         f"2**{HEADROOM_BITS} the fixed-point sum has headroom for; use fewer, larger micro-shards")


def _peak(xp, arrays):
    """The largest magnitude over ``arrays`` as a host float (NO_SUMMAND without arrays,
    NON_FINITE with an inf or NaN)."""
    if not arrays:
        return NO_SUMMAND
    peak = max(float(asnumpy(xp.abs(a).max())) if a.size else 0.0 for a in arrays)
    return peak if math.isfinite(peak) else NON_FINITE


def _scale(peak):
    """The power of two the summands of a tensor are multiplied by (None: nothing to sum)."""
    if peak == NO_SUMMAND or not math.isfinite(peak):
        return None
    if peak == 0:
        return 0
    return MANTISSA_BITS - math.frexp(peak)[1]  # peak < 2**frexp's exponent


def _to_fixed(xp, a, scale):
    # ldexp multiplies by 2**scale exactly (no 2**scale is formed: it may not fit a float32);
    # float16 goes through float32, where its values keep every bit
    a = a.astype(xp.float32) if a.dtype.itemsize < 4 else a
    return xp.rint(xp.ldexp(a, scale)).astype(xp.int64)
