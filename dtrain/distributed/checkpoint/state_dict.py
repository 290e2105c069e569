"""A model's and its optimizers' state in one layout whatever the parallelism, as
``torch.distributed.checkpoint.state_dict``.

Parameters are named by their fully qualified names in the model (``blocks.0.attn.c_attn.weight``;
DistributedDataParallel's ``module.`` prefix left out, as PyTorch's), and so is the
optimizer state: ``{"state": {name: {"step": ..., "exp_avg": ...}}, "param_groups":
[{..., "params": [name, ...]}]}``. With ``StateDictOptions(full_state_dict=True)`` every
tensor is whole: a fully_shard model's parameters and its optimizer's per-element state
(Adam's moments) are gathered from the ranks' 1-D shards, so what one world size saves loads
at any other (or into the model without fully_shard). ``full_state_dict=False`` (PyTorch's
default) gives each rank's own shards, which load back at the same world size only.

Example (save at 4 ranks, resume at 2):
    >>> opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    >>> model_sd, optim_sd = get_state_dict(model, opt, options=opts)   # every rank (collective)
    >>> if dist.get_rank() == 0:
    ...     dtrain.save({"model": model_sd, "optim": optim_sd}, "run/step100.dtr")
    >>> # later, any world size, after fully_shard and building the optimizer:
    >>> saved = dtrain.load("run/step100.dtr") if dist.get_rank() == 0 else {}
    >>> set_state_dict(model, opt, model_state_dict=saved.get("model", {}), optim_state_dict=saved.get("optim", {}),
    ...                options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
"""
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy

from ... import comm as dist
from ...nn import Module
from ...optim import Optimizer
from ...parallel import DistributedDataParallel
from ...tensor import Tensor, backend, from_numpy
from ..fsdp.fully_shard import gathered, load_full, shard_placements
from ..optim import ZeroRedundancyOptimizer


@dataclass(frozen=True)
class StateDictOptions:
    """How the get/set functions of this module read and write state, as PyTorch's.

    Args:
        full_state_dict: whole tensors (gathered from fully_shard's shards; collective) rather
            than this rank's shards.
        cpu_offload: host copies; with ``full_state_dict``, only rank 0 gets the state (the
            other ranks get ``{}``), so only rank 0 holds a whole copy.
        ignore_frozen_params: leave out the parameters with ``requires_grad=False``.
        keep_submodule_prefixes: accepted for PyTorch's signature (``submodules`` is refused).
        strict: ``set_model_state_dict`` requires exactly the model's keys.
        broadcast_from_rank0: the set functions take the state given on rank 0 (the other
            ranks may pass ``{}``) and send it to every rank; needs ``full_state_dict``.
        flatten_optimizer_state_dict: only False.
    """
    full_state_dict: bool = False
    cpu_offload: bool = False
    ignore_frozen_params: bool = False
    keep_submodule_prefixes: bool = True
    strict: bool = True
    broadcast_from_rank0: bool = False
    flatten_optimizer_state_dict: bool = False

    def __post_init__(self):
        if self.broadcast_from_rank0 and not self.full_state_dict:
            raise ValueError("StateDictOptions: full_state_dict must be True when broadcast_from_rank0 is True "
                             "(rank 0 holds whole tensors; every rank takes its shard of them)")
        if self.flatten_optimizer_state_dict:
            raise NotImplementedError("StateDictOptions(flatten_optimizer_state_dict=True) is not supported: "
                                      "the optimizer state is nested, {'state': {name: {...}}, 'param_groups': [...]}")


