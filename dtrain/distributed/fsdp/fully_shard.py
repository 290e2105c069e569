"""fully_shard: FSDP2's per-module sharding (ZeRO-3), as ``torch.distributed.fsdp.fully_shard``.

Applied bottom-up (each transformer block, then the root), each call makes one ParamGroup
of the parameters in the module's subtree that no earlier call owns. Its forward pre-hook
all-gathers them (waiting for a prefetch if one was launched), its forward hook reshards
them (``reshard_after_forward``) and hooks the outputs' gradients: the first of them to be
computed in backward all-gathers the group again. As each full parameter's gradient is
final, a post-accumulate-grad hook counts it off; the last one reduce-scatters the group's
gradients (averaged) into the shards' ``.grad`` and reshards. The root (an FSDP module no
other one contains) finds, after its forward, which full parameters its outputs reach, so
a group with unused parameters still reduces.

Prefetch: the root records the order in which the groups run forward in the first
training step; from then on each group's pre-forward launches the next group's all-gather
(``async_op=True``, on the comm thread) before its own forward computes, and each group's
pre-backward launches the all-gather of the group that ran before it in forward.
"""
import contextlib

from ...nn import Module, Parameter
from ...parallel import DistributedDataParallel
from ...tensor import Tensor, dtypes, is_grad_enabled, reachable_leaves
from ... import comm as dist
from . import nonfinite as nonfinite_check
from .mixed_precision import MixedPrecisionPolicy
from .param_group import SHARDED, ParamGroup


class FSDPModule(Module):
    """The class fully_shard mixes into a module's (``isinstance(m, FSDPModule)`` and
    ``isinstance(m, type_before)`` both hold). ``state_dict`` and ``load_state_dict`` are
    collective: call them on every rank."""

    # a Module subclass (not a plain mixin), so the mixed class's layout is the module's own:
    # Python refuses the __class__ swap otherwise

    def reshard(self):
        """Free this module's full parameters (the shards stay)."""
        self._fsdp_state.group.reshard()

    def unshard(self, async_op=False):
        """All-gather this module's full parameters (onto the module); with ``async_op`` only
        launch it: the module's next forward waits for it."""
        self._fsdp_state.group.start_unshard()
        if not async_op:
            self._fsdp_state.group.finish_unshard()

    def set_reshard_after_forward(self, reshard_after_forward):
        self._fsdp_state.reshard_after_forward = bool(reshard_after_forward)

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """The full (gathered) parameters and the buffers, in the module's own names, on every
        rank: what the module without fully_shard returns, so a checkpoint loads at any world
        size: copies of the gathered values (with ``keep_vars=True``, Parameters of their own
        over them; the module's full parameters are emptied when it returns)."""
        with gathered(self):
            result = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
            # copies: the gathered buffers' pages are given back at reshard (views would read zeros)
            flats = {id(g.installed) for g in _groups(self) if g.installed is not None}
            for k, v in result.items():
                if isinstance(v, Tensor) and id(_storage(v.array)) in flats:
                    copy = Tensor._wrap(v.array.copy())
                    result[k] = Parameter(copy, v.requires_grad) if keep_vars else copy
            return result

    def load_state_dict(self, state_dict, strict=True):
        """Load full tensors (``state_dict()``'s, or the unsharded module's): each rank keeps
        its shard of them. The whole subtree is gathered once while loading."""
        return load_full(self, lambda: super(FSDPModule, self).load_state_dict(state_dict, strict=strict))


@contextlib.contextmanager
def gathered(module):
    """The full parameters of ``module``'s sharded fully_shard groups (its subtree's),
    all-gathered in the shards' dtype (not the compute dtype) inside the block and freed
    after it. Collective. Yields the groups it gathered."""
    groups = [g for g in _groups(module) if g.state == SHARDED]
    for g in groups:
        g.unshard(g.dtype)
    try:
        yield groups
    finally:
        for g in groups:
            g.reshard()


