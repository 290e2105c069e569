"""DistributedDataParallel: one model replica per process, gradients averaged across ranks."""
import contextlib

import numpy

from .. import comm as dist
from ..comm.topology import hosts_of
from ..nn.module import Module
from ..tensor import Tensor, backend, is_grad_enabled, no_grad, reachable_leaves
from ..tensor.backend import get_array_module
from ..timing import phase
from .micro_shards import micro_shards_for
from .nonfinite import check_mode
from .reducer import Reducer


class DistributedDataParallel(Module):
    """Data parallelism across processes, as ``torch.nn.parallel.DistributedDataParallel``.

    Each rank holds a replica of ``module`` and runs forward and backward on its own part of
    the batch; during backward the gradients are averaged across the ranks in buckets whose
    all-reduces overlap with the rest of backward (see :mod:`.reducer`), so after
    ``backward()`` every rank holds the same ``.grad`` and an optimizer step keeps the
    replicas identical: N ranks with per-rank batches of B train as one process with the
    concatenated batch of N x B.

    The contract, as PyTorch's:

    * Construction, forward and backward are sync points: every rank of the group must
      construct the wrapper and run each forward and backward, in the same order.
    * Every rank must register the same parameters (names, shapes, dtypes) in the same
      order; the constructor checks it and raises an error naming the first difference.
      Rank 0's parameters and buffers are then broadcast to all ranks.
    * Every parameter must receive a gradient in each backward, unless
      ``find_unused_parameters=True``; else the next forward raises an error naming them.
    * Give each rank different data: use ``dtrain.data.DistributedSampler`` and call its
      ``set_epoch(epoch)`` at the start of every epoch so the shuffling changes.
    * Ranks with fewer batches must train under :meth:`join`, or the others hang.

    Args:
        module: the model.
        device_ids: None on CPU; on a GPU, ``[i]`` (or None) for the device the module is on.
        output_device: accepted for compatibility; outputs stay on the module's device.
        broadcast_buffers: copy rank 0's buffers (e.g. BatchNorm's running statistics) to
            every rank at the start of each forward.
        process_group: the group to average over (None: the default group).
        bucket_cap_mb: bucket size limit in MiB (the first bucket is 1 MiB at most).
        find_unused_parameters: find, after each forward, the parameters its output does not
            depend on and reduce them as zeros (costs a graph traversal per forward).
        gradient_as_bucket_view: make ``.grad`` views into the buckets (saves memory and a
            copy; ``.grad`` then must not be replaced by a tensor of another layout).
        static_graph: accepted for compatibility; buckets are rebuilt once in either case.
        gradient_sharding: (dtrain; ZeRO-2) reduce-scatter each bucket instead of all-reducing
            it: after backward a rank holds the averaged gradients of the parameters it owns
            and ``.grad`` is None on all others, about 1/N of the gradient memory. The owners
            are the partition of a ``ZeroRedundancyOptimizer`` built over this wrapper's
            parameters (after wrapping, before the first backward), so each rank steps exactly
            the gradients it holds; the optimizer tells the wrapper its partition itself.
            Call ``zero_grad()`` between steps: a rank no longer holds the others' gradients,
            so accumulating onto the averages of an earlier backward cannot be DDP's sum
            (backward raises; accumulating under ``no_sync()`` is fine). Not with a comm hook,
            ``find_unused_parameters`` or :meth:`join`.
        micro_shard_size: (dtrain; deterministic training) cut each rank's batch into
            micro-shards of this many rows, run the module once per micro-shard and sum the
            micro-shard gradients exactly across ranks (fixed point): with the same global
            batch and seed, the gradients are the same bits at 1, 2 or 4 ranks (see
            :mod:`dtrain.parallel.micro_shards` and docs/reproducibility.md). Each rank's batch
            must be a whole number of micro-shards; not with a comm hook, ``gradient_sharding``
            or :meth:`join`.
        nonfinite: (dtrain) what a NaN or inf gradient on any rank does, decided alike on
            every rank from a flag each bucket's all-reduce carries (see
            :mod:`dtrain.parallel.nonfinite`): ``"skip"`` (default) logs one line from rank 0
            naming the step, the first rank and its parameter (``step 7: non-finite gradient
            (nan) on rank 1 in 'fc.weight'; all ranks skip this step``) and makes the next
            ``optimizer.step()`` update nothing (every ``.grad`` of an optimizer holding these
            parameters is set to None first: parameters, momentum and Adam's step count stay as
            they were), so the replicas never diverge; ``"raise"`` raises
            ``dtrain.parallel.nonfinite.NonFiniteGradientError`` with that message from
            ``backward()`` on every rank; ``"ignore"``: no check (the step applies the
            non-finite averages, as PyTorch's DDP). Costs one read of the gradients per step
            (and, on a GPU, one read of the flags to the host). Not applied with
            ``micro_shard_size`` (its exact sums turn a non-finite gradient into NaN).

    PyTorch's DDP has no gradient-sharding option; its nearest spellings are FSDP's
    ``ShardingStrategy.SHARD_GRAD_OP``, which also shards parameters between steps (another
    contract), and the boolean options beside it here (``gradient_as_bucket_view``): hence a
    boolean, named for what it shards.

    Example:
        >>> dist.init_process_group()               # under mpiexec -n 4 python train.py
        >>> model = DistributedDataParallel(Net())
        >>> loss_fn(model(x), y).backward()         # .grad is now the average over ranks
        >>> opt.step()
        >>> sharded = DistributedDataParallel(Net(), gradient_sharding=True)             # ZeRO-2
        >>> opt = ZeroRedundancyOptimizer(sharded.parameters(), dtrain.optim.Adam, lr=1e-3)
    """

    def __init__(self, module, device_ids=None, output_device=None, broadcast_buffers=True, process_group=None,
                 bucket_cap_mb=25, find_unused_parameters=False, gradient_as_bucket_view=False,
                 static_graph=False, gradient_sharding=False, nonfinite="skip", micro_shard_size=None):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a dtrain.nn.Module, got {type(module).__name__}")
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel: the default process group has not been initialized; "
                               "call dtrain.comm.init_process_group() first")
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't have any parameter "
                               "that requires a gradient.")
        if bucket_cap_mb is None:
            bucket_cap_mb = 25
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        _check_device_ids(device_ids, named[0][1])
        check_mode(nonfinite)
        if gradient_sharding and find_unused_parameters:
            raise ValueError("DistributedDataParallel: gradient_sharding=True does not support "
                             "find_unused_parameters=True (the owners of unused parameters would get no "
                             "gradient); make every parameter take part in the loss, or shard no gradients")
        self.module = module
        self.device_ids, self.output_device = device_ids, output_device
        self.process_group = process_group
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view, self.static_graph = gradient_as_bucket_view, static_graph
        self.gradient_sharding = gradient_sharding
        self.require_backward_grad_sync = True
        self._join = None
        self._hook_registered = False

        self._verify_same_parameters(named)
        with no_grad():
            for t in [p for _, p in named] + list(module.buffers()):
                dist.broadcast(t, src=self._global_rank(0), group=process_group)
        names, params = [n for n, _ in named], [p for _, p in named]
        self.reducer = Reducer(params, names, process_group, bucket_cap_mb, find_unused_parameters,
                               gradient_as_bucket_view, gradient_sharding, nonfinite)
        self._micro = micro_shards_for(self, micro_shard_size, params, names)

    def _global_rank(self, group_rank):
        group = self.process_group
        return group_rank if group is None else dist.get_global_rank(group, group_rank)

    def _verify_same_parameters(self, named):
        signature = [(n, tuple(p.shape), str(p.dtype)) for n, p in named]
        n = dist.get_world_size(self.process_group)
        everyone = [None] * n
        dist.all_gather_object(everyone, signature, group=self.process_group)
        ref = everyone[0]
        for rank, sig in enumerate(everyone[1:], 1):
            if sig == ref:
                continue
            k = next((k for k, (a, b) in enumerate(zip(ref, sig)) if a != b), min(len(ref), len(sig)))
            raise RuntimeError(
                f"DistributedDataParallel: every rank must have the same parameters in the same order, but "
                f"parameter {k} differs: rank 0 has {_describe(ref, k)}, rank {rank} has {_describe(sig, k)} "
                f"(rank 0 has {len(ref)} parameters, rank {rank} has {len(sig)})"
                f"{hosts_of([self._global_rank(0), self._global_rank(rank)])}")

    # ---- forward ----------------------------------------------------------------------
    def forward(self, *inputs, **kwargs):
        self.reducer.check_finished()
        sync = is_grad_enabled() and self.require_backward_grad_sync
        src = 0
        if self._join is not None:
            src = self._join.notify(sync)
        self.reducer.maybe_rebuild()
        if self.broadcast_buffers:
            self._sync_buffers(src)
        if self._micro is not None and is_grad_enabled():
            with phase("forward"):
                return self._micro.run(self, inputs, kwargs, sync)
        with phase("forward"):
            output = self.module(*inputs, **kwargs)
        if is_grad_enabled():
            unused = self._unused_parameters(output) if self.find_unused_parameters and sync else ()
            self.reducer.prepare_for_backward(unused, sync)
        return output

    def _sync_buffers(self, src):
        """Copy the buffers of group rank ``src`` to every rank."""
        if dist.get_world_size(self.process_group) == 1:
            return
        root = self._global_rank(src)
        groups = {}  # one broadcast per dtype and device (a BatchNorm has 3 buffers of 2 dtypes)
        for b in self.module.buffers():
            groups.setdefault((b.dtype, str(b.device)), []).append(b)
        with no_grad():
            for bufs in groups.values():
                if len(bufs) == 1:
                    dist.broadcast(bufs[0], src=root, group=self.process_group)
                    continue
                xp = get_array_module(bufs[0].array)
                with backend.switch_to((bufs[0].array,)) or contextlib.nullcontext():
                    flat = xp.concatenate([b.array.reshape(-1) for b in bufs])
                    dist.broadcast(flat, src=root, group=self.process_group)
                    start = 0
                    for b in bufs:
                        b.array[...] = flat[start:start + b.array.size].reshape(b.array.shape)
                        start += b.array.size

    def _unused_parameters(self, output):
        """Indices of the reducer's parameters that ``output``'s graph does not reach."""
        used = {id(t) for t in reachable_leaves(list(_tensors(output)))}
        return [i for i, p in enumerate(self.reducer.params) if id(p) not in used]

    # ---- contexts and hooks -------------------------------------------------------------
    @contextlib.contextmanager
    def no_sync(self):
        """Skip the gradient all-reduce for forwards run inside: gradients accumulate locally,
        and the first backward after a forward outside the context reduces the sum.

        Example:
            >>> with ddp.no_sync():
            ...     loss_fn(ddp(x1), y1).backward()   # no communication
            >>> loss_fn(ddp(x2), y2).backward()       # reduces the gradients of both
        """
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def join(self, divide_by_initial_world_size=True, enable=True, throw_on_early_termination=False):
        """A context for uneven inputs: a rank that runs out of batches leaves the loop and, on
        leaving the context, takes part in the others' collectives (its gradients as zeros)
        until every rank is done, so no rank hangs.

        Args:
            divide_by_initial_world_size: divide the summed gradients by the world size
                (True, PyTorch's default: a rank without data counts as a zero gradient) or
                by the number of ranks that still had data in that iteration (False).
            enable: False makes the context do nothing.
            throw_on_early_termination: not supported (must be False).

        Inside the context every forward takes part in one small extra all-reduce. Forward
        and backward must not run other collectives (e.g. SyncBatchNorm), which a joined
        rank cannot mirror; each forward with grad enabled must be followed by a backward.

        Example:
            >>> with ddp.join():
            ...     for x, y in loader:          # ranks may have different numbers of batches
            ...         opt.zero_grad(); loss_fn(ddp(x), y).backward(); opt.step()
        """
        if self.gradient_sharding:
            raise NotImplementedError("DistributedDataParallel.join is not supported with gradient_sharding=True "
                                      "(a joined rank cannot mirror the reduce-scatters); give every rank the same "
                                      "number of batches")
        if throw_on_early_termination:
            raise NotImplementedError("DistributedDataParallel.join: throw_on_early_termination=True is not "
                                      "supported; use the default (joined ranks shadow the others)")
        return _Join(self, divide_by_initial_world_size, enable)

    def register_comm_hook(self, state, hook):
        """Reduce the buckets with ``hook(state, bucket) -> Future`` instead of the default
        all-reduce (see :mod:`dtrain.parallel.comm_hooks`). Call it once, before the first backward.

        Example:
            >>> from dtrain.parallel.comm_hooks import fp16_compress_hook
            >>> ddp.register_comm_hook(None, fp16_compress_hook)
        """
        if self.gradient_sharding:
            raise RuntimeError("register_comm_hook: a comm hook cannot be combined with gradient_sharding=True (the "
                               "buckets are reduce-scattered, not given to a hook); drop one of the two")
        if self._hook_registered:
            raise RuntimeError("register_comm_hook can only be called once")
        if self.reducer.iterations or self.reducer.in_backward:
            raise RuntimeError("register_comm_hook must be called before the first backward")
        if not callable(hook):
            raise TypeError(f"register_comm_hook: hook must be callable as hook(state, bucket), got {hook!r}")
        self.reducer.hook_state, self.reducer.hook = state, hook
        self._hook_registered = True

    def comm_stats(self):
        """Timings of the last synchronized backward: ``backward_s`` (first to last gradient
        hook), ``wait_s`` (time then blocked waiting for the buckets), ``launches``
        (``(bucket, seconds after the first hook)`` per launch, in launch order), ``buckets``,
        and ``end``/``done``: ``time.perf_counter()`` at the last hook and when the averages
        were in (comparable across the ranks of one machine). On a GPU, where the waits only
        make the stream wait (NCCL), ``wait_s`` is the device time from the end of backward to
        the averages, read from CUDA events: this call then synchronizes with the device."""
        stats = dict(self.reducer.stats)
        if stats:
            stats["wait_s"] = self.reducer.wait_seconds()
        return stats


