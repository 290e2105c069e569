"""How one backward pass reduces DDP's buckets: one object per strategy.

The :class:`~.reducer.Reducer` picks a strategy at the start of every synchronized backward
and drives it through four calls per bucket:

* ``stage(bucket, slot, grad)``: a parameter's gradient is final; put it where the
  bucket's reduction will read it;
* ``launch(bucket)``: every gradient of the bucket is staged; start its reduction;
* ``finish(bucket)``: wait for the reduction; returns where the averages are (the
  bucket's layout);
* ``write_back(bucket, averages, used)``: make ``.grad`` hold the averages (``used``:
  per parameter, how many ranks used it, or None without ``find_unused_parameters``;
  a parameter no rank used keeps its ``.grad``, as in PyTorch).

The strategies:

* :class:`InPlaceCoalesced` (the default hook on several ranks): the ``.grad`` arrays are
  all-reduced where they are, as one message, no copies;
* :class:`BucketCopy` (a comm hook, or ``gradient_as_bucket_view``): the gradients are
  copied into the bucket buffer, the buffer is reduced, the averages are copied back;
* :class:`SingleRank` (one rank, the default hook): a gradient is its own average;
* :class:`ShardedReduceScatter` (``gradient_sharding``, ZeRO-2, on several ranks): each
  bucket is reduce-scattered, so a rank receives the averages of its own parameters only.

Each strategy also carries the non-finite check of :mod:`.nonfinite` (``check``; None with
``nonfinite="ignore"``). :class:`InPlaceCoalesced` (the default on several ranks) hands it to
its all-reduce (``all_reduce_coalesced(finite_check=...)``, :mod:`dtrain.comm.finite_flags`):
on the comm thread, where the shared-memory all-reduce sums the result. The others take
each gradient's squared norm when it is staged (just written, so still in cache), this rank's
flag when its bucket is launched; the flag travels in the bucket's message (the trailing
element of ``Bucket.message``; the last element of every rank's piece of a reduce-scatter);
with a comm hook, the hook's averages are checked.
"""
import math
import weakref

from .. import comm as dist
from ..tensor import Tensor
from ..tensor.backend import get_array_module
from .comm_hooks import Future, allreduce_hook


class Bucket:
    """One flat buffer and the parameters whose gradients live in it.

    Args:
        index: the bucket's position in launch order.
        indices: the indices of its parameters, in the order of their slots.
        params: all the reducer's parameters.
        allocate: whether to allocate the flat buffer (False: ``buffer``, ``message``, ``flag``
            and ``views`` are None; :class:`ShardedReduceScatter` sends from a buffer of its own layout).
        flag: whether the message carries the non-finite flag: ``message`` is then ``buffer``
            and one more element, ``flag`` (a view of it); else ``message`` is ``buffer``.
    """

    def __init__(self, index, indices, params, allocate=True, flag=False):
        self.index, self.indices = index, indices
        first = params[indices[0]].array
        self.shapes = [params[i].shape for i in indices]
        self.buffer = self.message = self.flag = self.views = None
        if allocate:
            size = sum(params[i].numel() for i in indices)
            self.message = get_array_module(first).zeros(size + bool(flag), first.dtype)
            self.buffer = self.message[:size] if flag else self.message
            self.flag = self.message[size:] if flag else None
            self.views = self.split(self.buffer)  # views[k]: the slot of parameter indices[k], shaped like it
        self.pending = len(indices)  # gradients not yet final in this pass

    def split(self, flat):
        """Per-parameter views of a flat array laid out like the buffer."""
        views, start = [], 0
        for shape in self.shapes:
            n = math.prod(shape)
            views.append(flat[start:start + n].reshape(shape))
            start += n
        return views


class GradBucket:
    """What a comm hook sees of a bucket (as ``torch.distributed.GradBucket``)."""

    def __init__(self, bucket, params, is_last, div_factor):
        self._bucket, self._params, self._is_last = bucket, params, is_last
        self._div_factor = div_factor

    def index(self):
        return self._bucket.index

    def buffer(self):
        """The flat array of the bucket's gradients; a hook may reduce it in place."""
        return self._bucket.buffer

    def gradients(self):
        """Per-parameter views of ``buffer()``, shaped like the parameters."""
        return [Tensor._wrap(v) for v in self._bucket.views]

    def parameters(self):
        return [self._params[i] for i in self._bucket.indices]

    def is_last(self):
        return self._is_last