# ---- the model ------------------------------------------------------------------------
def get_model_state_dict(model, *, submodules=None, options=None):
    """The model's parameters and buffers by name (see the module docstring for the options).
    Collective with ``full_state_dict`` on a fully_shard model: call it on every rank.

    Example:
        >>> sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    """
    options, module = _options(options, submodules), _unwrap(model)
    if options.full_state_dict:
        with gathered(module):
            state = module.state_dict()
    else:
        state = _local_state_dict(module, OrderedDict(), "")
    if options.ignore_frozen_params:
        frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
        state = {k: v for k, v in state.items() if k not in frozen}
    if options.cpu_offload:
        if options.full_state_dict and _rank() != 0:
            return {}
        state = {k: _host(v) for k, v in state.items()}
    return state


def set_model_state_dict(model, model_state_dict, *, options=None):
    """Load ``model_state_dict`` (whole tensors with ``full_state_dict``: each rank keeps its
    shard; else this rank's shards). Returns ``(missing_keys, unexpected_keys)``.
    Collective on a fully_shard model."""
    options, module = _options(options), _unwrap(model)
    if options.broadcast_from_rank0:
        model_state_dict = _from_rank0(model_state_dict)

    def load():  # the base class's: fully_shard's would gather once more
        return Module.load_state_dict(module, model_state_dict, strict=options.strict)
    return load_full(module, load) if options.full_state_dict else load()


# ---- the optimizers ------------------------------------------------------------------
def get_optimizer_state_dict(model, optimizers, *, submodules=None, options=None):
    """The state of ``optimizers`` (one Optimizer or several over ``model``'s parameters),
    keyed by parameter name; several are merged (their groups in order). With
    ``full_state_dict``, the per-element state of fully_shard's shards (each a slice of its
    parameter) is gathered into tensors of the parameter's shape. Collective then.

    Example:
        >>> osd = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
        >>> osd["state"]["lm_head.weight"]["exp_avg"].shape   # the parameter's, not the shard's
    """
    options, module = _options(options, submodules), _unwrap(model)
    names = _names(module)
    state, groups = {}, []
    for opt in _optimizers(optimizers):
        for g, group in enumerate(opt.param_groups):
            fqns = [_name(names, p, g) for p in group["params"]]
            groups.append({**_hyperparameters(group), "params": fqns})
            state.update((fqn, dict(opt.state[p])) for fqn, p in zip(fqns, group["params"]) if p in opt.state)
    if options.ignore_frozen_params:
        frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
        state = {k: v for k, v in state.items() if k not in frozen}
        groups = [{**g, "params": [n for n in g["params"] if n not in frozen]} for g in groups]
    if options.full_state_dict:
        state = _whole_state(state, _placements_by_name(module, names), to_rank0=options.cpu_offload)
        if state is None:
            return {}
    elif options.cpu_offload:
        state = {k: {name: _host(v) for name, v in entries.items()} for k, entries in state.items()}
    return {"state": state, "param_groups": groups}


def set_optimizer_state_dict(model, optimizers, optim_state_dict, *, options=None):
    """Load a state of :func:`get_optimizer_state_dict`'s layout into ``optimizers``: each
    optimizer group takes the hyperparameters of the saved group holding its parameters (by
    name) and each parameter its state; with ``full_state_dict``, a fully_shard shard takes
    its slice of each whole per-element tensor. Collective with ``broadcast_from_rank0``."""
    options, module = _options(options), _unwrap(model)
    if options.broadcast_from_rank0:
        optim_state_dict = _from_rank0(optim_state_dict)
    names = _names(module)
    placements = _placements_by_name(module, names) if options.full_state_dict else {}
    saved_state, saved_groups = optim_state_dict["state"], optim_state_dict["param_groups"]
    group_of = {fqn: k for k, saved in enumerate(saved_groups) for fqn in saved["params"]}
    for opt in _optimizers(optimizers):
        local_state, local_groups, first = {}, [], 0  # indices over all groups, as Optimizer.state_dict's
        for g, group in enumerate(opt.param_groups):
            fqns = [_name(names, p, g) for p in group["params"]]
            for k, fqn in enumerate(fqns, start=first):
                if fqn in saved_state:
                    local_state[k] = {name: _local(fqn, name, v, placements.get(fqn))
                                      for name, v in saved_state[fqn].items()}
            local_groups.append({**_hyperparameters(_saved_group(saved_groups, group_of, fqns, g, group)),
                                 "params": list(range(first, first + len(fqns)))})
            first += len(fqns)
        opt.load_state_dict({"state": local_state, "param_groups": local_groups})


