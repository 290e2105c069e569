"""Optimizer: parameter groups, per-parameter state, zero_grad, state_dict.

Subclasses implement ``_update_group`` (one parameter group's update; ``step`` runs the
closure and calls it per group) on the raw arrays (``p.array``, ``p.grad.array``) with
in-place ufuncs written once against ``xp``, so a step allocates no more than a temporary
or two per parameter and runs unchanged on CuPy. ``each_update`` is the per-parameter
prologue they share (state on first use, weight decay, the step count).
"""
import copy
from collections import defaultdict

import numpy

from ..tensor import Tensor, backend, dtypes
from ..timing import phase
from ..tensor.grad_mode import enable_grad
from ..tensor.tensor import zero_grads
from .step_hooks import register_optimizer_step_pre_hook, with_step_hooks  # noqa: F401 (torch.optim.optimizer's)


class Optimizer:
    """Base class of all optimizers, with PyTorch's layout and semantics.

    Args:
        params: an iterable of leaf Tensors, or of dicts (parameter groups) each with a
            ``"params"`` entry and optional per-group hyperparameters.
        defaults: the hyperparameters a group gets when it does not set them.

    Attributes:
        param_groups: list of dicts, each with ``"params"`` and every hyperparameter.
        state: per-parameter dicts (keyed by the parameter itself) of dtrain Tensors.

    Example:
        >>> opt = dtrain.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    # a state tensor of one or more dims is shaped like its parameter (LBFGS keeps flat vectors)
    state_shaped_like_params = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in vars(cls):  # every step() runs the global pre-hooks first (step_hooks.py)
            cls.step = with_step_hooks(vars(cls)["step"])

    def __init__(self, params, defaults):
        self.defaults = defaults
        self._check_hyperparameters(defaults)
        if isinstance(params, Tensor):
            raise TypeError(f"params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got a single {type(params).__name__}: wrap it in a list")
        self.state = defaultdict(dict)
        self.param_groups = []
        groups = _ordered(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def _check_hyperparameters(self, group):
        """Raise ValueError for an out-of-range hyperparameter of ``group`` (subclasses)."""

    def add_param_group(self, param_group):
        """Add a group of parameters (a dict with ``"params"``) with its own hyperparameters;
        the ones it leaves out take the optimizer's defaults.

        Example:
            >>> opt.add_param_group({"params": head.parameters(), "lr": 1e-3})
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else _ordered(params)
        names = [p[0] for p in params if isinstance(p, tuple)]  # from model.named_parameters()
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            params = [p[1] for p in params]
            param_group["param_names"] = names
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but param {i} is a {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (param {i} of shape {tuple(p.shape)} was made by "
                                 f"{p.grad_fn!r}): pass the leaf it was computed from")
        _check_unique(params, self.param_groups)
        param_group["params"] = params
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)
        self._check_hyperparameters(param_group)
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none=True):
        """Reset the gradients: to None (default), or to zeros in place when
        ``set_to_none=False``."""
        zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    @with_step_hooks
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns ``closure()``'s loss (if given)."""
        loss = self._run_closure(closure)
        with phase("optimizer"):
            for group in self.param_groups:
                self._update_group(group)
        return loss

    def _update_group(self, group):
        """Update the parameters of one group (subclasses, unless they override ``step``)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither step() nor _update_group()")

    def _run_closure(self, closure):
        """Re-evaluate the loss with grad enabled (the step itself records nothing)."""
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # ---- state_dict ----------------------------------------------------------------------
    def state_dict(self):
        """The optimizer's state in PyTorch's layout: ``{"state": {index: {name: Tensor}},
        "param_groups": [{hyperparameters..., "params": [index, ...]}]}``, where parameters
        are referred to by their position over all groups. The state tensors are the live
        ones (not copies), as in PyTorch."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state returned by ``state_dict()`` (of an optimizer over parameters of the
        same shapes, in the same groups and order). State tensors are copied, cast to each
        parameter's dtype and moved to its device; the saved hyperparameters replace the
        current ones."""
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"but the optimizer has {len(self.param_groups)}")
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(f"loaded state dict's parameter group {i} has {len(saved['params'])} parameters, "
                                 f"but the optimizer's group {i} has {len(group['params'])}")
        params = {k: p for group, saved in zip(self.param_groups, saved_groups)
                  for k, p in zip(saved["params"], group["params"])}
        state = defaultdict(dict)
        for k, values in state_dict["state"].items():
            if k not in params:
                raise ValueError(f"loaded state dict has state for parameter {k!r}, which none of its "
                                 f"parameter groups lists")
            p = params[k]
            if self.state_shaped_like_params:
                _check_state_shapes(k, values, p)
            state[p] = {name: _cast_state(name, v, p) for name, v in values.items()}
        for group, saved in zip(self.param_groups, saved_groups):
            saved["params"] = group["params"]
            if "param_names" in group:
                saved.setdefault("param_names", group["param_names"])
        self.param_groups = saved_groups
        self.state = state

    def __getstate__(self):
        # pickle only the optimizer's data, not the step wrapper an lr scheduler installs
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines + [")"])


def _ordered(params):
    if isinstance(params, set):
        raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                        "of tensors in sets will change between runs. Please use a list instead.")
    return list(params)


def _check_unique(params, groups):
    seen = {}
    for i, p in enumerate(params):
        if id(p) in seen:
            raise ValueError(f"optimizer got the same parameter twice in one group (at positions {seen[id(p)]} "
                             f"and {i}): pass each parameter once")
        seen[id(p)] = i
    for g, group in enumerate(groups):
        if any(id(p) in seen for p in group["params"]):
            raise ValueError(f"some parameters appear in more than one parameter group (already in group {g})")


def _check_state_shapes(key, values, param):
    """A saved state tensor of another shape than its parameter (a state_dict of another model)
    is refused at load, naming the parameter and both shapes, not left to fail in step()."""
    for name, value in values.items():
        if isinstance(value, Tensor) and value.ndim > 0 and tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"loaded state dict's {name!r} for parameter {key!r} has shape {tuple(value.shape)}, "
                             f"but that parameter has shape {tuple(param.shape)}: the state dict comes from a "
                             f"model with other shapes")


def _cast_state(name, value, param):
    """A copy of one saved state entry, cast to ``param``'s dtype and device."""
    if name == "step":  # a CPU float32 scalar, as in PyTorch (it also accepts a plain number)
        return step_tensor(float(value))
    if not isinstance(value, Tensor):
        return copy.deepcopy(value)
    array = backend.to_device(value.array, param.device)
    dtype = param.dtype if dtypes.is_floating(value.dtype) and dtypes.is_floating(param.dtype) else value.dtype
    return Tensor._wrap(array.astype(dtype, copy=True))


