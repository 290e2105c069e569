"""ZeroRedundancyOptimizer: optimizer state sharded across the ranks (ZeRO stage 1), as
``torch.distributed.optim.ZeroRedundancyOptimizer``.

Each parameter belongs to one rank (a greedy partition by size, the same on every rank); a
rank keeps the optimizer state of its own parameters only, in a local instance of
``optimizer_class``, and steps only them. The updated parameters then travel from their
owners: the parameters of one dtype are laid out in one flat buffer, rank 0's first, then
rank 1's, ..., and each rank's segment is one broadcast from that rank (not one per
parameter, whichever ``parameters_as_bucket_view`` says).

With ``DistributedDataParallel(..., gradient_sharding=True)`` (ZeRO-2) the partition is also
the wrapper's: the optimizer hands it over when built (and when a group is added), and each
rank then receives the averaged gradients of its own parameters only.
"""
import contextlib
import math

from ... import comm as dist
from ...optim import Optimizer
from ...parallel.reducer import gradient_sharding_reducers
from ...tensor import Tensor, backend, from_numpy
from ...tensor.backend import get_array_module
from ..sharded_grad import mark_partial


class ZeroRedundancyOptimizer(Optimizer):
    """Wrap an optimizer class so that each rank holds about ``1 / world_size`` of its state.

    Parameters are assigned to ranks largest first, each to the rank with the fewest elements
    so far (PyTorch's sorted-greedy partition), so no rank holds more than the average plus
    the largest parameter. ``step`` updates this rank's parameters with its local optimizer
    (``self.optim``) and then broadcasts every rank's segment of each dtype's flat buffer
    from its owner, so all replicas leave the step equal.

    Args:
        params: an iterable of Tensors or of parameter-group dicts, the same on every rank
            of the group and in the same order.
        optimizer_class: the local optimizer, a subclass of ``dtrain.optim.Optimizer``.
        process_group: the ranks sharing the state (default: the world).
        parameters_as_bucket_view: if True, each parameter's data becomes a view of the flat
            buffer its dtype's broadcasts use, so a step copies nothing; if False, the
            parameters keep their own arrays and each step packs this rank's segment and
            unpacks the others' through a temporary buffer. (Replacing a parameter's data
            afterwards, e.g. ``model.double()``, cuts it off the buffer: build the optimizer
            after such conversions.)
        overlap_with_ddp: overlapping the step with DDP's gradient reduction is not
            supported: True raises NotImplementedError.
        **defaults: the local optimizer's hyperparameters (``lr=...``).

    Over the parameters of a ``DistributedDataParallel(..., gradient_sharding=True)``, build
    it after wrapping: it gives the wrapper its partition, so the gradients each rank keeps
    after backward are those of the parameters it steps (the others' ``.grad`` are None).

    All parameters must be on one device. ``step``, ``add_param_group``,
    ``consolidate_state_dict`` and ``load_state_dict`` are collective-order sensitive: call
    them on every rank of the group.

    Example:
        >>> ddp = DistributedDataParallel(model)
        >>> opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=dtrain.optim.Adam, lr=0.01)
        >>> ddp(x).sum().backward(); opt.step()
        >>> opt.consolidate_state_dict(to=0)
        >>> if dist.get_rank() == 0: dtrain.save(opt.state_dict(), "opt.dtr")
    """

    def __init__(self, params, optimizer_class, process_group=None, parameters_as_bucket_view=False,
                 overlap_with_ddp=False, **defaults):
        if overlap_with_ddp:
            raise NotImplementedError("ZeroRedundancyOptimizer(overlap_with_ddp=True) is not supported: dtrain's "
                                      "DDP has no hook that runs the step per gradient bucket; leave it False "
                                      "and call step() after backward")
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"ZeroRedundancyOptimizer: optimizer_class must be a subclass of dtrain.optim.Optimizer "
                            f"(e.g. dtrain.optim.Adam), got {optimizer_class!r}")
        params = _nonempty(params)
        self.initialized = False  # add_param_group partitions only once the constructor is done
        super().__init__(params, defaults)
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group)
        self.rank = dist.get_rank(process_group)
        if self.rank < 0:
            raise ValueError("ZeroRedundancyOptimizer: this rank is not a member of process_group; build it only "
                             "on the group's ranks")
        self.parameters_as_bucket_view = parameters_as_bucket_view
        self._owners = [dist.get_global_rank(process_group, r) if process_group is not None else r
                        for r in range(self.world_size)]
        self._device = self._check_one_device()
        self._partition = self._partition_parameters()
        self.optim = optimizer_class([self._local_group(g) for g in range(len(self.param_groups))], **defaults)
        _copy_hyperparameters(self.optim.param_groups, self.param_groups)
        self._buckets = self._build_buckets()
        self._share_partition()
        self._consolidated = None  # {global index: state} on the rank that consolidate_state_dict sent it to
        self.initialized = True

    # ---- the partition -----------------------------------------------------------------
    def _partition_parameters(self):
        """``partition[rank][group]``: the parameters of each group that ``rank`` owns. Group by
        group, largest first (a stable sort: ties keep their order), each to the rank with the
        fewest elements so far (the lowest rank on a tie), counting over all groups, so the
        parameters of earlier groups keep their owners when a group is added."""
        partition = [[[] for _ in self.param_groups] for _ in range(self.world_size)]
        sizes = [0] * self.world_size
        for g, group in enumerate(self.param_groups):
            for p in sorted(group["params"], key=lambda t: t.numel(), reverse=True):
                rank = sizes.index(min(sizes))
                partition[rank][g].append(p)
                sizes[rank] += p.numel()
        return partition

    def _local_group(self, g):
        """Group ``g`` as this rank's optimizer sees it: its hyperparameters, this rank's
        parameters of it (maybe none)."""
        group = {k: v for k, v in self.param_groups[g].items() if k not in ("params", "param_names")}
        group["params"] = self._partition[self.rank][g]
        return group

    def _check_one_device(self):
        """The one device of all the parameters; ValueError naming each device if there are more."""
        devices = {}  # device -> (the position of its first parameter, that parameter's device)
        for i, p in enumerate(p for group in self.param_groups for p in group["params"]):
            devices.setdefault(str(p.device), (i, p.device))
        if len(devices) > 1:
            found = ", ".join(f"{d} (first at parameter {i})" for d, (i, _) in devices.items())
            raise ValueError(f"ZeroRedundancyOptimizer needs all parameters on one device, got parameters on "
                             f"{found}: move the model to one device first")
        return next(iter(devices.values()))[1]

    def add_param_group(self, param_group):
        """Add a parameter group (as ``Optimizer.add_param_group``); its parameters are
        partitioned over the ranks, those of the earlier groups keep their owners. Call it on
        every rank."""
        super().add_param_group(param_group)
        if not self.initialized:  # the constructor's own groups: partitioned once, after
            return
        self._check_one_device()
        self._partition = self._partition_parameters()
        self.optim.add_param_group(self._local_group(len(self.param_groups) - 1))
        # the new group's settings the local optimizer filled in; not the older groups': a
        # scheduler may have changed theirs here since the last step passed them on
        _copy_hyperparameters(self.optim.param_groups[-1:], self.param_groups[-1:])
        self._buckets = self._build_buckets()
        self._share_partition()

    def _share_partition(self):
        """Tell the DDP wrappers with ``gradient_sharding`` over these parameters which rank
        keeps each gradient: the rank that steps it."""
        owner_of = {id(p): rank for rank, groups in enumerate(self._partition) for params in groups for p in params}
        for reducer in gradient_sharding_reducers(p for group in self.param_groups for p in group["params"]):
            reducer.set_gradient_owners(owner_of, self.process_group)
            # each gradient is then on its owner only: clip_grad_norm_ sums the ranks' parts of the norm
            mark_partial([p for p in reducer.params if id(p) in owner_of], self.process_group)

    # ---- the flat buffers and the broadcasts -----------------------------------------
    def _build_buckets(self):
        """One bucket per dtype: ``(params, starts, bounds)``, the parameters of that dtype in
        rank order (each rank's in partition order), each one's offset in the flat buffer, and
        each rank's segment ``(begin, end)``; with ``parameters_as_bucket_view``, also the
        buffer itself, which the parameters' data then views."""
        by_dtype = {}  # dtype -> the parameters of that dtype each rank owns
        for rank, rank_groups in enumerate(self._partition):
            for p in (p for params in rank_groups for p in params):
                by_dtype.setdefault(p.dtype, [[] for _ in range(self.world_size)])[rank].append(p)
        buckets = []
        for per_rank in by_dtype.values():
            params, starts, bounds, offset = [], [], [], 0
            for owned in per_rank:
                begin = offset
                for p in owned:
                    params.append(p)
                    starts.append(offset)
                    offset += p.numel()
                bounds.append((begin, offset))
            buffer = _new_buffer(params, offset) if self.parameters_as_bucket_view else None
            if buffer is not None:
                with backend.device_guard(self._device):
                    for p, start in zip(params, starts):
                        buffer[start:start + p.numel()] = p.array.reshape(-1)
                        p.data = buffer[start:start + p.numel()].reshape(p.shape)
            buckets.append(_Bucket(params, starts, bounds, buffer))
        return buckets

    def _sync_params(self):
        """Every rank's updated parameters to every rank: one broadcast per rank per dtype,
        all in flight together, from each segment's owner."""
        if self.world_size == 1:
            return
        with backend.device_guard(self._device):  # CuPy copies run on the current device
            flats = [b.buffer if b.buffer is not None else self._pack(b) for b in self._buckets]
            works = [dist.broadcast(flat[begin:end], src=self._owners[rank], group=self.process_group,
                                    async_op=True)
                     for b, flat in zip(self._buckets, flats) for rank, (begin, end) in enumerate(b.bounds)
                     if end > begin]
            for work in works:
                work.wait()
            for b, flat in zip(self._buckets, flats):
                if b.buffer is None:
                    self._unpack(b, flat)

    def _pack(self, bucket):
        """A temporary flat buffer holding this rank's own parameters in its segment."""
        flat = _new_buffer(bucket.params, bucket.bounds[-1][1])
        begin, end = bucket.bounds[self.rank]
        for p, start in zip(bucket.params, bucket.starts):
            if begin <= start < end:
                flat[start:start + p.numel()] = p.array.reshape(-1)
        return flat

    def _unpack(self, bucket, flat):
        """The other ranks' parameters, from their segments of ``flat`` into their arrays."""
        begin, end = bucket.bounds[self.rank]
        for p, start in zip(bucket.params, bucket.starts):
            if not begin <= start < end:
                p.array[...] = flat[start:start + p.numel()].reshape(p.shape)

    # ---- the step --------------------------------------------------------------------
    def step(self, closure=None):
        """Update this rank's parameters with the local optimizer (hyperparameters changed in
        ``param_groups``, e.g. by an LR scheduler, are passed on first), then broadcast every
        rank's from its owner. Returns ``closure()``'s loss, if a closure is given."""
        _copy_hyperparameters(self.param_groups, self.optim.param_groups)
        loss = self.optim.step() if closure is None else self.optim.step(closure)
        _copy_hyperparameters(self.optim.param_groups, self.param_groups)
        self._sync_params()
        return loss

    # ---- state_dict ------------------------------------------------------------------
    def _global_index(self):
        """Parameter -> its position over all groups (the index a full state_dict uses)."""
        return {id(p): i for i, p in enumerate(p for group in self.param_groups for p in group["params"])}

    def consolidate_state_dict(self, to=0):
        """Gather every rank's optimizer state on rank ``to`` of the group (CPU copies), for
        ``state_dict`` there. Call it on every rank.

        A checkpoint is then one file, rank ``to``'s ``dtrain.save(opt.state_dict(), path)``
        (atomic and checksummed), in a plain optimizer's layout rather than one file per rank:
        ``load_state_dict`` re-shards it at any world size (or a plain optimizer loads it)."""
        if not 0 <= to < self.world_size:
            raise ValueError(f"consolidate_state_dict: to={to} is not a rank of the group (0 to "
                             f"{self.world_size - 1})")
        _copy_hyperparameters(self.param_groups, self.optim.param_groups)
        index = self._global_index()
        mine = {index[id(p)]: {name: _host(v) for name, v in s.items()} for p, s in self.optim.state.items()}
        if self.world_size == 1:
            everyone = [mine]
        else:
            everyone = [None] * self.world_size if self.rank == to else None
            dist.gather_object(mine, everyone, dst=self._owners[to], group=self.process_group)
        if self.rank == to:
            merged = {k: v for part in everyone for k, v in part.items()}
            self._consolidated = {k: {name: _tensor(v) for name, v in merged[k].items()} for k in sorted(merged)}
        else:
            self._consolidated = None

    def state_dict(self):
        """The full optimizer state in PyTorch's layout (as a plain ``optimizer_class`` over
        all the parameters would return it), as of the last ``consolidate_state_dict`` to
        this rank; RuntimeError on a rank it was not consolidated to."""
        if self._consolidated is None:
            raise RuntimeError(f"Optimizer state has not been consolidated on this rank. Please call "
                               f"`consolidate_state_dict(to={self.rank})` on all ranks beforehand if you "
                               f"meant to save the global state.")
        full = super().state_dict()
        full["state"] = dict(self._consolidated)
        return full

    def load_state_dict(self, state_dict):
        """Load a full state (``state_dict()``'s, or a plain optimizer's over the same
        parameters in the same groups), saved at any world size: each rank keeps the entries
        of the parameters it owns. The saved hyperparameters replace the current ones."""
        saved_groups = state_dict["param_groups"]
        shapes = [len(g["params"]) for g in saved_groups]
        if shapes != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups of {shapes} parameters, "
                             f"but the optimizer has {len(self.param_groups)} of "
                             f"{[len(g['params']) for g in self.param_groups]}")
        unlisted = set(state_dict["state"]) - {k for saved in saved_groups for k in saved["params"]}
        if unlisted:
            raise ValueError(f"loaded state dict has state for parameters {sorted(unlisted)}, which none of its "
                             f"parameter groups lists")
        mine = {id(p): i for i, p in enumerate(p for params in self._partition[self.rank] for p in params)}
        local_state = {}
        for group, saved in zip(self.param_groups, saved_groups):
            for k, p in zip(saved["params"], group["params"]):
                if k in state_dict["state"] and id(p) in mine:
                    local_state[mine[id(p)]] = state_dict["state"][k]
        local_groups, first = [], 0
        for saved, params in zip(saved_groups, self._partition[self.rank]):
            hyper = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            local_groups.append({**hyper, "params": list(range(first, first + len(params)))})
            first += len(params)
        self.optim.load_state_dict({"state": local_state, "param_groups": local_groups})
        _copy_hyperparameters(self.optim.param_groups, self.param_groups)


