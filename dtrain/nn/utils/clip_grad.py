"""Gradient clipping, on the raw gradient arrays (no graph, no temporaries per element)."""
import contextlib
import math

from ...tensor import Tensor
from ...tensor.backend import get_array_module, switch_to


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad.array for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale gradients in place so that their total norm is at most ``max_norm``.

    The total norm is the norm of all gradients together, as if concatenated into one
    vector; gradients are multiplied by ``min(1, max_norm / (total_norm + 1e-6))``.

    Args:
        parameters: a Tensor or an iterable of Tensors whose ``.grad`` is clipped.
        max_norm: the largest allowed total norm.
        norm_type: the p of the p-norm; ``float("inf")`` for the largest magnitude.
        error_if_nonfinite: raise if the total norm is nan or inf.
        foreach: accepted for PyTorch compatibility; ignored.

    Returns:
        The total norm before clipping, as a 0-d Tensor.

    Example:
        >>> loss.backward()
        >>> nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    """
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        return Tensor._wrap(get_array_module().zeros(()))
    with switch_to(grads[:1]) or contextlib.nullcontext():  # the gradients' GPU, whichever is current
        return _clip_norm(grads, float(max_norm), norm_type, error_if_nonfinite)


def _clip_norm(grads, max_norm, norm_type, error_if_nonfinite):
    xp = get_array_module(*grads)
    if norm_type == math.inf:
        norms = [xp.abs(g).max() if g.size else xp.zeros((), g.dtype) for g in grads]
        total = xp.max(xp.stack(norms))
    else:
        norms = [xp.linalg.norm(g.ravel(), ord=norm_type) for g in grads]
        total = xp.linalg.norm(xp.stack(norms), ord=norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite "
                           f"({float(total)}), so it cannot be clipped. To disable this error and scale the "
                           f"gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g *= coef.astype(g.dtype)
    return Tensor._wrap(xp.asarray(total))


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient in place to ``[-clip_value, clip_value]``.

    Example:
        >>> nn.utils.clip_grad_value_(model.parameters(), clip_value=0.5)
    """
    clip_value = float(clip_value)
    for g in _grads(parameters):
        with switch_to((g,)) or contextlib.nullcontext():
            get_array_module(g).clip(g, -clip_value, clip_value, out=g)