def step_tensor(value=0.0):
    """The ``"step"`` counter: a 0-d float32 tensor on the CPU (reading it never syncs a GPU)."""
    return Tensor._wrap(numpy.full((), value, dtype=dtypes.float32))


def state_like(param, fill=0.0):
    """A state buffer of ``param``'s shape, dtype and device, filled with ``fill``."""
    a = param.array
    with backend.device_guard(param.device):
        return Tensor._wrap(backend.get_array_module(a).full(a.shape, fill, dtype=a.dtype))


def effective_grad(param, grad, weight_decay, maximize):
    """The gradient an update uses, ``(-grad if maximize) + weight_decay * param``, as an
    array; ``grad`` itself (never modified) when there is nothing to add."""
    if weight_decay:
        g = param * weight_decay
        if maximize:
            g -= grad
        else:
            g += grad
        return g
    return -grad if maximize else grad


def check_nonnegative(group, labels):
    """Raise 'Invalid <label>: <value>' for each ``labels`` key whose group value is < 0."""
    for key, label in labels.items():
        if not group[key] >= 0.0:
            raise ValueError(f"Invalid {label}: {group[key]} (expected {key} >= 0)")


def check_adam_hyperparameters(optimizer, group, extra=None):
    """The checks of the Adam family: lr, eps and weight_decay (and the ``extra`` keys, as in
    ``check_nonnegative``) >= 0, betas in [0, 1), the step flags."""
    check_nonnegative(group, {"lr": "learning rate", "eps": "epsilon value", "weight_decay": "weight_decay value",
                              **(extra or {})})
    check_betas(group)
    check_step_flags(optimizer, group)


