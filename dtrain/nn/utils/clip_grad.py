"""Gradient clipping, on the raw gradient arrays (no graph, no temporaries per element)."""
import contextlib
import math

from ...tensor import Tensor
from ...tensor.backend import get_array_module, switch_to


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad.array for p in parameters if p.grad is not None]


def _split(parameters):
    """The gradients whole on this rank, and those that are one rank's part of a gradient
    spread over several ranks (fully_shard's shards, ZeRO-2's owned gradients: their
    parameters carry ``_partial_grad``, see dtrain/distributed/sharded_grad.py), by the set of
    ranks: ``{ranks: (the mark, [arrays], a parameter's array)}`` in the parameters' order.
    Every parameter counts, with a gradient or not: a rank that holds no part of a set still
    joins its all-reduce (on the parameters' device)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    whole, spread = [], {}
    for p in parameters:
        mark = getattr(p, "_partial_grad", None)
        if mark is None:
            if p.grad is not None:
                whole.append(p.grad.array)
            continue
        parts = spread.setdefault(mark.ranks, (mark, [], p.array))[1]
        if p.grad is not None:
            parts.append(p.grad.array)
    return whole, spread


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

    Under fully_shard or ZeRO-2 (``DistributedDataParallel(gradient_sharding=True)``), where
    each rank holds only part of the gradients, the norm is that of the whole gradients (the
    ranks' partial sums all-reduced, as FSDP2's): call it on every rank then.

    Example:
        >>> loss.backward()
        >>> nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    """
    whole, spread = _split(parameters)
    norm_type = float(norm_type)
    grads = whole + [g for _, parts, _ in spread.values() for g in parts]
    if not grads and not spread:
        return Tensor._wrap(get_array_module().zeros(()))
    first = grads[:1] or [next(iter(spread.values()))[2]]
    with switch_to(first) or contextlib.nullcontext():  # the gradients' GPU, whichever is current
        return _clip_norm(whole, spread, float(max_norm), norm_type, error_if_nonfinite)


def _norm(grads, norm_type, xp):
    """The norm of ``grads`` together (0-d, their dtype)."""
    if norm_type == math.inf:
        norms = [xp.abs(g).max() if g.size else xp.zeros((), g.dtype) for g in grads]
        return xp.max(xp.stack(norms))
    norms = [xp.linalg.norm(g.ravel(), ord=norm_type) for g in grads]
    return xp.linalg.norm(xp.stack(norms), ord=norm_type)


def _spread_norm(mark, parts, like, norm_type, xp):
    """The norm of a gradient spread over ``mark.ranks``, from this rank's ``parts``: the
    p-th powers summed over the ranks (the largest magnitude for the inf-norm). Collective."""
    local = float(_norm(parts, norm_type, xp)) if parts else 0.0
    if norm_type == math.inf:
        return mark.all_reduce(local, "max", like)
    return mark.all_reduce(local ** norm_type, "sum", like) ** (1.0 / norm_type)


def _clip_norm(whole, spread, max_norm, norm_type, error_if_nonfinite):
    grads = whole + [g for _, parts, _ in spread.values() for g in parts]
    xp = get_array_module(*(grads or [like for _, _, like in spread.values()]))
    total = _norm(whole, norm_type, xp) if whole else None
    if spread:  # the same value on every rank, so every rank scales by the same coefficient
        dtype = grads[0].dtype if grads else "float32"
        norms = [xp.asarray(_spread_norm(mark, parts, like, norm_type, xp), dtype)
                 for mark, parts, like in spread.values()]
        total = _norm([n.reshape(1) for n in norms + ([total] if total is not None else [])], norm_type, xp)
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