def load_full(module, load):
    """Run ``load()`` (a load_state_dict of full tensors into ``module``) with every fully_shard
    group in ``module``'s subtree gathered in its shards' dtype, then keep each rank's shard
    of what it loaded. Collective. Returns ``load()``'s result."""
    groups = _groups(module)
    for g in groups:
        g.reshard()
        g.unshard(g.dtype)
    try:
        result = load()
        for g in groups:
            g.write_back()
        return result
    finally:
        for g in groups:
            g.reshard()


def shard_placements(module):
    """``{id(shard parameter): (its ParamGroup, its index there)}`` for every fully_shard group
    in ``module``'s subtree: where each shard's elements lie in the full parameter
    (``group.local_range(i)``, ``group.shapes[i]``)."""
    return {id(shard): (g, i) for g in _groups(module) for i, shard in enumerate(g.shards)}


class _State:
    """One fully_shard call's settings, its group and, on a root, the forward order."""

    def __init__(self, module, group, reshard_after_forward, nonfinite):
        self.module, self.group, self.reshard_after_forward = module, group, reshard_after_forward
        self.nonfinite = nonfinite  # None: the tree's other calls', else "skip"
        self.check = None  # on a root: its TreeCheck (None under "ignore"); built at its first forward
        self.checked = None  # on a root: the ids of the groups self.check covers
        self.is_root = True  # until a fully_shard call on an ancestor takes it in
        self.root = self
        self.order, self.order_done = [], False  # the groups' states in forward order (kept on the root)


_CLASSES = {}  # the original class -> its FSDP subclass


def fully_shard(module, *, mesh=None, reshard_after_forward=True, mp_policy=MixedPrecisionPolicy(),
                offload_policy=None, nonfinite=None):
    """Shard ``module``'s parameters over the ranks (FSDP2 / ZeRO-3): apply it to each block,
    then to the root. Returns ``module``, now also an :class:`FSDPModule`.

    Args:
        module: a Module whose parameters (those not already owned by a fully_shard call on
            a submodule) share one dtype.
        mesh: the process group to shard over (a ProcessGroup stands for FSDP2's 1-D
            DeviceMesh; None: the world).
        reshard_after_forward: free the full parameters after forward (all-gathered again for
            backward); False keeps them until backward is done (less communication, more
            memory).
        mp_policy: a :class:`MixedPrecisionPolicy` (param_dtype, reduce_dtype, ...).
        offload_policy: only None (no CPU offload).
        nonfinite: "skip", "raise" or "ignore", as DistributedDataParallel's (a dtrain
            keyword; see :mod:`.nonfinite` for why a keyword): a NaN or inf in any rank's
            gradient makes every rank skip the next optimizer step (logging the rank, the
            parameter and the step) or raise NonFiniteGradientError. None (default): the
            value of the tree's other calls (pass it to the root's), else "skip".

    After it, ``module.parameters()`` are this rank's shards (1-D, 1/N of the flat group
    padded to a multiple of N): build the optimizer after fully_shard. The shards are 1-D (no
    DTensor): choose parameter groups by name (``named_parameters()`` keeps the names), not by
    ``p.dim()``; ``nn.utils.clip_grad_norm_`` over them gives the whole gradients' norm
    (collective: the ranks' parts are summed).
    Forward and backward are collective (every rank, same order); gradients arrive averaged
    over the ranks in the shards' ``.grad``. ``state_dict()`` returns full tensors
    (collective); the optimizer's own state_dict is this rank's shards' (it loads back at the
    same world size only): for one that loads at any world size, use
    ``dtrain.distributed.checkpoint.state_dict.get_optimizer_state_dict`` with
    ``StateDictOptions(full_state_dict=True)``. Activation checkpointing works around a whole fully_shard
    module (apply fully_shard to a wrapper whose forward is ``checkpoint(block, x)``; the
    recomputation runs while backward has the parameters gathered), not around part of one
    (those parameters' gradients would come after the group was reduced: a RuntimeError).

    Example:
        >>> for block in model.blocks:
        ...     fully_shard(block)
        >>> fully_shard(model)
        >>> opt = dtrain.optim.Adam(model.parameters(), lr=1e-3)
    """
    _check_arguments(module, mesh, mp_policy, offload_policy)
    nonfinite_check.validate(nonfinite)
    registrations = _owned_registrations(module)
    _check_one_dtype(module, registrations)
    state = _State(module, ParamGroup(registrations, mesh, mp_policy), bool(reshard_after_forward), nonfinite)
    for sub in module.modules():
        if sub is not module and isinstance(sub, FSDPModule):
            sub._fsdp_state.is_root = False
    object.__setattr__(module, "_fsdp_state", state)
    module.register_forward_pre_hook(_pre_forward, prepend=True)
    module.register_forward_hook(_post_forward)
    cls = type(module)
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"FSDP{cls.__name__}", (FSDPModule, cls), {"__module__": cls.__module__})
    module.__class__ = _CLASSES[cls]
    return module


