"""A sum over K micro-shards in one fixed binary tree, whatever ranks hold them.

When K (micro-shards per step, over all ranks and accumulation passes) is a power of two, the
sum of their gradients is taken in the balanced binary tree over micro-shards 0..K-1:
((g0 + g1) + (g2 + g3)) + ... Each rank holds whole subtrees of it (a pass of a rank is c
consecutive micro-shards, c = K / (ranks x passes), a power of two that divides the
micro-shard's position), so it sums those itself, in the tree's order; the subtree sums are
all-gathered (no arithmetic in the collective) and every rank adds them up the rest of the
tree, in the same order. Every addition is the one one process would make: the same bits at
any world size, with float arithmetic only (against :mod:`.exact_sum`, no conversions and
the gradients' own bytes, not int64's). At 2 ranks the level above the ranks' subtrees adds
two operands, which any all-reduce does with that one addition: an all-reduce replaces the
all-gather there.

The price above 2 ranks: each rank receives every other rank's subtree sums, (ranks - 1) x
passes x the gradient bytes, N/2 times a ring all-reduce's (2x at 4 ranks), so this suits few
ranks; :mod:`.exact_sum` (int64, any K) keeps the bytes of one all-reduce.

At 1 and 2 ranks nothing is copied: each subtree is summed in place in its first micro-shard's
arrays (the micro-shard gradients are the caller's to overwrite), and at 2 ranks those arrays
are all-reduced in place, the division by the world size and the finiteness check made inside
the all-reduce (``all_reduce_coalesced(scale=, finite_check=)``: the shared-memory path
multiplies while it copies and checks the sums while they are in cache). The same bits as
dividing before the all-reduce: its scale is that multiplication of each rank's values, made
before the one addition.
"""
import numpy

from .. import comm as dist
from ..comm.finite_flags import FiniteCheck, squared_norm
from ..tensor.backend import asnumpy, get_array_module


def is_power_of_two(n):
    return n >= 1 and n & (n - 1) == 0


