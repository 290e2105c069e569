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
``flatten_optimizer_state_dict=True`` gives the optimizer state as one flat dict,
``{"state.<name>.exp_avg": ..., "param_groups.<name>.lr": ...}``, which each optimizer loads
by its own parameters' names (a pipeline stage takes its part of a whole model's).

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
import warnings
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
        ignore_frozen_params: leave the parameters with ``requires_grad=False`` out of the
            model's state dict (the optimizer's is left as it is, as PyTorch's: its groups
            still name them, so it loads back into the same optimizer).
        keep_submodule_prefixes: with the deprecated ``submodules`` argument, keep the
            submodule's name in the keys (``2.weight``) or not (``weight``).
        strict: ``set_model_state_dict`` requires exactly the model's keys, and
            ``set_optimizer_state_dict`` a saved state for each parameter with
            ``requires_grad`` (when the saved state is not empty: SGD without momentum, or an
            optimizer saved before its first step, has none).
        broadcast_from_rank0: the set functions take the state given on rank 0 (the other
            ranks may pass ``{}``) and send it to every rank; needs ``full_state_dict``.
        flatten_optimizer_state_dict: the optimizer state as one flat dict,
            ``"state.<name>.<key>"`` (nested state: more dotted keys) and
            ``"param_groups.<name>.<hyperparameter>"`` (each group's settings under each of
            its parameters); the set functions take either layout.
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


# ---- the model ------------------------------------------------------------------------
def get_model_state_dict(model, *, submodules=None, options=None):
    """The model's parameters and buffers by name (see the module docstring for the options).
    Collective with ``full_state_dict`` on a fully_shard model: call it on every rank.
    ``submodules`` (deprecated, as PyTorch's: a FutureWarning): only the entries of these
    submodules of ``model`` (their names kept as prefixes, or not: ``keep_submodule_prefixes``).

    Example:
        >>> sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    """
    _warn_if_submodules(submodules)
    return _get_model_state_dict(_unwrap(model), submodules, _options(options))


