"""``GradScaler``: dynamic loss scaling for float16 training, as ``torch.amp.GradScaler``."""
import enum
import math
import warnings

import numpy

from .. import comm
from ..cuda import is_available as cuda_is_available
from ..tensor import Tensor
from ..tensor.backend import get_array_module


class OptState(enum.Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _float32(x):
    """``x`` rounded to float32, as PyTorch's scale (a float32 tensor) holds it."""
    return float(numpy.float32(x))


def _accessors(attribute):
    """PyTorch's get_X/set_X pair of a GradScaler setting stored as ``attribute``."""
    def get(self):
        return getattr(self, attribute)

    def set(self, value):
        setattr(self, attribute, value)
    return get, set


class GradScaler:
    """Scale the loss so float16 gradients keep their small values, unscale the gradients
    before the step, skip the steps whose gradients hold an inf or a NaN, and adapt the
    scale: times ``backoff_factor`` after a skipped step, times ``growth_factor`` after
    ``growth_interval`` steps in a row without one. As ``torch.amp.GradScaler``.

    Distributed: when a default process group of more than one rank is initialized, the
    found-inf flags are all-reduced (MAX) in ``unscale_``, so every rank skips the same steps
    even where each holds only its shard of the gradients (ZeRO-2, fully_shard). This is a
    collective: every rank must call ``unscale_``/``step`` for the same optimizers in order.

    Parameters must not be float16 (their gradients could not be unscaled without losing
    precision): keep float32 parameters and run the forward under :class:`dtrain.autocast`.
    bfloat16 and float32 parameters are allowed, as in PyTorch (scaling is then harmless,
    rarely needed: bfloat16 has float32's range).

    Args:
        device: "cuda" (default, as PyTorch: disabled with a warning when CUDA is not
            available) or "cpu".
        init_scale: the first scale. growth_factor (> 1), backoff_factor (< 1),
        growth_interval: how the scale adapts. enabled: False makes every method a no-op
            (``scale`` returns its input, ``step`` just steps).

    Example:
        >>> scaler = dtrain.amp.GradScaler("cpu")
        >>> with dtrain.autocast("cpu", dtype=dtrain.float16):
        ...     loss = loss_fn(model(x), y)
        >>> scaler.scale(loss).backward()
        >>> scaler.step(optimizer)      # skipped if a gradient is inf/NaN
        >>> scaler.update()
    """

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"GradScaler: device must be 'cuda' or 'cpu', got {device!r}")
        if enabled and device == "cuda" and not cuda_is_available():
            warnings.warn("GradScaler is enabled, but CUDA is not available. Disabling.", stacklevel=2)
            enabled = False
        self._device, self._enabled = device, bool(enabled)
        if self._enabled:
            if not init_scale > 0:
                raise ValueError(f"GradScaler: init_scale must be > 0, got {init_scale}")
            if not growth_factor > 1.0:
                raise ValueError(f"GradScaler: the growth factor must be > 1.0, got {growth_factor}")
            if not 0 < backoff_factor < 1.0:
                raise ValueError(f"GradScaler: the backoff factor must be in (0, 1), got {backoff_factor}")
            if not (isinstance(growth_interval, int) and growth_interval > 0):
                raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}")
        self._scale = _float32(init_scale)
        self._growth_factor, self._backoff_factor = growth_factor, backoff_factor
        self._growth_interval, self._growth_tracker = growth_interval, 0
        self._per_optimizer_states = {}

    def _state(self, optimizer):
        return self._per_optimizer_states.setdefault(id(optimizer), {"stage": OptState.READY, "found_inf": None})

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        """The current scale as a Python float (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def scale(self, outputs):
        """``outputs`` (a Tensor, or a list/tuple/dict of them, nested) times the scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if outputs.device.type != self._device:
                raise ValueError(f"GradScaler.scale: the scaler is for {self._device!r} but the output is on "
                                 f"{outputs.device}; create GradScaler({outputs.device.type!r})")
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        if isinstance(outputs, dict):
            return {k: self.scale(v) for k, v in outputs.items()}
        raise ValueError(f"GradScaler.scale: outputs must be a Tensor or an iterable of Tensors, "
                         f"got {type(outputs).__name__}")

    def unscale_(self, optimizer):
        """Divide ``optimizer``'s gradients by the scale, in place, and note whether any is
        inf or NaN (on any rank: see the class docstring). At most once per ``update()``;
        call it before clipping gradients."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if st["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        grads = []
        for group in optimizer.param_groups:
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.dtype.name == "float16":
                    raise ValueError(f"Attempting to unscale FP16 gradients (param_groups parameter {i}, shape "
                                     f"{list(p.shape)}): GradScaler needs float32 parameters; keep the model in "
                                     f"float32 and run its forward under dtrain.autocast")
                grads.append(p.grad.array)
        inv_scale = float(numpy.float32(1.0 / self._scale))  # PyTorch: the double reciprocal, as float32
        found = _unscale_and_check(grads, inv_scale)
        if comm.is_initialized() and comm.get_world_size() > 1:
            found = _agree_across_ranks(found, grads)
        elif not grads:
            found = None  # nothing checked: step() and update() refuse, as PyTorch's
        st["found_inf"], st["stage"] = found, OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``unscale_(optimizer)`` if not done yet, then ``optimizer.step(*args, **kwargs)``
        unless a gradient held an inf or a NaN. Returns what step returned (None if skipped)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        st = self._state(optimizer)
        if st["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if st["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if st["found_inf"] is None:
            raise RuntimeError("No inf checks were recorded for this optimizer: none of its parameters has a "
                               "gradient (call backward on the scaled loss first).")
        retval = None if st["found_inf"] else optimizer.step(*args, **kwargs)
        st["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale=None):
        """Adapt the scale after this iteration's steps (or set it to ``new_scale``, a float
        or a one-element Tensor), and make the optimizers ready for the next iteration."""
        if not self._enabled:
            return
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise ValueError("new_scale should be a float or a 1-element Tensor with requires_grad=False.")
                new_scale = new_scale.item()
            self._scale = _float32(new_scale)
        else:
            found = [s["found_inf"] for s in self._per_optimizer_states.values() if s["found_inf"] is not None]
            if not found:
                raise RuntimeError("No inf checks were recorded prior to update(): call step() (or unscale_()) "
                                   "on an optimizer with gradients first.")
            self._update_scale(any(found))
        self._per_optimizer_states = {}

    def _update_scale(self, found_inf):
        """PyTorch's ``_amp_update_scale_``: products in double, stored as float32."""
        if found_inf:
            self._scale, self._growth_tracker = _float32(self._scale * self._backoff_factor), 0
            return
        successful = self._growth_tracker + 1
        if successful == self._growth_interval:
            grown = _float32(self._scale * self._growth_factor)
            if math.isfinite(grown):
                self._scale = grown
            successful = 0
        self._growth_tracker = successful

    get_growth_factor, set_growth_factor = _accessors("_growth_factor")
    get_backoff_factor, set_backoff_factor = _accessors("_backoff_factor")
    get_growth_interval, set_growth_interval = _accessors("_growth_interval")

    def state_dict(self):
        """scale, growth_factor, backoff_factor, growth_interval and _growth_tracker (PyTorch's
        keys); {} when disabled."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state_dict)
        if missing:
            raise KeyError(f"GradScaler.load_state_dict: missing {sorted(missing)}")
        self._scale = _float32(state_dict["scale"])
        self._growth_factor, self._backoff_factor = state_dict["growth_factor"], state_dict["backoff_factor"]
        self._growth_interval, self._growth_tracker = state_dict["growth_interval"], state_dict["_growth_tracker"]


def _unscale_and_check(grads, inv_scale):
    """Multiply each gradient array by ``inv_scale`` in place; True if any held an inf or a
    NaN before (one host sync for all of them)."""
    if not grads:
        return False
    xp = get_array_module(grads[0])
    flags = [~xp.isfinite(g).all() for g in grads]
    for g in grads:
        g *= g.dtype.type(inv_scale)
    return bool(xp.stack(flags).any())


def _agree_across_ranks(found, grads):
    """MAX over the ranks of the found-inf flag, so that every rank skips the same steps."""
    xp = get_array_module(*grads) if grads else numpy
    flag = xp.asarray([1.0 if found else 0.0], dtype=numpy.float32)
    comm.all_reduce(flag, op=comm.ReduceOp.MAX)
    return bool(flag[0] > 0)
