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
"""
import numpy

from .. import comm as dist
from ..comm.finite_flags import squared_norm
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
            range: look closer). One dot over the result, read with the "has a gradient"
            flags (no extra host synchronization); the same on every rank (the same bits).
    """

    def __init__(self, like, group=None, check=False):
        self.like, self.group, self.check = like, group, check
        self.finite = True
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
                (one per micro-shard) of per-tensor arrays or None (no gradient: zeros).
            divisor: a power of two (the world size): the division is exact.
        """
        xp = get_array_module(self.like[0])
        dtype = self.like[0].dtype
        n_passes = len(passes)
        # at 2 ranks, new each call: the all-reduce leaves the sums in it and the gradients are views
        if self.world == 2 or self.mine is None or self.mine.size != n_passes * self.length:
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
        if self.world == 2:
            # the tree's level above the ranks' subtrees is pass p of rank 0 + pass p of rank 1: a
            # sum of two operands, which any all-reduce computes as that one addition (IEEE addition
            # commutes), with the all-reduce's bytes and none of the all-gather's copies
            dist.all_reduce(self.mine, group=self.group)
            parts = list(mine)
        else:
            gathered = self.mine
            if self.world > 1:
                size = self.world * n_passes * self.length
                if self.gathered is None or self.gathered.size != size:
                    self.gathered = xp.empty(size, dtype)
                dist.all_gather_into_tensor(self.gathered, self.mine, group=self.group)
                gathered = self.gathered
            # rank r's pass p is the tree's (p * world + r)-th subtree
            parts = list(gathered.reshape(self.world, n_passes, self.length).swapaxes(0, 1).reshape(-1, self.length))
        if len(parts) == 1 and self.world == 2:
            total = parts[0]
        else:
            total = xp.empty(self.length, dtype)  # new each call: the gradients are views of it
            _subtree(xp, parts, total)
        flags = total[self.offsets[-1]:]
        if self.check:  # NaN and inf propagate through the tree's additions into the dot
            norm = squared_norm(xp, total)
            flags = xp.concatenate([flags.astype(norm.dtype), norm.reshape(1)])
        used = asnumpy(flags)  # one transfer from a GPU, not one per tensor
        if self.check:
            self.finite, used = bool(numpy.isfinite(used[-1])), used[:-1]
        return [total[self.offsets[i]:self.offsets[i + 1]].reshape(self.like[i].shape) if used[i] else None
                for i in range(len(self.like))]


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