def choose_strategy(reducer):
    """The strategy of the coming backward of ``reducer`` (its hook, world size, options)."""
    if reducer.hook is allreduce_hook and reducer.world_size == 1:
        return SingleRank(reducer.nonfinite)
    if reducer.hook is allreduce_hook and not reducer.as_view:
        return InPlaceCoalesced(reducer.group, reducer.params, 1.0 / reducer.div_factor, reducer.nonfinite)
    return BucketCopy(reducer)


def _unused_everywhere(used, i):
    return used is not None and not used[i]


def _can_reduce_in_place(grad, slot):
    """Whether a gradient array can be all-reduced where it is, standing for its bucket slot."""
    return (type(grad) is type(slot) and grad.dtype == slot.dtype and grad.shape == slot.shape
            and grad.flags.c_contiguous and getattr(grad.flags, "writeable", True))


class SingleRank:
    """One rank and the default hook: the average of a gradient is the gradient itself, so
    nothing is copied or sent; the reducer's hooks only keep count (and, with a non-finite
    ``check``, the gradients are checked where they are).

    Args:
        check: the reducer's :class:`~.nonfinite.NonFiniteCheck`, or None.
    """

    def __init__(self, check=None):
        self.check = check

    def stage(self, bucket, slot, grad):
        """Nothing to stage: ``.grad`` already holds the average (a check takes its norm)."""
        if self.check is not None and grad is not None:
            self.check.stage(bucket, slot, grad.array)

    def launch(self, bucket):
        """Nothing to send (this rank's check is the verdict)."""
        if self.check is not None:
            flag = self.check.local(bucket, bucket.flag)
            if flag is not None:
                self.check.reduced(bucket, flag)

    def finish(self, bucket):
        """Nothing to wait for; the averages are in ``.grad``."""

    def write_back(self, bucket, averages, used):
        """Nothing to write: ``.grad`` is untouched."""


class InPlaceCoalesced:
    """The default hook on several ranks: a bucket is all-reduced straight from its ``.grad``
    arrays, as one message (``all_reduce_coalesced``, every rank's values multiplied by
    ``scale`` = 1 / world size first, as PyTorch divides before all-reducing): no copies into
    and out of a bucket buffer, which on one node is what lets the shared-memory all-reduce
    of :mod:`dtrain.comm.shm` pay off. A gradient that cannot be reduced where it is
    (missing, non-contiguous, another dtype) goes through its bucket slot instead.

    Args:
        group: the process group (None: the default group).
        params: the reducer's parameters.
        scale: what every rank's values are multiplied by before the sum.
        check: the reducer's :class:`~.nonfinite.NonFiniteCheck` (the bucket's flag is sent
            with it, as the message's last array), or None.
    """

    def __init__(self, group, params, scale, check=None):
        self.group, self.params, self.scale, self.check = group, params, scale, check
        self.to_reduce = {}  # bucket index -> per slot, the array all-reduced: the .grad array or the slot
        self.works = {}  # bucket index -> the Work of its all-reduce

    def stage(self, bucket, slot, grad):
        arrays = self.to_reduce.setdefault(bucket.index, [None] * len(bucket.indices))
        view = bucket.views[slot]
        if grad is not None and _can_reduce_in_place(grad.array, view):
            arrays[slot] = grad.array
        else:
            view[...] = 0 if grad is None else grad.array  # the unused contribute zeros
            arrays[slot] = view

    def launch(self, bucket):
        arrays = self.to_reduce[bucket.index]
        # the all-reduce checks itself, on the comm thread (the result, where the shared-memory
        # all-reduce sums it): nothing here on the main thread
        probe = None if self.check is None else self.check.probe(bucket, arrays[0])
        self.works[bucket.index] = dist.all_reduce_coalesced(arrays, group=self.group, async_op=True,
                                                             scale=self.scale, finite_check=probe)

    def finish(self, bucket):
        self.works[bucket.index].wait()
        if self.check is not None:
            self.check.probed(bucket)
        return bucket.buffer  # the averages of the gradients that went through their slots

    def write_back(self, bucket, averages, used):
        for i, view, reduced in zip(bucket.indices, bucket.views, self.to_reduce[bucket.index]):
            if reduced is not view or _unused_everywhere(used, i):
                continue  # reduced in its .grad array, or unused on every rank
            p = self.params[i]
            if p.grad is None:
                p.grad = Tensor._wrap(view.copy())
            else:
                p.grad.array[...] = view


