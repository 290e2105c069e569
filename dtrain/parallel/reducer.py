"""The Reducer: DDP's gradient buckets, and the all-reduces that overlap with backward.

Parameters are packed into buckets (flat contiguous arrays, one dtype and device each) in
reverse registration order, which is roughly the order backward produces their gradients:
a small first bucket (1 MiB) so communication starts early, then ``bucket_cap_mb``. A
post-accumulate-grad hook per parameter marks its gradient final; when a bucket is full it
is reduced asynchronously while backward goes on with earlier layers.

With the default hook the bucket is all-reduced straight from the ``.grad`` arrays, as one
message (``all_reduce_coalesced`` with every rank's values divided by the world size first,
as PyTorch divides before all-reducing): no copies into and out of a bucket buffer, which
on one node is what lets the shared-memory all-reduce of :mod:`dtrain.comm.shm` pay off. A
gradient that cannot be reduced in place (missing, non-contiguous, another dtype) goes
through its bucket slot instead. With another comm hook, or with
``gradient_as_bucket_view``, the gradients are copied into the bucket buffer, the hook
reduces that, and the averages are written back.
Buckets are launched in index order on every rank (a bucket that fills early waits for its
predecessors), so the ranks' collectives always match. The last hook of the pass waits for
all buckets and writes the averages back into ``.grad``.

After the first synchronized iteration the buckets are rebuilt once, in the order the
gradients actually became ready (rank 0's order where ranks differ).

With one rank and the default hook the average of a gradient is the gradient itself: the
hooks then only keep count, and no bucket copies are made.
"""
import math
import time
import weakref

from .. import comm as dist
from ..tensor import Tensor
from ..tensor.backend import asnumpy, cupy, device_of, get_array_module, is_cuda_array
from .comm_hooks import Future, allreduce_hook

FIRST_BUCKET_BYTES = 1024 * 1024

# Reducers whose hooks are live. Wrapping a module again (e.g. after reloading it) retires the
# old wrapper's reducer: two sets of hooks on one parameter would corrupt each other's results.
_live = weakref.WeakSet()


def assign_buckets(params, order, caps):
    """Group parameter indices into buckets.

    Args:
        params: the parameters (Tensors).
        order: their indices in the order to fill buckets.
        caps: byte limits: the first bucket of each (dtype, device) gets ``caps[0]``, later
            ones ``caps[-1]``. A bucket is closed once it reaches its limit, so a parameter
            larger than the limit gets a bucket of its own.

    Returns:
        a list of index lists, ordered by the position of their first index in ``order``.

    Example:
        >>> assign_buckets([dtrain.zeros(300), dtrain.zeros(300)], [1, 0], [1024])  # 1200 B each
        [[1], [0]]
    """
    open_, count, done = {}, {}, []
    for i in order:
        p = params[i]
        key = (p.dtype, str(device_of(p.array)))
        bucket = open_.setdefault(key, [[], 0])
        bucket[0].append(i)
        bucket[1] += p.numel() * p.element_size()
        limit = caps[min(count.get(key, 0), len(caps) - 1)]
        if bucket[1] >= limit:
            done.append(bucket[0])
            count[key] = count.get(key, 0) + 1
            del open_[key]
    done += [b[0] for b in open_.values()]
    position = {i: k for k, i in enumerate(order)}
    return sorted(done, key=lambda b: position[b[0]])


def _in_place(grad, slot):
    """Whether a gradient array can be all-reduced where it is, standing for its bucket slot."""
    return (type(grad) is type(slot) and grad.dtype == slot.dtype and grad.shape == slot.shape
            and grad.flags.c_contiguous and getattr(grad.flags, "writeable", True))