def _check_arguments(module, mesh, mp_policy, offload_policy):
    if not isinstance(module, Module):
        raise TypeError(f"fully_shard expects a dtrain.nn.Module, got {type(module).__name__}")
    if isinstance(module, FSDPModule):
        raise ValueError(f"fully_shard was already applied to this {type(module).__name__}")
    wrapped = [name or "the module itself" for name, m in module.named_modules()
               if isinstance(m, DistributedDataParallel)]
    if wrapped:
        raise ValueError(f"fully_shard on a module wrapped by DistributedDataParallel ({', '.join(wrapped)}): "
                         f"use one or the other; apply fully_shard to the plain module (DDP replicates, "
                         f"fully_shard shards)")
    if not isinstance(mp_policy, MixedPrecisionPolicy):
        raise TypeError(f"fully_shard: mp_policy must be a MixedPrecisionPolicy, got {type(mp_policy).__name__}")
    if offload_policy is not None:
        raise NotImplementedError("fully_shard: offload_policy (CPU offload) is not supported; pass None")
    if not dist.is_initialized():
        raise RuntimeError("fully_shard needs a process group: call dtrain.distributed.init_process_group() first")
    if mesh is not None and dist.get_rank(mesh) < 0:
        raise ValueError("fully_shard: this rank is not a member of mesh; call it on the group's ranks only")


def _owned_registrations(module):
    """``(submodule, name)`` of every parameter in ``module``'s subtree outside the subtrees of
    earlier fully_shard calls; ValueError if a parameter there is already a shard (the
    calls went top-down) or is shared with such a subtree."""
    inside = set()  # ids of the modules earlier calls own
    for sub in module.modules():
        if sub is not module and isinstance(sub, FSDPModule):
            inside.update(id(m) for m in sub.modules())
    owned = []
    for name, sub in module.named_modules(remove_duplicate=True):
        if id(sub) in inside:
            continue
        for pname, p in sub._parameters.items():
            if p is None:
                continue
            where = f"{name}.{pname}" if name else pname
            if getattr(p, "_fsdp_shard", False):
                raise ValueError(f"fully_shard: parameter {where} is already a shard of another fully_shard call "
                                 f"(shared with a sharded module, or fully_shard applied to a parent first): apply "
                                 f"fully_shard bottom-up, and keep shared parameters in one call's modules")
            owned.append((sub, pname))
    return owned


def _check_one_dtype(module, registrations):
    dtypes = {}
    for sub, name in registrations:
        dtypes.setdefault(str(sub._parameters[name].dtype), f"{type(sub).__name__}.{name}")
    if len(dtypes) > 1:
        found = ", ".join(f"{d} (e.g. {where})" for d, where in dtypes.items())
        raise ValueError(f"fully_shard({type(module).__name__}): one call's parameters are one flat buffer and "
                         f"must share a dtype, got {found}: convert the module to one dtype (e.g. .float()), "
                         f"or apply fully_shard separately to the submodules of each dtype")