class BucketCopy:
    """A comm hook, or ``gradient_as_bucket_view``: the gradients are copied into the bucket
    buffer, the buffer is reduced, and the averages are written back into ``.grad`` (which,
    with ``gradient_as_bucket_view``, become views of the buffer). With the default hook the
    gradients are divided by the world size while being copied in, and the buffer is
    all-reduced as it is; another hook gets the undivided gradients in a :class:`GradBucket`.

    Args:
        reducer: the :class:`~.reducer.Reducer` (its group, parameters, hook and options).
    """

    def __init__(self, reducer):
        self.params, self.group, self.as_view = reducer.params, reducer.group, reducer.as_view
        self.hook, self.hook_state = reducer.hook, reducer.hook_state
        self.div_factor, self.last = reducer.div_factor, len(reducer.buckets) - 1
        self.scale = 1.0 / reducer.div_factor if reducer.hook is allreduce_hook else None
        self.check = reducer.nonfinite
        self.futures = {}  # bucket index -> the Future of its reduction

    def stage(self, bucket, slot, grad):
        view = bucket.views[slot]
        if grad is None:
            view[...] = 0  # an unused parameter without a gradient contributes zeros
        elif self.scale is not None:  # the default hook: divide while copying in
            get_array_module(view).multiply(grad.array, self.scale, out=view)
        elif grad.array is not view:
            view[...] = grad.array
        if self.check is not None and grad is not None:  # with a comm hook: for the report only
            self.check.stage(bucket, slot, view)

    def launch(self, bucket):
        if self.check is not None and self.scale is not None:
            self.check.local(bucket, bucket.flag)
        if self.scale is not None:  # divided on the way in: a plain all-reduce of the buffer (and flag)
            future = Future(dist.all_reduce(bucket.message, group=self.group, async_op=True), bucket.buffer)
        else:
            future = self.hook(self.hook_state, GradBucket(bucket, self.params, bucket.index == self.last,
                                                           self.div_factor))
        self.futures[bucket.index] = future

    def finish(self, bucket):
        averages = self.futures[bucket.index].wait()
        if self.check is not None:
            if self.scale is not None:
                self.check.reduced(bucket, bucket.flag)
            else:  # the hook's message has no room for the flag: its averages decide
                self.check.reduced_averages(bucket, bucket.split(averages))
        if averages is not bucket.buffer and self.as_view:
            bucket.buffer[...] = averages  # .grad will be views of the buffer
            return bucket.buffer
        return averages

    def write_back(self, bucket, averages, used):
        results = bucket.views if averages is bucket.buffer else bucket.split(averages)
        for i, view, result in zip(bucket.indices, bucket.views, results):
            if _unused_everywhere(used, i):
                continue  # its .grad stays as it was, as in PyTorch
            p = self.params[i]
            if self.as_view:
                if p.grad is None or p.grad.array is not view:
                    p.grad = Tensor._wrap(view)
            elif p.grad is None:
                p.grad = Tensor._wrap(result.copy())
            elif p.grad.array is not result:
                p.grad.array[...] = result


def shard_layout(bucket, owners, world_size, extra=0):
    """Where a bucket's gradients go in the send buffer of its reduce-scatter: grouped by
    owner (``owners[i]``: the group rank that keeps parameter i's gradient), rank 0's first,
    each owner's segment padded to the largest (a reduce-scatter gives every rank a piece
    of one size) plus ``extra`` trailing elements (the non-finite flag). Returns
    ``(offsets, piece)``: per slot, its offset in the send buffer, and the piece's size in
    elements (the send buffer holds ``world_size * piece``).

    Example:
        >>> shard_layout(bucket_of_sizes_3_2_4, owners=[1, 0, 1], world_size=2)
        ([7, 0, 10], 7)
    """
    filled, local = [0] * world_size, []
    for i, shape in zip(bucket.indices, bucket.shapes):
        local.append(filled[owners[i]])
        filled[owners[i]] += math.prod(shape)
    piece = max(filled) + extra
    return [owners[i] * piece + offset for i, offset in zip(bucket.indices, local)], piece