# ---- both ------------------------------------------------------------------------------
def get_state_dict(model, optimizers, *, submodules=None, options=None):
    """``(get_model_state_dict(model), get_optimizer_state_dict(model, optimizers))``."""
    return (get_model_state_dict(model, submodules=submodules, options=options),
            get_optimizer_state_dict(model, optimizers, submodules=submodules, options=options))


def set_state_dict(model, optimizers, *, model_state_dict, optim_state_dict, options=None):
    """Load the model's state, then the optimizers'. Returns the model's
    ``(missing_keys, unexpected_keys)``."""
    keys = set_model_state_dict(model, model_state_dict, options=options)
    set_optimizer_state_dict(model, optimizers, optim_state_dict, options=options)
    return keys


# ---- helpers -----------------------------------------------------------------------------
def _options(options, submodules=None):
    if submodules is not None:
        raise NotImplementedError("the submodules argument (deprecated in PyTorch) is not supported: take the "
                                  "entries under the submodule's prefix from the whole state dict")
    if options is None:
        return StateDictOptions()
    if not isinstance(options, StateDictOptions):
        raise TypeError(f"options must be a StateDictOptions, got {type(options).__name__}")
    return options


def _unwrap(model):
    if isinstance(model, DistributedDataParallel):
        return model.module  # its "module." prefix is no part of the names (as PyTorch's)
    if not isinstance(model, Module):
        raise TypeError(f"model must be a dtrain.nn.Module, got {type(model).__name__}")
    return model


def _optimizers(optimizers):
    optimizers = (optimizers,) if isinstance(optimizers, Optimizer) else tuple(optimizers)
    for opt in optimizers:
        if isinstance(opt, ZeroRedundancyOptimizer):
            raise TypeError("ZeroRedundancyOptimizer keeps each parameter's state on the rank that owns it: save "
                            "it with consolidate_state_dict(to=0) and state_dict() (a plain optimizer's layout, "
                            "which its load_state_dict re-shards at any world size)")
        if not isinstance(opt, Optimizer):
            raise TypeError(f"optimizers must be a dtrain.optim.Optimizer or an iterable of them, got "
                            f"{type(opt).__name__}")
    return optimizers


def _local_state_dict(module, destination, prefix):
    """Module.state_dict's walk, each module's own entries as they are on this rank (a
    fully_shard module's state_dict would gather its shards into whole tensors)."""
    module._save_to_state_dict(destination, prefix, False)
    for name, child in module._modules.items():
        if child is not None:
            _local_state_dict(child, destination, f"{prefix}{name}.")
    return destination


def _names(module):
    """id(parameter) -> its name (a tied parameter: its first name), shards included."""
    return {id(p): name for name, p in module.named_parameters()}


def _name(names, p, g):
    if id(p) not in names:
        raise ValueError(f"the optimizer's parameter group {g} holds a parameter of shape {tuple(p.shape)} that is "
                         f"not one of the model's parameters: build the optimizer over model.parameters() "
                         f"(after fully_shard)")
    return names[id(p)]


def _placements_by_name(module, names):
    """name -> (ParamGroup, index) for each fully_shard shard among the parameters."""
    return {names[key]: where for key, where in shard_placements(module).items() if key in names}


def _hyperparameters(group):
    return {k: v for k, v in group.items() if k not in ("params", "param_names")}