def _storage(array):
    """The array ``array`` views (itself if it owns its memory)."""
    while isinstance(getattr(array, "base", None), type(array)):
        array = array.base
    return array


def _groups(module):
    return [m._fsdp_state.group for m in module.modules() if isinstance(m, FSDPModule)]


# ---- the hooks ----------------------------------------------------------------------------
def _pre_forward(module, args):
    state = module._fsdp_state
    if state.is_root:
        state.root = state
        for sub in module.modules():
            if isinstance(sub, FSDPModule):
                sub._fsdp_state.root = state
                sub._fsdp_state.group.drop_gathering()  # a prefetch nothing used holds values from before the step
                sub._fsdp_state.group.forward_with_grad = False  # a recomputation in the last backward set it
    root = state.root
    state.group.unshard()
    if is_grad_enabled():
        state.group.forward_with_grad = True
        if not root.order_done:
            root.order.append(state)
        else:
            _prefetch(root.order, state, +1)
    policy = state.group.mp_policy
    if policy.param_dtype is not None and policy.cast_forward_inputs:
        return tuple(_cast(a, policy.param_dtype) for a in args)
    return None


def _post_forward(module, args, output):
    state = module._fsdp_state
    if state.reshard_after_forward or not is_grad_enabled():  # no backward will need them
        state.group.reshard()
    outputs = [t for t in _tensors(output) if t.requires_grad]
    if is_grad_enabled() and outputs:
        fired = []

        def pre_backward(grad):
            if not fired:  # once per backward, at the first output gradient
                fired.append(True)
                if state.is_root and state.check is not None:
                    state.check.begin()  # before any group of the tree reduces
                state.group.unshard()
                _prefetch_backward(state)
            return None
        for t in outputs:
            t.register_hook(pre_backward)
        if state.is_root:
            state.order_done = True
            reached = {id(t) for t in reachable_leaves(outputs)}
            for m in module.modules():
                if isinstance(m, FSDPModule):
                    m._fsdp_state.group.expect(reached)
            _ensure_check(module, state)
    dtype = state.group.mp_policy.output_dtype
    if dtype is not None:
        return _map(output, lambda t: _cast(t, dtype))
    return None


def _ensure_check(module, state):
    """The root's non-finite check over its tree's groups (built at its first forward with
    grad, again if the tree changed), installed on each group."""
    states = [m._fsdp_state for m in module.modules() if isinstance(m, FSDPModule)]
    ids = [id(s.group) for s in states]
    if state.checked == ids:
        return
    state.check = nonfinite_check.build(module, states)
    state.checked = ids
    for s in states:
        s.group.check = state.check


def _prefetch(order, state, step):
    """Launch the all-gather of the group after (step=+1) or before (-1) ``state`` in ``order``."""
    if state in order:
        k = order.index(state) + step
        if 0 <= k < len(order):
            order[k].group.start_unshard()


def _prefetch_backward(state):
    """Launch the all-gather of the group whose backward comes next: the one before ``state``
    in forward order, or the last one for the root (it runs forward first, backward first).
    Never the root's: its backward is over by then, and the gather would hold pre-step values."""
    order = state.root.order if state.root.order_done else []
    if state not in order:
        return
    k = len(order) - 1 if state is state.root else order.index(state) - 1
    if 0 <= k < len(order) and order[k] is not state.root:
        order[k].group.start_unshard()


def _cast(value, dtype):
    if isinstance(value, Tensor) and dtypes.is_floating(value.dtype) and value.dtype != dtype:
        return value.to(dtype)
    return value


def _tensors(value):
    """The Tensors in a forward's output (nested in tuples, lists, dicts)."""
    found = []
    _map(value, lambda t: found.append(t) or t)
    return found


def _map(value, fn):
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value
