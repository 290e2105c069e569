"""The backward walk over the graph of Functions that produced a Tensor, and the graph
query that shares its traversal (reachable_leaves)."""
import heapq

import numpy

from ..timing import phase
from . import anomaly, backend, dtypes
from .function import SliceGrad, unbroadcast
from .grad_mode import no_grad
from .tensor import Tensor, _raw


def run_backward(root, gradient, retain_graph):
    if not root.requires_grad:
        raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn: "
                           "call requires_grad_() on the inputs, or check for a no_grad block")
    if backend.cupy is not None:
        switch = backend.switch_to((root.array,))
        if switch is not None:
            with switch:  # the seed is allocated on the root's device (the call below finds it current)
                return run_backward(root, gradient, retain_graph)
    if gradient is None:
        if root.array.size != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs, but the output has "
                               f"shape {tuple(root.shape)}: pass backward(gradient=...) of that shape")
        grad = backend.get_array_module(root.array).ones(root.array.shape, dtype=root.dtype)
        external = False
    else:
        # the seed takes the output's dtype (as PyTorch), so a float32 graph stays float32 in backward
        grad = backend.get_array_module(root.array).asarray(_raw(gradient, root), dtype=root.dtype)
        if tuple(grad.shape) != tuple(root.shape):
            raise RuntimeError(f"backward: gradient has shape {tuple(grad.shape)} but the output has "
                               f"shape {tuple(root.shape)}")
        external = True
    with no_grad(), phase("backward"):
        if root.grad_fn is None:
            _accumulate(root, grad, owned=False)
        else:
            _walk(root.grad_fn, grad, external, retain_graph)


def reachable_leaves(tensors):
    """The leaf tensors that require grad and that a backward from ``tensors`` would reach.

    Each leaf appears once, in the order a depth-first walk of the graph from the outputs
    (taken in the given order) first meets it; an output that is itself such a leaf counts.

    Args:
        tensors: a Tensor or an iterable of Tensors (the outputs).

    Returns:
        list of Tensor.

    Example:
        >>> w, b = dtrain.ones(3, requires_grad=True), dtrain.ones(3, requires_grad=True)
        >>> from dtrain.tensor import reachable_leaves
        >>> [t is w for t in reachable_leaves((w * 2).sum())]   # b is not reached
        [True]
    """
    if isinstance(tensors, Tensor):
        tensors = (tensors,)
    roots, outputs_that_are_leaves = [], []
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"reachable_leaves: expected Tensors, got {type(t).__name__}")
        if t.grad_fn is not None:
            roots.append(t.grad_fn)
        elif t.requires_grad:
            outputs_that_are_leaves.append(t)
    leaves, seen = [], set()
    for t in outputs_that_are_leaves + _count_edges(roots)[2]:
        if id(t) not in seen:
            seen.add(id(t))
            leaves.append(t)
    return leaves


def _count_edges(root_fns):
    """Walk the graph above ``root_fns`` once. Returns ``(deps, leaf_deps, leaves)``: for each
    Function and for each leaf (by id), the number of edges that deliver a gradient to it,
    and the leaves in the order first met."""
    deps, leaf_deps, leaves = {}, {}, []
    stack, seen = list(root_fns), set(root_fns)
    while stack:
        fn = stack.pop()
        if fn.inputs is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or directly access saved tensors "
                "after they have already been freed). Specify retain_graph=True on the first backward call.")
        for t, need in zip(fn.inputs, fn.needs_input_grad):
            if not need:
                continue
            child = t.grad_fn
            if child is None:
                n = leaf_deps.get(id(t), 0)
                if n == 0:
                    leaves.append(t)
                leaf_deps[id(t)] = n + 1
            else:
                deps[child] = deps.get(child, 0) + 1
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
    return deps, leaf_deps, leaves