class _Bucket:
    """One flat buffer and the parameters whose gradients live in it."""

    def __init__(self, index, indices, params):
        self.index, self.indices = index, indices
        first = params[indices[0]].array
        self.shapes = [params[i].shape for i in indices]
        self.buffer = get_array_module(first).zeros(sum(params[i].numel() for i in indices), first.dtype)
        self.views = self.split(self.buffer)  # views[k]: the slot of parameter indices[k], shaped like it
        self.pending = len(indices)
        self.future = None
        self.sources = None  # default hook: what is reduced for each slot (the .grad array or the slot)

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


class Reducer:
    """Buckets the gradients of ``params`` and averages them across the ranks of a group.

    Args:
        params: the parameters to reduce (they must require grad), in registration order.
        names: their names, for messages.
        process_group: the group (None: the default group).
        bucket_cap_mb: the size limit of every bucket after the first.
        find_unused_parameters: parameters absent from forward's graph are reduced as zeros.
        gradient_as_bucket_view: leave ``.grad`` as views into the buckets (saves a copy).
    """

    def __init__(self, params, names, process_group=None, bucket_cap_mb=25, find_unused_parameters=False,
                 gradient_as_bucket_view=False):
        self.params, self.names, self.group = params, names, process_group
        self.world_size = dist.get_world_size(process_group)
        self.cap = int(bucket_cap_mb * 1024 * 1024)
        self.find_unused = find_unused_parameters
        self.as_view = gradient_as_bucket_view
        self.direct = False  # set per backward: the default hook reduces the .grad arrays in place
        self.hook_state, self.hook = process_group, allreduce_hook
        self.div_factor = self.world_size
        self.sync = True  # whether the coming backward reduces (False under no_sync)
        self.rebuilt, self.iterations = False, 0
        self.ready_order = None  # the order gradients became ready in the first synchronized pass
        self.unused = ()  # indices of parameters forward did not use
        self.stats, self.device_wait = {}, None
        self._build(list(reversed(range(len(params)))))
        mine = {id(p) for p in params}
        for other in list(_live):
            if any(id(p) in mine for p in other.params):
                other.remove_hooks()
        self.handles = [p.register_post_accumulate_grad_hook(self._make_hook(i)) for i, p in enumerate(params)]
        _live.add(self)
        self._reset()

    # ---- buckets ----------------------------------------------------------------------
    def _build(self, order):
        caps = [min(FIRST_BUCKET_BYTES, self.cap), self.cap]
        self.buckets = [_Bucket(k, idx, self.params) for k, idx in enumerate(assign_buckets(self.params, order, caps))]
        self.where = {}  # parameter index -> (bucket, slot)
        for b in self.buckets:
            for k, i in enumerate(b.indices):
                self.where[i] = (b, k)

    def bucket_indices(self):
        """The parameter indices of each bucket, in launch order."""
        return [list(b.indices) for b in self.buckets]

    def _identity(self):
        """With one rank and the default hook the average is the gradient itself: skip the copies."""
        return self.world_size == 1 and self.hook is allreduce_hook

    # ---- iteration state ----------------------------------------------------------------
    def _reset(self):
        self.in_backward = False
        self.ready = [False] * len(self.params)
        self.num_ready, self.next_launch = 0, 0
        self.order, self.launches = [], []
        self.used_work = None
        for b in self.buckets:
            b.pending, b.future, b.sources = len(b.indices), None, None

    def check_finished(self):
        """Called first in DDP's forward: refuse to go on if the last reduction never finished
        (some parameters got no gradient). Every rank raises alike, so none hangs."""
        if self.in_backward:
            missing = [self.names[i] for i, r in enumerate(self.ready) if not r]
            self._abandon()
            raise RuntimeError(
                f"DistributedDataParallel: expected to have finished reduction in the prior iteration before "
                f"starting a new one. This error indicates that your module has parameters that were not used "
                f"in producing loss: on rank {dist.get_rank(self.group)}, these parameters received no "
                f"gradient: {', '.join(missing)}. Make sure all forward outputs take part in the loss, or pass "
                f"find_unused_parameters=True to DistributedDataParallel.")

    def maybe_rebuild(self):
        """Rebuild the buckets once, after the first synchronized iteration (a collective)."""
        if not self.rebuilt and self.iterations >= 1:
            self._rebuild()

    def prepare_for_backward(self, unused, sync):
        """Called at the end of DDP's forward: the parameters forward did not use (with
        find_unused_parameters) and whether the coming backward reduces."""
        self.unused, self.sync = tuple(unused), sync

    def _abandon(self):
        # the buckets already launched were launched on every rank: let them finish
        for b in self.buckets:
            if b.future is not None:
                b.future.wait()
        self._reset()

    def _rebuild(self):
        orders = [None] * self.world_size
        dist.all_gather_object(orders, self.ready_order, group=self.group)
        self.rebuilt = True
        order = next((o for o in orders if o), None)  # rank 0's, or the first rank that has one
        if order is None:
            return
        seen = set(order)
        order = order + [i for i in range(len(self.params)) if i not in seen]
        self._build(order)
        self._reset()

    # ---- backward -----------------------------------------------------------------------
    def _make_hook(self, i):
        def hook(param):
            if not self.sync:
                return
            if not self.in_backward:
                self._begin()
            if self.ready[i]:
                raise RuntimeError(
                    f"DistributedDataParallel: parameter {self.names[i]} got its gradient twice in one "
                    f"reduction: two backward passes ran for one forward. Sum the losses and call backward "
                    f"once, run the first pass under no_sync(), or run forward again before each backward")
            self._mark_ready(i)
        return hook

    def _begin(self):
        self.in_backward = True
        self.t_begin = time.perf_counter()
        self.scale = 1.0 / self.div_factor if self.hook is allreduce_hook else None  # join may change it
        self.direct = self.hook is allreduce_hook and not self.as_view  # reduce the .grad arrays in place
        if self.find_unused:
            # a parameter forward did not use still has a gradient to share if one was
            # accumulated before (under no_sync): it counts as used, its .grad goes in as it is
            unused = [i for i in self.unused if self.params[i].grad is None]
            self.used_work = self._launch_used_bitmap(unused)
            for i in self.unused:
                self._mark_ready(i)

    def _launch_used_bitmap(self, unused):
        # counts, over the ranks, of those that used each parameter: 0 means globally unused
        xp = get_array_module(self.buckets[0].buffer)
        used = xp.ones(len(self.params), xp.int32)
        used[list(unused)] = 0
        return used, dist.all_reduce(used, group=self.group, async_op=True)

    def _mark_ready(self, i):
        bucket, slot = self.where[i]
        if self.direct and not self._identity():
            grad, view = self.params[i].grad, bucket.views[slot]
            if bucket.sources is None:
                bucket.sources = [None] * len(bucket.indices)
            if grad is not None and _in_place(grad.array, view):
                bucket.sources[slot] = grad.array
            else:
                view[...] = 0 if grad is None else grad.array  # the unused contribute zeros
                bucket.sources[slot] = view
        elif not self._identity():
            grad, view = self.params[i].grad, bucket.views[slot]
            if grad is None:
                view[...] = 0  # an unused parameter without a gradient contributes zeros
            elif self.scale is not None:  # the default hook: divide while copying in
                get_array_module(view).multiply(grad.array, self.scale, out=view)
            elif grad.array is not view:
                view[...] = grad.array
        self.ready[i] = True
        self.order.append(i)
        self.num_ready += 1
        bucket.pending -= 1
        while self.next_launch < len(self.buckets) and self.buckets[self.next_launch].pending == 0:
            self._launch(self.buckets[self.next_launch])
            self.next_launch += 1
        if self.num_ready == len(self.params):
            self._finalize()

    def _launch(self, bucket):
        self.launches.append((bucket.index, time.perf_counter() - self.t_begin))
        if self._identity():
            return
        if self.direct:
            work = dist.all_reduce_coalesced(bucket.sources, group=self.group, async_op=True, scale=self.scale)
            bucket.future = Future(work, None)
        elif self.hook is allreduce_hook:  # gradient_as_bucket_view; divided on the way in
            bucket.future = Future(dist.all_reduce(bucket.buffer, group=self.group, async_op=True), bucket.buffer)
        else:
            is_last = bucket.index == len(self.buckets) - 1
            bucket.future = self.hook(self.hook_state, GradBucket(bucket, self.params, is_last, self.div_factor))

    def _finalize(self):
        t_end = time.perf_counter()
        # on a GPU the waits below only make the stream wait: the stream's own clock measures it
        timed = self._device_mark() if self.buckets and is_cuda_array(self.buckets[0].buffer) else None
        used = None
        if self.used_work is not None:
            used, work = self.used_work
            work.wait()
            used = asnumpy(used)
        sources = []  # where each bucket's averages are
        for b in self.buckets:
            source = b.buffer
            if b.future is not None:
                result = b.future.wait()
                if b.sources is not None:
                    pass  # reduced where they are; the slots' averages are in the buffer
                elif result is not b.buffer and self.as_view:
                    b.buffer[...] = result  # .grad will be views of the buffer
                elif result is not b.buffer:
                    source = result
            sources.append(source)
        t_done = time.perf_counter()
        if timed is not None:
            timed = (timed, self._device_mark())
        if not self._identity():
            for b, source in zip(self.buckets, sources):
                self._write_back(b, used, source)
        self.stats = {"backward_s": t_end - self.t_begin, "wait_s": t_done - t_end,
                      "launches": list(self.launches), "buckets": len(self.buckets),
                      "end": t_end, "done": t_done}
        self.device_wait = timed  # (event after backward, event after the waits): see wait_seconds
        if not self.rebuilt:
            self.ready_order = list(self.order)
        self.iterations += 1
        self._reset()

    def _device_mark(self):
        """A timing event recorded now on the current stream of the buckets' device."""
        with cupy.cuda.Device(self.buckets[0].buffer.device.id):
            event = cupy.cuda.Event()
            event.record()
        return event

    def wait_seconds(self):
        """The last reduction's ``wait_s``: on a GPU, the device time from the end of backward
        to the averages (read from the two events: synchronizes with their stream); on the
        host, the time blocked in the waits."""
        if self.device_wait is None:
            return self.stats.get("wait_s")
        start, end = self.device_wait
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1e3

    def _write_back(self, bucket, used, source):
        """Put the averages (in ``source``, laid out as the bucket) into ``.grad``."""
        results = bucket.views if source is bucket.buffer else bucket.split(source)
        for k, (i, view, result) in enumerate(zip(bucket.indices, bucket.views, results)):
            if used is not None and not used[i]:
                continue  # unused on every rank: its .grad stays as it was, as in PyTorch
            if bucket.sources is not None and bucket.sources[k] is not view:
                continue  # reduced in place
            p = self.params[i]
            if self.as_view:
                if p.grad is None or p.grad.array is not view:
                    p.grad = Tensor._wrap(view)
            elif p.grad is None:
                p.grad = Tensor._wrap(result.copy())
            elif p.grad.array is not result:
                p.grad.array[...] = result

    # ---- join: a rank without data mirrors the others' reduction ----------------------
    def shadow_backward(self):
        """Take part in one iteration's reduction with zero gradients (a joined rank)."""
        used = self._launch_used_bitmap(range(len(self.params))) if self.find_unused else None
        for b in self.buckets:
            b.buffer[...] = 0
            is_last = b.index == len(self.buckets) - 1
            b.future = self.hook(self.hook_state, GradBucket(b, self.params, is_last, self.div_factor))
        if used is not None:
            used[1].wait()
        for b in self.buckets:
            b.future.wait()
        self.iterations += 1
        if not self.rebuilt:
            self.ready_order = None
        self._reset()

    def remove_hooks(self):
        """Detach from the parameters: their backward no longer reaches this reducer."""
        for h in self.handles:
            h.remove()
        _live.discard(self)