def _get_model_state_dict(module, submodules, options):
    prefixes = _submodule_prefixes(module, submodules)
    if options.full_state_dict:
        with gathered(module):
            state = module.state_dict()
    else:
        state = _local_state_dict(module, OrderedDict(), "")
    if prefixes is not None:
        state = {(key if options.keep_submodule_prefixes else key[len(prefix):]): v
                 for key, v in state.items() for prefix in prefixes if key.startswith(prefix)}
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
    Collective on a fully_shard model. A dict keyed by submodules of ``model``, each with its
    own state dict (deprecated, as PyTorch's: a FutureWarning), loads under their names."""
    options, module = _options(options), _unwrap(model)
    model_state_dict = _by_submodule(module, model_state_dict)
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
    ``submodules`` (deprecated) only warns: the state is every parameter's, as PyTorch's.

    Example:
        >>> osd = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
        >>> osd["state"]["lm_head.weight"]["exp_avg"].shape   # the parameter's, not the shard's
        >>> flat = get_optimizer_state_dict(model, opt, options=StateDictOptions(flatten_optimizer_state_dict=True))
        >>> flat["state.lm_head.weight.exp_avg"], flat["param_groups.lm_head.weight.lr"]
    """
    _warn_if_submodules(submodules)
    return _get_optimizer_state_dict(_unwrap(model), optimizers, _options(options))


def _get_optimizer_state_dict(module, optimizers, options):
    names = _names(module)
    state, groups = {}, []
    # PyTorch steps an optimizer that has no state yet once (zero gradients, lr 0) before
    # reading it (its _init_optim_state, so that DCP finds state tensors to load into in
    # place). Not here: Optimizer.load_state_dict makes the state, and that step would set
    # Adam's step count to 1, so a run resumed from a checkpoint taken before the first step
    # would no longer equal the uninterrupted one. A fresh optimizer's state is {}.
    for opt in _optimizers(optimizers):
        for g, group in enumerate(opt.param_groups):
            fqns = [_name(names, p, g) for p in group["params"]]
            groups.append({**_hyperparameters(group), "params": fqns})
            state.update((fqn, dict(opt.state[p])) for fqn, p in zip(fqns, group["params"]) if p in opt.state)
    # ignore_frozen_params leaves the optimizer's state as it is, as PyTorch's: leaving the
    # frozen names out of the groups would make them load into no group of the same optimizer
    if options.full_state_dict:
        state = _whole_state(state, _placements_by_name(module, names), to_rank0=options.cpu_offload)
        if state is None:
            return {}
    elif options.cpu_offload:
        state = {k: {name: _host(v) for name, v in entries.items()} for k, entries in state.items()}
    if options.flatten_optimizer_state_dict:
        return _flatten(state, groups)
    return {"state": state, "param_groups": groups}


def set_optimizer_state_dict(model, optimizers, optim_state_dict, *, options=None):
    """Load a state of :func:`get_optimizer_state_dict`'s layout into ``optimizers``: each
    optimizer group takes the hyperparameters of the saved group holding its parameters (by
    name) and each parameter its state; with ``full_state_dict``, a fully_shard shard takes
    its slice of each whole per-element tensor. Collective with ``broadcast_from_rank0``.
    A flat state dict (``flatten_optimizer_state_dict``'s, whatever the options given here) is
    read by the names of the optimizers' own parameters: entries of other parameters are left
    unread, so each pipeline stage can load its part of a whole model's."""
    options, module = _options(options), _unwrap(model)
    if options.broadcast_from_rank0:
        optim_state_dict = _from_rank0(optim_state_dict)
    names = _names(module)
    optimizers = _optimizers(optimizers)
    if not optim_state_dict:
        raise ValueError("set_optimizer_state_dict: the optimizer state dict is empty (the other ranks' share of "
                         "one saved with full_state_dict and cpu_offload, rank 0's only? load it with "
                         "broadcast_from_rank0=True)")
    flat = "state" not in optim_state_dict  # PyTorch's test for the flat layout
    if flat:
        optim_state_dict = _unflatten(optim_state_dict, optimizers, names)
    placements = _placements_by_name(module, names) if options.full_state_dict else {}
    saved_state, saved_groups = optim_state_dict["state"], optim_state_dict["param_groups"]
    group_of = {fqn: k for k, saved in enumerate(saved_groups) for fqn in saved["params"]}
    # PyTorch's strict check: a nested state dict with state for some parameters must have it
    # for each that requires grad (torch skips it for an empty one, and for the flat layout)
    strict = options.strict and not flat and saved_state
    for opt in optimizers:
        local_state, local_groups, first = {}, [], 0  # indices over all groups, as Optimizer.state_dict's
        for g, group in enumerate(opt.param_groups):
            fqns = [_name(names, p, g) for p in group["params"]]
            for k, (fqn, p) in enumerate(zip(fqns, group["params"]), start=first):
                if strict and p.requires_grad and fqn not in saved_state:
                    raise RuntimeError(f"Missing optimizer state for parameter '{fqn}' in checkpoint. The parameter "
                                       "requires gradients but has no saved optimizer state. To load anyway, use "
                                       "StateDictOptions(strict=False).")
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
    _warn_if_submodules(submodules)
    module, options = _unwrap(model), _options(options)
    return (_get_model_state_dict(module, submodules, options),
            _get_optimizer_state_dict(module, optimizers, options))


def set_state_dict(model, optimizers, *, model_state_dict, optim_state_dict, options=None):
    """Load the model's state, then the optimizers'. Returns the model's
    ``(missing_keys, unexpected_keys)``."""
    keys = set_model_state_dict(model, model_state_dict, options=options)
    set_optimizer_state_dict(model, optimizers, optim_state_dict, options=options)
    return keys


# ---- helpers -----------------------------------------------------------------------------
def _options(options):
    if options is None:
        return StateDictOptions()
    if not isinstance(options, StateDictOptions):
        raise TypeError(f"options must be a StateDictOptions, got {type(options).__name__}")
    return options


def _warn_if_submodules(submodules):
    if submodules:  # PyTorch's warning, word for word (stacklevel: the caller of the public function)
        warnings.warn("Getting submodules only model/optim state_dict is deprecated and will be removed in 2.5. "
                      "This feature can be achieved by manually filtering out the state_dict returned from "
                      "get_state_dict.", FutureWarning, stacklevel=3)


def _submodule_prefixes(module, submodules):
    """``"<name>."`` of each of ``submodules`` in ``module``; None when there are none."""
    if not submodules:
        return None
    wanted = {id(m) for m in submodules}
    prefixes = [f"{name}." for name, m in module.named_modules() if id(m) in wanted]
    if len(prefixes) != len(wanted):
        raise ValueError(f"submodules: {len(wanted) - len(prefixes)} of the {len(wanted)} modules given are not "
                         f"submodules of the model ({type(module).__name__})")
    return prefixes


def _by_submodule(module, state_dict):
    """A state dict keyed by submodules (PyTorch's deprecated form of set_model_state_dict's
    argument) as one keyed by the model's names; any other as it is."""
    if not state_dict or not isinstance(next(iter(state_dict)), Module):
        return state_dict
    warnings.warn("Passing model_state_dict as a ``Dict[nn.Module, Dict[str, Any]]`` is deprecated and will be "
                  "removed in 2.5. If you need this feature, please preprocess the model_state_dict to achieve the "
                  "same functionality.", FutureWarning, stacklevel=3)
    prefix = {id(m): f"{name}." for name, m in module.named_modules()}
    out = {}
    for sub, entries in state_dict.items():
        if id(sub) not in prefix:
            raise ValueError(f"set_model_state_dict: the state dict is keyed by modules, and a "
                             f"{type(sub).__name__} among its keys is not a submodule of the model")
        out.update((prefix[id(sub)] + k, v) for k, v in entries.items())
    return out


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


# ---- the flat layout (flatten_optimizer_state_dict) ----------------------------------------
def _flatten(state, groups):
    """``{"state.<name>.<key>": value, "param_groups.<name>.<hyperparameter>": value}``, as
    PyTorch's _flatten_optim_state_dict (nested state: one dotted key per leaf)."""
    flat = {}

    def leaves(prefix, entries):
        for key, value in entries.items():
            if isinstance(value, dict):
                leaves(f"{prefix}.{key}", value)
            elif isinstance(value, (Tensor, int, float)):
                flat[f"{prefix}.{key}"] = value
            else:  # a list would flatten into keys no loader could tell from a nested dict's
                raise NotImplementedError(f"flatten_optimizer_state_dict: the state {prefix[len('state.'):]!r} "
                                          f"holds {key!r} of type {type(value).__name__}; only tensors, ints, "
                                          f"floats and dicts of them can be flattened (as PyTorch's)")
    for fqn, entries in state.items():
        leaves(f"state.{fqn}", entries)
    for group in groups:
        for fqn in group["params"]:
            flat.update((f"param_groups.{fqn}.{k}", v) for k, v in group.items() if k != "params")
    return flat


def _unflatten(flat, optimizers, names):
    """The nested layout of ``flat``'s entries for the optimizers' parameters (by name): each
    optimizer group takes the hyperparameters saved under its parameters, which must agree."""
    wanted = {_name(names, p, g) for opt in optimizers for g, group in enumerate(opt.param_groups)
              for p in group["params"]}
    state, hyper = {}, {}
    for key, value in flat.items():
        section, _, rest = key.partition(".")
        # the parameter's name is the shortest dotted head of ``rest`` among the wanted names:
        # no name is another's head, as a parameter is no module
        cut = next((i for i, c in enumerate(rest) if c == "." and rest[:i] in wanted), None)
        if section not in ("state", "param_groups") or cut is None:
            continue  # another parameter's (another pipeline stage's), left unread as PyTorch's
        fqn, path = rest[:cut], rest[cut + 1:].split(".")
        if section == "param_groups":
            hyper.setdefault(fqn, {})[rest[cut + 1:]] = value
            continue
        entries = state.setdefault(fqn, {})
        for part in path[:-1]:
            entries = entries.setdefault(part, {})
        entries[path[-1]] = value
    groups = []
    for opt in optimizers:
        for g, group in enumerate(opt.param_groups):
            fqns = [_name(names, p, g) for p in group["params"]]
            missing = [fqn for fqn in fqns if fqn not in hyper]
            if missing:
                raise ValueError(f"set_optimizer_state_dict: the flat state dict has no 'param_groups.<name>.*' "
                                 f"entries for {missing[:3]} ({len(missing)} of the {len(fqns)} parameters of the "
                                 f"optimizer's parameter group {g})")
            settings = hyper[fqns[0]] if fqns else _hyperparameters(group)
            for fqn in fqns[1:]:
                if hyper[fqn] != settings:
                    differ = sorted(k for k in {*settings, *hyper[fqn]} if settings.get(k) != hyper[fqn].get(k))
                    raise ValueError(f"set_optimizer_state_dict: parameters {fqns[0]!r} and {fqn!r} of the "
                                     f"optimizer's parameter group {g} were saved with different {differ} (in "
                                     f"different groups): build the optimizer with the saved groups")
            groups.append({**settings, "params": fqns})
    return {"state": state, "param_groups": groups}


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