class _Join:
    """The state of :meth:`DistributedDataParallel.join` for one wrapper."""

    def __init__(self, ddp, divide_by_initial_world_size, enable):
        self.ddp, self.by_initial, self.enable = ddp, divide_by_initial_world_size, enable

    def __enter__(self):
        if self.enable:
            self.ddp._join = self
        return self

    def _exchange(self, active, sync):
        """All-reduce who is still training and whether it reduces gradients; returns the
        group ranks still active and the sync flag, and sets the divisor for the iteration."""
        group = self.ddp.process_group
        n, rank = dist.get_world_size(group), dist.get_rank(group)
        flags = numpy.zeros(n + 1, numpy.int64)
        flags[rank] = active
        flags[n] = sync
        dist.all_reduce(flags, group=group)
        ranks = [r for r in range(n) if flags[r]]
        self.ddp.reducer.div_factor = n if self.by_initial or not ranks else len(ranks)
        return ranks, bool(flags[n])

    def notify(self, sync):
        """Called by an active rank's forward; returns the group rank whose buffers everyone takes."""
        return min(self._exchange(1, sync)[0])

    def __exit__(self, exc_type, exc, tb):
        if not self.enable:
            return False
        try:
            if exc_type is not None:
                return False  # a failing rank must not shadow: the comm excepthook ends the job
            ddp = self.ddp
            while True:
                ranks, sync = self._exchange(0, 0)
                if not ranks:
                    break
                ddp.reducer.maybe_rebuild()
                if ddp.broadcast_buffers:
                    ddp._sync_buffers(min(ranks))
                if sync:
                    ddp.reducer.shadow_backward()
        finally:
            self.ddp._join = None
            self.ddp.reducer.div_factor = self.ddp.reducer.world_size
        return False


def _check_device_ids(device_ids, param):
    if device_ids is None:
        return
    if not isinstance(device_ids, (list, tuple)) or len(device_ids) != 1:
        raise ValueError(f"DistributedDataParallel: device_ids must be None or a list of one device (the "
                         f"module's, one device per process), got {device_ids!r}")
    want = device_ids[0]
    index = param.device.index if param.is_cuda else None
    got = want if isinstance(want, int) else backend.resolve(backend.Device(want)).index
    if not param.is_cuda or got != index:
        raise ValueError(f"DistributedDataParallel: device_ids={device_ids!r} but the module's parameters are "
                         f"on {param.device}; move the module to that device first, or pass device_ids=None")


def _describe(signature, k):
    if k >= len(signature):
        return "no such parameter"
    name, shape, dtype = signature[k]
    return f"{name} of shape {list(shape)} and dtype {dtype}"


def _tensors(obj):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)
