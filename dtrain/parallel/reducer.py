"""The Reducer: DDP's gradient buckets, and the all-reduces that overlap with backward.

Parameters are packed into buckets (flat contiguous arrays, one dtype and device each) in
reverse registration order, which is roughly the order backward produces their gradients:
a small first bucket (1 MiB) so communication starts early, then ``bucket_cap_mb``. A
post-accumulate-grad hook per parameter marks its gradient final; when a bucket is full it
is reduced asynchronously while backward goes on with earlier layers.

How a bucket is reduced (in place from the ``.grad`` arrays, through a bucket copy and a comm
hook, or not at all on one rank) is a strategy of :mod:`.bucket_reduction`, chosen at the
start of every synchronized backward; the Reducer only tells it when a gradient is final
(``stage``), when a bucket is complete (``launch``) and when the pass is over (``finish``
and ``write_back`` for every bucket, from the last hook of the pass).

With ``nonfinite`` other than "ignore", every bucket's message also carries a flag saying
whether any rank's gradients in it were non-finite, and a non-finite backward is skipped or
raised on every rank alike (:mod:`.nonfinite`).

Buckets are launched in index order on every rank (a bucket that fills early waits for its
predecessors), so the ranks' collectives always match. After the first synchronized
iteration the buckets are rebuilt once, in the order the gradients actually became ready
(rank 0's order where ranks differ).
"""
import time
import weakref

from .. import comm as dist
from ..tensor.backend import asnumpy, cupy, device_of, get_array_module, is_cuda_array
from ..timing import labelled
from .bucket_reduction import Bucket, GradBucket, ShardedReduceScatter, choose_strategy
from .comm_hooks import Future, allreduce_hook
from .nonfinite import NonFiniteCheck
from .stragglers import StragglerWatch

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


