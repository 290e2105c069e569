"""The mark of a parameter whose ``.grad`` is only this rank's part of its gradient: a
fully_shard shard, or a parameter under ZeRO-2 (``DistributedDataParallel(gradient_sharding=
True)``), whose averaged gradient only its owner keeps. ``nn.utils.clip_grad_norm_`` reads
it to compute the norm of the whole gradient (PyTorch's FSDP2 gets the same from DTensor):
each rank's p-th-power sum over its parts, summed over the ranks that hold the others (the
largest magnitude, for the inf-norm), once per distinct set of ranks. nn sits below comm,
so the collective travels with the mark: ``param._partial_grad``, a :class:`PartialGrad`.
"""
import contextlib

from .. import comm as dist
from ..tensor import backend
from ..tensor.backend import get_array_module


class PartialGrad:
    """The ranks over which the parts of a gradient lie. ``ranks`` (their global ranks) is
    the key clip_grad_norm_ combines parameters by: one all-reduce per distinct set."""

    def __init__(self, group):
        self.group = group
        size = dist.get_world_size(group)
        self.ranks = tuple(dist.get_global_rank(group, r) if group is not None else r for r in range(size))

    def all_reduce(self, value, op, like):
        """``value`` (a float: this rank's partial sum, or its largest magnitude) combined over
        the ranks: ``op`` "sum" or "max". ``like``: an array on the parameters' device (NCCL
        reduces device arrays only). Collective over ``ranks``."""
        if len(self.ranks) == 1:
            return value
        with backend.switch_to((like,)) or contextlib.nullcontext():
            # float64 whatever the gradients' dtype: the same dtype on every rank
            buf = get_array_module(like).asarray([value], dtype="float64")
            dist.all_reduce(buf, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=self.group)
            return float(buf[0])


def mark_partial(params, group):
    """Mark each of ``params`` as holding only this rank's part of its gradient over ``group``
    (None: the world)."""
    mark = PartialGrad(group)
    for p in params:
        p._partial_grad = mark