def _saved_group(saved_groups, group_of, fqns, g, group):
    """The saved group whose parameters are exactly those named ``fqns`` (an empty group keeps
    its own settings)."""
    if not fqns:
        return group
    found = {group_of.get(fqn) for fqn in fqns}
    if None in found or len(found) > 1 or len(saved_groups[next(iter(found))]["params"]) != len(fqns):
        missing = [fqn for fqn in fqns if fqn not in group_of]
        why = f"{missing[:3]} are in none of its groups" if missing else "they lie in other groups there"
        raise ValueError(f"set_optimizer_state_dict: the optimizer's parameter group {g} ({len(fqns)} parameters, "
                         f"first {fqns[0]!r}) is not one group of the loaded state dict: {why}")
    return saved_groups[found.pop()]


def _per_element(value):
    """A state entry shaped like its parameter (Adam's moments), not a scalar (its step):
    the rule Optimizer.load_state_dict checks shapes by."""
    return isinstance(value, Tensor) and value.ndim > 0


def _whole_state(state, placements, to_rank0):
    """``state`` with each shard's per-element entries replaced by the whole parameter's,
    gathered from every rank (to rank 0 only with ``to_rank0``; None on the others)."""
    mine = {}  # name -> {entry: (where the shard starts in the flat parameter, its values) or (None, a scalar)}
    for fqn, entries in state.items():
        if fqn in placements:
            g, i = placements[fqn]
            start = g.local_range(i)[2]
            mine[fqn] = {k: (start, backend.asnumpy(v.array)) if _per_element(v) else (None, _host(v))
                         for k, v in entries.items()}
    parts = [mine]
    if placements and _world() > 1:  # placements are the model's structure: the same on every rank
        if to_rank0:
            parts = [None] * _world() if _rank() == 0 else None
            dist.gather_object(mine, parts, dst=0)
            if parts is None:
                return None
        else:
            parts = [None] * _world()
            dist.all_gather_object(parts, mine)
    whole = {}
    for part in parts:
        for fqn, entries in part.items():
            g, i = placements[fqn]
            out = whole.setdefault(fqn, {})
            for k, (start, v) in entries.items():
                if start is None:
                    out.setdefault(k, v)
                    continue
                if k not in out:
                    out[k] = numpy.zeros(math.prod(g.shapes[i]), v.dtype)
                out[k][start:start + v.size] = v
    result = {}
    for fqn, entries in state.items():
        if fqn not in placements:  # whole already: a host copy (cpu_offload) or the live tensors, as PyTorch's
            result[fqn] = {k: _host(v) for k, v in entries.items()} if to_rank0 else dict(entries)
            continue
        g, i = placements[fqn]
        device = None if to_rank0 else g.shards[i].device  # without cpu_offload: on the parameters' device

        def whole_tensor(v):
            t = from_numpy(v.reshape(g.shapes[i]))
            return t if device is None else t.to(device)
        result[fqn] = {k: whole_tensor(v) if isinstance(v, numpy.ndarray) else v for k, v in whole[fqn].items()}
    return result


def _local(fqn, name, value, placement):
    """This rank's part of a saved state entry: a shard's slice of a whole per-element tensor."""
    if placement is None or not _per_element(value):
        return value
    g, i = placement
    if tuple(value.shape) != g.shapes[i]:
        raise ValueError(f"set_optimizer_state_dict: {name!r} of parameter {fqn!r} has shape {tuple(value.shape)}, "
                         f"but the parameter has shape {g.shapes[i]}: the state dict comes from a model with "
                         f"other shapes (or is a sharded one: load it with full_state_dict=False)")
    lo, hi, start = g.local_range(i)
    return value.reshape(-1)[start:start + hi - lo]


def _host(value):
    """A state value as a host copy (a Tensor), other values as they are."""
    return from_numpy(backend.asnumpy(value.array).copy()) if isinstance(value, Tensor) else value


def _from_rank0(obj):
    if _world() == 1:
        return obj
    box = [obj if _rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _world():
    return dist.get_world_size() if dist.is_initialized() else 1


def _rank():
    return dist.get_rank() if dist.is_initialized() else 0
