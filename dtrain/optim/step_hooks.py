"""Global optimizer step pre-hooks, as ``torch.optim.optimizer.register_optimizer_step_pre_hook``.

Every ``step()`` of every optimizer (the base class's and each subclass's own, wrapped by
``Optimizer.__init_subclass__``) first calls the registered hooks. DistributedDataParallel
uses one to skip, on every rank together, the step after a backward whose averaged
gradients were not finite (see ``dtrain.parallel.nonfinite``).
"""
import functools

from ..tensor.tensor import RemovableHandle

_pre_hooks = []  # hook(optimizer, args, kwargs) -> None or (args, kwargs), in registration order


def register_optimizer_step_pre_hook(hook):
    """Call ``hook(optimizer, args, kwargs)`` before every optimizer's ``step()``; it may
    return ``(args, kwargs)`` to replace the step's arguments, or None. Returns a handle
    whose ``remove()`` unregisters it.

    Example:
        >>> handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: print("step"))
        >>> handle.remove()
    """
    if not callable(hook):
        raise TypeError(f"register_optimizer_step_pre_hook: hook must be callable as hook(optimizer, args, kwargs), "
                        f"got {hook!r}")
    _pre_hooks.append(hook)
    return RemovableHandle(_pre_hooks, hook)


def with_step_hooks(step):
    """``step`` that runs the global pre-hooks first (applied once per class defining ``step``)."""
    if getattr(step, "_runs_step_hooks", False):
        return step

    @functools.wraps(step)
    def hooked(self, *args, **kwargs):
        for hook in tuple(_pre_hooks):
            result = hook(self, args, kwargs)
            if result is not None:
                args, kwargs = result
        return step(self, *args, **kwargs)
    hooked._runs_step_hooks = True
    return hooked