class TreeSum:
    """Sums micro-shard gradients in the fixed tree; keeps its buffers between calls.

    Args:
        like: per tensor, an array of its shape and dtype (the parameters'; one dtype).
        group: the process group (None: the default group).
        check: after each call, ``finite`` tells whether the result may be all finite (False:
            some sum holds a NaN or inf, or the squared norm of the result passed the dtype's
            range: look closer). Read with the "has a gradient" flags (no extra host
            synchronization); the same on every rank (the same bits). Then (the rare path)
            ``found`` is what this rank knows to be non-finite, ``(group rank, tensor index) ->
            1 (NaN) or 2 (inf)``, for :func:`.nonfinite.culprit_message`: at 1 and 2 ranks the
            micro-shard gradients were summed in place, so the ranks' own values are gone by
            then; what each rank sent (its subtree sums) was looked at instead.
    """

    def __init__(self, like, group=None, check=False):
        self.like, self.group, self.check = like, group, check
        self.finite, self.found = True, None
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.offsets = [0]
        for a in like:
            self.offsets.append(self.offsets[-1] + a.size)
        self.length = self.offsets[-1] + len(like)  # the gradients, then one "has a gradient" flag each
        self.gathered = self.mine = None

    def __call__(self, passes, divisor):
        """Per tensor, the tree sum of every rank's micro-shard gradients divided by ``divisor``
        (None for a tensor no micro-shard had a gradient of).

        Args:
            passes: this rank's micro-shard gradients, per accumulation pass, in order: a list
                (one per micro-shard) of per-tensor arrays or None (no gradient: zeros). At 1
                and 2 ranks the arrays are overwritten (the results are some of them).
            divisor: a power of two (the world size): the division is exact.
        """
        if self.world <= 2:
            return self._in_place(passes, divisor)
        xp = get_array_module(self.like[0])
        dtype = self.like[0].dtype
        n_passes = len(passes)
        if self.mine is None or self.mine.size != n_passes * self.length:
            self.mine = xp.empty(n_passes * self.length, dtype)
        mine = self.mine.reshape(n_passes, self.length)
        for p, shards in enumerate(passes):
            for i in range(len(self.like)):
                out = mine[p, self.offsets[i]:self.offsets[i + 1]]
                # divided here, not at the root: the subtree sums at N ranks are N times those at one
                # rank exactly (see docs/reproducibility.md), so dividing them gives one rank's bits
                # and saves a pass over the result
                _subtree(xp, [g[i] for g in shards], out, scale=1.0 / divisor)
            mine[p, self.offsets[-1]:] = xp.asarray([any(g[i] is not None for g in shards)
                                                     for i in range(len(self.like))], dtype)
        size = self.world * n_passes * self.length
        if self.gathered is None or self.gathered.size != size:
            self.gathered = xp.empty(size, dtype)
        dist.all_gather_into_tensor(self.gathered, self.mine, group=self.group)
        # rank r's pass p is the tree's (p * world + r)-th subtree
        parts = list(self.gathered.reshape(self.world, n_passes, self.length).swapaxes(0, 1).reshape(-1, self.length))
        total = xp.empty(self.length, dtype)  # new each call: the gradients are views of it
        _subtree(xp, parts, total)
        flags = total[self.offsets[-1]:]
        if self.check:  # NaN and inf propagate through the tree's additions into the dot
            norm = squared_norm(xp, total)
            flags = xp.concatenate([flags.astype(norm.dtype), (~xp.isfinite(norm)).astype(norm.dtype).reshape(1)])
        return self._results(flags, [total[self.offsets[i]:self.offsets[i + 1]].reshape(self.like[i].shape)
                                     for i in range(len(self.like))], None)

    def _in_place(self, passes, divisor):
        """__call__ at 1 and 2 ranks: every sum made in the micro-shard gradients' own arrays."""
        xp = get_array_module(self.like[0])
        dtype, count = self.like[0].dtype, len(self.like)
        flags = xp.asarray([any(g[i] is not None for g in shards) for shards in passes for i in range(count)], dtype)
        # per pass, per tensor: this rank's subtree sum, in its first micro-shard's array
        sums = [[_sum_in_place(xp, [g[i] for g in shards], a) for i, a in enumerate(self.like)] for shards in passes]
        flat = [a.reshape(-1) for row in sums for a in row] + [flags]  # views: C-contiguous arrays
        check = None
        if self.world == 2:
            # the tree's level above the ranks' subtrees is pass p of rank 0 + pass p of rank 1: a
            # sum of two operands, which any all-reduce computes as that one addition (IEEE addition
            # commutes), with the all-reduce's bytes and none of the all-gather's copies
            check = FiniteCheck(flags, len(flat)) if self.check else None
            dist.all_reduce_coalesced(flat, group=self.group, scale=1.0 / divisor, finite_check=check)
            bad = check.flag if self.check else None  # non-zero: some value or sum was not finite
        elif self.check:  # one rank: divisor 1, nothing to divide or reduce
            norm = sum(squared_norm(xp, a) for a in flat[:-1])  # NaN and inf propagate into it
            bad = (~xp.isfinite(norm)).astype(dtype).reshape(1)
        # the tree's levels above the passes, in pass 0's arrays
        totals = [_sum_in_place(xp, [row[i] for row in sums], a) for i, a in enumerate(self.like)]
        flags = flags.reshape(len(passes), count).max(axis=0)
        if self.check:
            flags = xp.concatenate([flags, bad.astype(dtype)])
        return self._results(flags, totals, check)

    def _results(self, flags, totals, check):
        """``totals``, None for the tensors whose "has a gradient" flag is zero; with ``check``,
        the flags end with a "not finite" flag, read here into ``finite`` (and, when set, what
        this rank found into ``found``: from ``check``, the all-reduce's FiniteCheck, else from
        the totals). One read of the flags: one transfer from a GPU, not one per tensor."""
        used = asnumpy(flags)
        self.found = None
        if self.check:
            self.finite, used = not used[-1], used[:-1]
            if not self.finite and self.world <= 2:
                count = len(self.like)
                if check is not None:  # keys index the flat message: pass p's tensor i is p * count + i
                    self.found = {(r, k % count): kind for (r, k), kind in check.found(self.rank).items()}
                else:
                    self.found = {(self.rank, i): 1 if bool(get_array_module(t).isnan(t).any()) else 2
                                  for i, t in enumerate(totals) if not bool(get_array_module(t).isfinite(t).all())}
        return [total if flag else None for total, flag in zip(totals, used)]


def _sum_in_place(xp, leaves, like):
    """The balanced tree sum of ``leaves`` (a power of two of them; None is zeros), made in the
    first one's array: a C-contiguous array of ``like``'s shape and dtype (a new one where the
    first leaf is None, a view or not C-contiguous). The other leaves' arrays at even positions
    of each level are overwritten with their subtrees' sums."""
    leaves = [_writable(xp, g, like) for g in leaves]
    stride = 1
    while stride < len(leaves):
        for i in range(0, len(leaves), 2 * stride):
            xp.add(leaves[i], leaves[i + stride], out=leaves[i])
        stride *= 2
    return leaves[0]


def _writable(xp, g, like):
    if g is None:
        return xp.zeros(like.shape, like.dtype)
    return g if g.base is None and g.flags.c_contiguous else g.copy()


def _subtree(xp, leaves, out, scale=1.0):
    """``out`` = the balanced tree sum of ``leaves`` (a power of two of them; None is zeros),
    times ``scale`` (a power of two)."""
    if len(leaves) == 1:
        if leaves[0] is None:
            out[...] = 0
        elif scale != 1.0:
            xp.multiply(leaves[0].reshape(out.shape), scale, out=out)
        else:
            out[...] = leaves[0].reshape(out.shape)
        return
    if len(leaves) == 2 and leaves[0] is not None and leaves[1] is not None:
        xp.add(leaves[0].reshape(out.shape), leaves[1].reshape(out.shape), out=out)
    else:
        half = len(leaves) // 2
        _subtree(xp, leaves[:half], out)
        right = xp.empty(out.shape, out.dtype)
        _subtree(xp, leaves[half:], right)
        out += right
    if scale != 1.0:
        out *= scale