class _Bucket:
    """One dtype's layout: its parameters, their offsets, each rank's segment, and the
    persistent flat buffer (``parameters_as_bucket_view``) or None."""

    def __init__(self, params, starts, bounds, buffer):
        self.params, self.starts, self.bounds, self.buffer = params, starts, bounds, buffer


def _new_buffer(params, size):
    """An uninitialized flat array of ``size`` elements of ``params``' dtype, on their device."""
    first = params[0].array
    with backend.switch_to((first,)) or contextlib.nullcontext():
        return get_array_module(first).empty(size, first.dtype)


def _nonempty(params):
    """``params`` with every group's parameters in a list (an iterator is read once), and a
    clear error when there is no parameter at all; what is no iterable of parameters or
    groups is left for ``Optimizer`` to refuse."""
    if isinstance(params, (Tensor, set, dict)) or not hasattr(params, "__iter__"):
        return params
    params = [{**g, "params": [g["params"]] if isinstance(g["params"], Tensor) else list(g["params"])}
              if isinstance(g, dict) and "params" in g else g for g in params]
    if sum(len(g["params"]) if isinstance(g, dict) and "params" in g else 1 for g in params) == 0:
        raise ValueError("ZeroRedundancyOptimizer got an empty parameter list: pass the model's parameters "
                         "(e.g. model.parameters()), or groups that hold some")
    return params


def _copy_hyperparameters(source, destination):
    """Every setting of each group but its parameters, from ``source`` to ``destination``."""
    for src, dst in zip(source, destination):
        dst.update({k: v for k, v in src.items() if k not in ("params", "param_names")})


def _host(value):
    """One state entry as it travels and is kept after consolidation: arrays on the host."""
    array = getattr(value, "array", None)
    return backend.asnumpy(array).copy() if array is not None else value


def _tensor(value):
    return from_numpy(value) if hasattr(value, "dtype") and hasattr(value, "shape") else value