def _walk(root_fn, grad, external, retain_graph):
    # Phase 1: count, for every node and leaf, the edges that will deliver a gradient to it.
    deps, leaf_deps, _ = _count_edges((root_fn,))

    # Phase 2: run nodes newest-first once all their consumers are done (as PyTorch does),
    # so the last layer's gradients are final, and its hooks fire, before earlier layers run.
    buffers = {root_fn: grad}
    # per array routed along an edge (by id), how many edges it went along: one routed twice must
    # be copied before a leaf keeps it as .grad. An array's record is dropped once its only edge
    # has used it: ids are reused after an array dies, and a stale record made a fresh gradient
    # look routed twice (a 3.2 MB copy of the MLP's first weight gradient every step)
    routed = {id(grad): 2 if external else 1}
    leaf_bufs = {}
    # ids of the sums this walk allocated and holds in buffers/leaf_bufs: only these are added
    # into in place (an array a backward returned may be held elsewhere: its input, a saved value)
    sums = set()
    heap = [(-root_fn.seq, root_fn)]
    cuda = backend.cupy is not None
    while heap:
        fn = heapq.heappop(heap)[1]
        g = buffers.pop(fn, None)
        if g is not None:
            sums.discard(id(g))
            _used(routed, g)
            if type(g) is SliceGrad:
                g = _dense(g)
            # each node runs on its gradient's device (DataParallel's replicas live on other devices)
            switch = backend.switch_to((g,)) if cuda else None
            if switch is not None:
                switch.__enter__()
            try:
                if fn.out_hooks:
                    g = _run_hooks(fn.out_hooks, g)
                    routed[id(g)] = 2  # a hook may keep g or return an array it holds: never adopt it as a .grad
                _check_versions(fn)
                grads = fn.backward(g)
                if not isinstance(grads, tuple):
                    grads = (grads,)
                if len(grads) != len(fn.inputs):
                    raise RuntimeError(f"{fn.name}Backward returned {len(grads)} gradients for "
                                       f"{len(fn.inputs)} inputs: backward returns one per input (None for none)")
                if anomaly._enabled[0]:
                    anomaly.check_backward(fn, tuple(_dense(gi) if type(gi) is SliceGrad else gi for gi in grads))
            finally:
                if switch is not None:
                    switch.__exit__(None, None, None)
        else:
            grads = (None,) * len(fn.inputs)
        grads = list(grads)
        # every edge of this node counted before any is routed: a pass-through backward (Add's
        # (g, g)) hands one array to two leaves, and the first must not adopt it as its .grad
        # while the second's edge is still uncounted
        for i, (t, need, gi) in enumerate(zip(fn.inputs, fn.needs_input_grad, grads)):
            if need and gi is not None:
                if gi.shape != t.array.shape or gi.dtype != t.array.dtype:  # the per-edge cost: two compares
                    gi = grads[i] = _conform(fn, i, _dense(gi) if type(gi) is SliceGrad else gi, t.array)
                routed[id(gi)] = routed.get(id(gi), 0) + 1
        for i, (t, need, gi) in enumerate(zip(fn.inputs, fn.needs_input_grad, grads)):
            if not need:
                continue
            child = t.grad_fn
            if child is None:
                if gi is not None:
                    leaf_bufs[id(t)] = _merged(leaf_bufs.get(id(t)), gi, sums, routed)
                leaf_deps[id(t)] -= 1
                if leaf_deps[id(t)] == 0:
                    b = leaf_bufs.pop(id(t), None)
                    if b is not None:
                        sums.discard(id(b))
                        if type(b) is SliceGrad:
                            b = _dense(b)
                        # under retain_graph the graph's nodes live on, and one may hold b (a backward
                        # returning an array it kept): .grad then gets a copy, never b itself
                        owned = not retain_graph and routed.get(id(b), 0) <= 1 and b.base is None
                        _accumulate(t, b, owned=owned)
                        _used(routed, b)
            else:
                if gi is not None:
                    buffers[child] = _merged(buffers.get(child), gi, sums, routed)
                deps[child] -= 1
                if deps[child] == 0:
                    heapq.heappush(heap, (-child.seq, child))
        if not retain_graph:
            fn.__dict__.clear()
            fn.inputs = None