def check_betas(group):
    """Raise 'Invalid beta parameter at index i: <value>' unless each of the two betas is in [0, 1)."""
    betas = group["betas"]
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), but got {betas}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta} (expected 0 <= beta < 1)")


def check_step_flags(optimizer, group):
    """``foreach``, ``fused`` and ``capturable`` only choose how PyTorch launches its kernels,
    so they are accepted and change nothing here; ``differentiable=True`` (autograd through the
    step) is refused: the step updates the arrays in place, outside the graph."""
    if group.get("differentiable"):
        raise ValueError(f"{type(optimizer).__name__}: differentiable=True is not supported (dtrain's step "
                         f"updates parameters in place, outside the autograd graph): use differentiable=False")


def on_param_device(params):
    """Each parameter in turn, with its CUDA device current while the caller updates it: CuPy
    launches on the current device, while PyTorch updates a parameter on its own. A plain
    iteration on the CPU (nothing is entered for NumPy arrays or the current device)."""
    for p in params:
        device = backend.switch_to((p.array,))
        if device is None:
            yield p
        else:
            with device:
                yield p


def each_update(optimizer, group, buffers=(), scalars=None):
    """The per-parameter prologue the adaptive optimizers share. For each parameter of ``group``
    that has a gradient, in order and with its device current, yields ``(state, param, g, xp, t)``:

    - ``state``: its state, made on first use as PyTorch orders it: the ``"step"`` counter, a
      CPU float32 scalar per ``scalars`` entry (name: initial value), then a zero buffer like
      the parameter per name in ``buffers``;
    - ``param``: its array, to update in place;
    - ``g``: the gradient the update uses (``effective_grad`` with the group's ``weight_decay``
      and ``maximize``); with ``decoupled_weight_decay`` the decay is applied to the weights
      instead, ``p *= 1 - lr * weight_decay``, before the caller's update;
    - ``xp``: the array module of ``param``;
    - ``t``: the step number, this step counted.
    """
    weight_decay, maximize = group["weight_decay"], group["maximize"]
    decoupled = group.get("decoupled_weight_decay", False)
    coupled_decay = 0 if decoupled else weight_decay
    shrink = 1 - group["lr"] * weight_decay if decoupled and weight_decay else None
    for p in on_param_device(group["params"]):
        if p.grad is None:
            continue
        state = optimizer.state[p]
        if not state:
            state["step"] = step_tensor()
            for name, value in (scalars or {}).items():
                state[name] = step_tensor(value)
            for name in buffers:
                state[name] = state_like(p)
        param = p.array
        g = effective_grad(param, p.grad.array, coupled_decay, maximize)
        if shrink is not None:
            param *= shrink
        step = state["step"].array
        step += 1
        yield state, param, g, backend.get_array_module(param), float(step)


def average_square(xp, g, avg, rate, out=None):
    """The running average of squares in place, ``avg = rate avg + (1 - rate) g^2``. Returns the
    temporary it used (``out`` if given), free for the caller's next step."""
    tmp = xp.multiply(g, g, out=out)
    tmp *= 1 - rate
    avg *= rate
    avg += tmp
    return tmp


def update_moments(xp, g, m, v, beta1, beta2):
    """Adam's moment averages in place: ``m = b1 m + (1 - b1) g`` and, unless ``v`` is None,
    ``v = b2 v + (1 - b2) g^2``. Returns the one temporary it used (g's shape), free for the
    caller's next step."""
    tmp = xp.multiply(g, 1 - beta1)
    m *= beta1
    m += tmp
    if v is not None:
        average_square(xp, g, v, beta2, out=tmp)
    return tmp