class Reducer:
    """Buckets the gradients of ``params`` and averages them across the ranks of a group.

    Args:
        params: the parameters to reduce (they must require grad), in registration order.
        names: their names, for messages.
        process_group: the group (None: the default group).
        bucket_cap_mb: the size limit of every bucket after the first.
        find_unused_parameters: parameters absent from forward's graph are reduced as zeros.
        gradient_as_bucket_view: leave ``.grad`` as views into the buckets (saves a copy).
        gradient_sharding: reduce-scatter the buckets (ZeRO-2): each rank keeps the averaged
            gradients of the parameters :meth:`set_gradient_owners` gives it, no others.
        nonfinite: "skip", "raise" or "ignore": what a non-finite averaged gradient does
            (see :mod:`.nonfinite`).
    """

    def __init__(self, params, names, process_group=None, bucket_cap_mb=25, find_unused_parameters=False,
                 gradient_as_bucket_view=False, gradient_sharding=False, nonfinite="skip"):
        self.params, self.names, self.group = params, names, process_group
        self.nonfinite = None if nonfinite == "ignore" else NonFiniteCheck(self, nonfinite)
        self.world_size = dist.get_world_size(process_group)
        self.cap = int(bucket_cap_mb * 1024 * 1024)
        self.find_unused = find_unused_parameters
        self.as_view = gradient_as_bucket_view
        self.sharding = gradient_sharding
        self.owners = None  # with gradient_sharding: per parameter, the group rank keeping its gradient
        self.layouts = {}  # with gradient_sharding: bucket index -> its shard_layout (for these owners)
        # with gradient_sharding: parameter index -> (a weak reference to the .grad written, its
        # _version then); weak: a .grad that zero_grad dropped must not stay alive here
        self.written = {}
        self.strategy = None  # how the current backward reduces the buckets (see bucket_reduction)
        self.hook_state, self.hook = process_group, allreduce_hook
        self.div_factor = self.world_size
        self.sync = True  # whether the coming backward reduces (False under no_sync)
        self.rebuilt, self.iterations = False, 0
        self.ready_order = None  # the order gradients became ready in the first synchronized pass
        self.unused = ()  # indices of parameters forward did not use
        self.stats, self.device_wait = {}, None
        self.stragglers = StragglerWatch(process_group)  # every N passes: the ranks' phase times, with the buckets
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
        # gradient sharding sends from buffers of its own layout, alive only while a bucket is reduced
        self.buckets = [Bucket(k, idx, self.params, allocate=not self.sharding, flag=self.nonfinite is not None)
                        for k, idx in enumerate(assign_buckets(self.params, order, caps))]
        self.layouts = {}
        self.slot_of = {}  # parameter index -> (its bucket, its slot there)
        for b in self.buckets:
            for k, i in enumerate(b.indices):
                self.slot_of[i] = (b, k)

    def bucket_indices(self):
        """The parameter indices of each bucket, in launch order."""
        return [list(b.indices) for b in self.buckets]

    # ---- iteration state ----------------------------------------------------------------
    def _reset(self):
        self.in_backward = False
        self.ready = [False] * len(self.params)
        self.num_ready, self.next_launch = 0, 0
        self.order, self.launches = [], []
        self.used_work = None
        for b in self.buckets:
            b.pending = len(b.indices)

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
        for b in self.buckets[:self.next_launch]:
            self.strategy.finish(b)
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
        if self.sharding and self.world_size > 1:
            self._check_owners()
            self._check_zeroed()
            self.strategy = ShardedReduceScatter(self)
        else:
            self.strategy = choose_strategy(self)  # per backward: join may change the divisor
        if self.nonfinite is not None:
            self.nonfinite.begin()
        self.in_backward = True
        self.t_begin = time.perf_counter()
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
        bucket, slot = self.slot_of[i]
        self.strategy.stage(bucket, slot, self.params[i].grad)
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
        with labelled(f"bucket {bucket.index}"):  # names its all-reduce in the trace (DTRAIN_TRACE)
            self.strategy.launch(bucket)

    def _finalize(self):
        t_end = time.perf_counter()
        # on a GPU the waits below only make the stream wait: the stream's own clock measures it
        timed = self._device_mark() if self.buckets and is_cuda_array(self.params[0].array) else None
        used = None
        if self.used_work is not None:
            used, work = self.used_work
            work.wait()
            used = asnumpy(used)
        self.stragglers.launch(self.params[0].array)
        averages = [self.strategy.finish(b) for b in self.buckets]  # where each bucket's averages are
        self.stragglers.finish()
        t_done = time.perf_counter()
        if timed is not None:
            timed = (timed, self._device_mark())
        for b, where in zip(self.buckets, averages):
            self.strategy.write_back(b, where, used)
        self.stats = {"backward_s": t_end - self.t_begin, "wait_s": t_done - t_end,
                      "launches": list(self.launches), "buckets": len(self.buckets),
                      "end": t_end, "done": t_done}
        self.device_wait = timed  # (event after backward, event after the waits): see wait_seconds
        if not self.rebuilt:
            self.ready_order = list(self.order)
        self._end_iteration()

    def _end_iteration(self):
        """Count the iteration and reset for the next; a non-finite one is then skipped or raised."""
        verdict = self.nonfinite.verdict(self.iterations) if self.nonfinite is not None else None
        self.iterations += 1
        self._reset()
        if verdict is not None:
            self.nonfinite.act(verdict)

    def _device_mark(self):
        """A timing event recorded now on the current stream of the buckets' device."""
        with cupy.cuda.Device(self.params[0].array.device.id):
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

    # ---- gradient sharding (ZeRO-2) ------------------------------------------------------
    def set_gradient_owners(self, owner_of, process_group=None):
        """With ``gradient_sharding``: which group rank keeps each parameter's averaged
        gradient. ``owner_of`` maps ``id(parameter)`` to a rank of ``process_group``, which
        must be this reducer's group (the same ranks); parameters it does not list have no
        owner, and a backward then raises naming them. ZeroRedundancyOptimizer calls it with
        its partition, so the gradient shards are the ones its ranks step."""
        if _global_ranks(process_group) != _global_ranks(self.group):
            raise ValueError(f"DistributedDataParallel(gradient_sharding=True): the optimizer's process group "
                             f"(global ranks {_global_ranks(process_group)}) must be the DDP's (global ranks "
                             f"{_global_ranks(self.group)})")
        self.owners = [owner_of.get(id(p)) for p in self.params]
        self.layouts = {}

    def _check_owners(self):
        if self.owners is None:
            raise RuntimeError(
                "DistributedDataParallel(gradient_sharding=True) needs a ZeroRedundancyOptimizer over its "
                "parameters before the first backward: it decides which rank keeps each gradient. Build it "
                "after wrapping, e.g. ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=Adam, lr=...)")
        missing = [self.names[i] for i, rank in enumerate(self.owners) if rank is None]
        if missing:
            raise RuntimeError(
                f"DistributedDataParallel(gradient_sharding=True): {len(missing)} parameters belong to no "
                f"ZeroRedundancyOptimizer, so no rank would keep their gradients: {', '.join(missing)}. Give the "
                f"optimizer every parameter of the module that requires grad")

    def _check_zeroed(self):
        """Refuse a backward that accumulates onto the averages of the previous one: DDP would
        sum the ranks' gradients on top of them, but with sharded gradients the other ranks no
        longer hold theirs (``zero_grad`` sets .grad to None or zeroes it, a new version)."""
        kept = [self.names[i] for i, (grad, version) in self.written.items()
                if grad() is not None and self.params[i].grad is grad() and grad()._version == version]
        if kept:
            raise RuntimeError(
                f"DistributedDataParallel(gradient_sharding=True): {', '.join(kept)} still hold the averaged "
                f"gradients of the previous backward: call optimizer.zero_grad() before each backward. The other "
                f"ranks no longer hold their shares, so accumulating onto averages across synchronized backwards "
                f"cannot give DDP's sum; accumulate micro-batches under no_sync() instead")

    # ---- join: a rank without data mirrors the others' reduction ----------------------
    def shadow_backward(self):
        """Take part in one iteration's reduction with zero gradients (a joined rank)."""
        used = self._launch_used_bitmap(range(len(self.params))) if self.find_unused else None
        if self.nonfinite is not None:
            self.nonfinite.begin()
        futures = []
        in_place = self.hook is allreduce_hook and not self.as_view  # the active ranks' InPlaceCoalesced
        for b in self.buckets:
            b.message[...] = 0
            if in_place and self.nonfinite is not None:
                # the same call as theirs (the check's flag is not in Bucket.message's layout
                # there): the slots as the arrays, so what the check sees maps to the same parameters
                work = dist.all_reduce_coalesced([v.reshape(-1) for v in b.views], group=self.group, async_op=True,
                                                 finite_check=self.nonfinite.probe(b, b.buffer))
                futures.append(Future(work, b.buffer))
                continue
            if self.hook is allreduce_hook:  # the whole message: the active ranks' flag slot too
                futures.append(Future(dist.all_reduce(b.message, group=self.group, async_op=True), b.buffer))
                continue
            is_last = b.index == len(self.buckets) - 1
            futures.append(self.hook(self.hook_state, GradBucket(b, self.params, is_last, self.div_factor)))
        self.stragglers.launch(self.params[0].array)  # as the ranks with data do
        if used is not None:
            used[1].wait()
        for b, future in zip(self.buckets, futures):
            averages = future.wait()
            if self.nonfinite is not None:  # as the active ranks see it: they may all-gather the culprit
                if in_place:
                    self.nonfinite.probed(b)
                elif self.hook is allreduce_hook:
                    self.nonfinite.reduced(b, b.flag)
                else:
                    self.nonfinite.reduced_averages(b, b.split(averages))
        self.stragglers.finish()
        if not self.rebuilt:
            self.ready_order = None
        self._end_iteration()

    def remove_hooks(self):
        """Detach from the parameters: their backward no longer reaches this reducer."""
        for h in self.handles:
            h.remove()
        _live.discard(self)


def _global_ranks(group):
    """The global ranks of ``group`` (None: the world), in group-rank order."""
    n = dist.get_world_size(group)
    return list(range(n)) if group is None else [dist.get_global_rank(group, r) for r in range(n)]


def gradient_sharding_reducers(params):
    """The live reducers with ``gradient_sharding`` that reduce any of ``params``: those a
    ZeroRedundancyOptimizer over ``params`` tells its partition (see
    :meth:`Reducer.set_gradient_owners`)."""
    ids = {id(p) for p in params}
    return [r for r in list(_live) if r.sharding and any(id(p) in ids for p in r.params)]