class ShardedReduceScatter:
    """``gradient_sharding`` (ZeRO-2) on several ranks: each bucket is reduce-scattered
    instead of all-reduced, so each rank receives the averages of the parameters it owns
    (``reducer.owners``, the ZeroRedundancyOptimizer's partition) and no others.

    A bucket's send buffer (laid out by :func:`shard_layout`) exists from its first
    gradient to the end of its reduction; each gradient is divided by the world size while
    being copied in (as :class:`BucketCopy` does) and its ``.grad`` is dropped at once, so
    the full gradients are never all alive together. After the pass the owned parameters'
    ``.grad`` hold the averages (copies, or with ``gradient_as_bucket_view`` views of the
    received piece, which then also keeps the piece's padding alive); every other
    ``.grad`` is None.

    With a non-finite check, every piece ends with a flag slot each rank fills with its own
    flag, so every rank receives the sum of the flags.

    Args:
        reducer: the :class:`~.reducer.Reducer` (group, parameters, owners, layouts, options).
    """

    def __init__(self, reducer):
        self.params, self.group, self.as_view = reducer.params, reducer.group, reducer.as_view
        self.check = reducer.nonfinite
        self.owners, self.layouts = reducer.owners, reducer.layouts  # layouts: bucket index -> shard_layout
        self.written = reducer.written  # parameter index -> (the .grad written, weakly; its version): see the Reducer
        self.world_size, self.rank = reducer.world_size, dist.get_rank(reducer.group)
        self.scale = 1.0 / reducer.div_factor
        self.sends, self.pieces, self.works = {}, {}, {}  # bucket index -> its send buffer, piece, Work

    def layout(self, bucket):
        if bucket.index not in self.layouts:
            self.layouts[bucket.index] = shard_layout(bucket, self.owners, self.world_size,
                                                      extra=self.check is not None)
        return self.layouts[bucket.index]

    def stage(self, bucket, slot, grad):
        offsets, piece = self.layout(bucket)
        p = self.params[bucket.indices[slot]]
        send = self.sends.get(bucket.index)
        if send is None:  # zeros: the padding and a missing gradient contribute nothing
            send = self.sends[bucket.index] = get_array_module(p.array).zeros(piece * self.world_size, p.dtype)
        view = send[offsets[slot]:offsets[slot] + p.numel()].reshape(p.shape)
        if grad is not None:
            get_array_module(view).multiply(grad.array, self.scale, out=view)
            if self.check is not None:
                self.check.stage(bucket, slot, view)
        p.grad = None  # the full gradient is in the send buffer now

    def launch(self, bucket):
        send = self.sends[bucket.index]
        if self.check is not None:
            size = self.layout(bucket)[1]
            self.check.local(bucket, send[size - 1::size])  # the flag slot of every rank's piece
        piece = self.pieces[bucket.index] = get_array_module(send).empty(send.size // self.world_size, send.dtype)
        self.works[bucket.index] = dist.reduce_scatter_tensor(piece, send, group=self.group, async_op=True)

    def finish(self, bucket):
        self.works.pop(bucket.index).wait()
        del self.sends[bucket.index]
        piece = self.pieces.pop(bucket.index)
        if self.check is not None:
            self.check.reduced(bucket, piece[-1:])
        return piece

    def write_back(self, bucket, piece, used):
        offsets, size = self.layout(bucket)
        begin = self.rank * size  # where this rank's piece starts in the send buffer
        for i, offset in zip(bucket.indices, offsets):
            p = self.params[i]
            if self.owners[i] != self.rank:
                p.grad = None
                self.written.pop(i, None)
                continue
            average = piece[offset - begin:offset - begin + p.numel()].reshape(p.shape)
            p.grad = Tensor._wrap(average if self.as_view else average.copy())
            self.written[i] = (weakref.ref(p.grad), p.grad._version)