def _conform(fn, i, grad, input):  # noqa: A002
    """``grad``, returned by ``fn``'s backward for its input ``i``, made to match ``input`` as
    PyTorch's engine does: a gradient of a shape the input broadcasts to is summed down to the
    input's shape, any other shape is an error; the dtype is cast to the input's, except that a
    complex gradient for a real input (or an integer one for a complex input) is an error."""
    switch = backend.switch_to((grad,)) if backend.cupy is not None else None
    if switch is not None:
        with switch:  # the sum and the cast run on the gradient's device (the call below finds it current)
            return _conform(fn, i, grad, input)
    if grad.shape != input.shape:
        if not _broadcasts_to(input.shape, grad.shape):
            raise RuntimeError(f"{fn.name}Backward returned a gradient of shape {tuple(grad.shape)} for input {i} "
                               f"of shape {tuple(input.shape)}: a backward returns each input's gradient in that "
                               f"input's shape (or in a shape it broadcasts to)")
        grad = unbroadcast(grad, input.shape)
    if grad.dtype != input.dtype:
        if not dtypes.is_floating(grad.dtype) and (grad.dtype.kind == "c") != (input.dtype.kind == "c"):
            raise RuntimeError(f"{fn.name}Backward returned a gradient of dtype {grad.dtype} for input {i} "
                               f"of dtype {input.dtype}")
        grad = grad.astype(input.dtype)
    return grad


def _broadcasts_to(shape, target):
    try:
        return len(shape) <= len(target) and numpy.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def _used(routed, array):
    """Drop ``array``'s routing record if it went along one edge only and that edge has used it
    (it may die now, and its id then belong to another array)."""
    if routed.get(id(array)) == 1:
        del routed[id(array)]


def _merged(prev, grad, sums, routed):
    """``grad``, or ``prev`` (the gradient held for the same tensor) + ``grad``; the operands a
    new sum replaces are used up."""
    if prev is None:
        return grad
    out = _sum(prev, grad, sums)
    _used(routed, grad)
    if out is not prev:
        _used(routed, prev)
    return out


def _sum(prev, grad, sums):
    """``prev + grad``, two gradients for one tensor, either of them possibly a SliceGrad, on
    their device (where the tensor lives). The first sum is a fresh array, recorded in
    ``sums``; later gradients are added into it in place."""
    switch = backend.switch_to((grad.values if type(grad) is SliceGrad else grad,)) \
        if backend.cupy is not None else None
    if switch is None:
        return _sum_here(prev, grad, sums)
    with switch:
        return _sum_here(prev, grad, sums)


def _sum_here(prev, grad, sums):
    if id(prev) not in sums:
        if type(prev) is SliceGrad:
            prev = prev.dense()
        elif type(grad) is SliceGrad:
            prev = prev.copy()
        else:
            out = prev + grad
            sums.add(id(out))
            return out
        sums.add(id(prev))
    if type(grad) is SliceGrad:
        return grad.add_to(prev)
    prev += grad
    return prev


def _dense(grad):
    """A SliceGrad as a full array, made on its values' device."""
    switch = backend.switch_to((grad.values,)) if backend.cupy is not None else None
    if switch is None:
        return grad.dense()
    with switch:
        return grad.dense()


def _run_hooks(hooks, g):
    for h in list(hooks):
        r = h(Tensor._wrap(g))
        if r is not None:
            g = r.array if isinstance(r, Tensor) else r
    return g


def _check_versions(fn):
    for t, v in zip(fn.inputs, fn.versions):
        if v is not None and t._version != v:
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: an input of {fn.name} of shape {tuple(t.shape)} is at version {t._version}; "
                f"expected version {v} instead")


def _accumulate(leaf, g, owned):
    if backend.cupy is not None:
        switch = backend.switch_to((leaf.array,))
        if switch is not None:
            with switch:  # .grad's copy and sum run on the leaf's device (the call below finds it current)
                return _accumulate(leaf, g, owned)
    if isinstance(g, numpy.generic):
        g, owned = numpy.asarray(g), True
    if leaf._hooks:
        g = _run_hooks(leaf._hooks, g)
        owned = False
    if g.dtype != leaf.dtype:
        g = g.astype(leaf.dtype)
        owned = True
    if leaf.grad is None:
        leaf.grad = Tensor._wrap(g if owned else g.copy())
    else:
        leaf.grad.array += g  # in place: no new allocation per step
    if leaf._post_hooks:
        for h in list(leaf._post_hooks):
            h(leaf)
