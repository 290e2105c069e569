"""``dtrain.utils.checkpoint``: activation checkpointing, as ``torch.utils.checkpoint``.

The checkpointed forward runs under ``no_grad`` and keeps only its inputs; backward reruns it
with grad enabled, from the same random state (dropout draws the same masks) and under the
autocast regions that were open at the forward (backward usually runs outside them), and
backpropagates through the recomputed graph: the inputs' gradients go back to the outer graph,
the parameters used inside (not explicit inputs) get theirs accumulated into ``.grad``.

``use_reentrant=True`` and ``False`` share this one mechanism (a recorded node whose backward
recomputes and runs a nested backward, PyTorch's reentrant scheme). They differ where PyTorch's
two variants differ visibly:

- ``True``: keyword arguments are refused; with no tensor input requiring grad the output
  requires none (PyTorch warns "None of the inputs have requires_grad=True") and the
  parameters inside get no gradient.
- ``False`` (recommended): keyword arguments are passed through (their top-level Tensors are
  inputs too); with no tensor input requiring grad the node is still recorded, so the
  parameters inside get their gradients as PyTorch's non-reentrant variant gives them. (If
  nothing inside requires grad either, the output then claims to require grad and backward
  raises "none of output has requires_grad=True".)

Known difference from PyTorch's non-reentrant variant: a parameter used by several checkpointed
segments has its ``.grad`` accumulated (and its post-accumulate-grad hooks run) once per
segment, not once per backward: DistributedDataParallel then needs such parameters to be used
by one segment only. The parameters used inside a segment are not in the recorded graph, so a
graph query (``reachable_leaves``, DDP's ``find_unused_parameters=True``) does not find them:
use DDP with ``find_unused_parameters=False`` (its default). On a CUDA device CuPy's generator has no state to save: the checkpointed
forward draws one seed from the device's generator and runs on a generator seeded with it, and
the recomputation reruns on a fresh one from the same seed (exact recomputation; the masks
differ from an uncheckpointed run's). The CPU generator's state is saved and restored exactly.
"""
import contextlib
import warnings

from ..amp import autocast, get_autocast_dtype, is_autocast_cache_enabled, is_autocast_enabled
from ..nn import Sequential
from ..tensor import Tensor, enable_grad, get_rng_state, is_grad_enabled, no_grad, set_rng_state, tensor
from ..tensor.function import Function
from ..tensor.random import default_generator
from ..tensor.replay import capture, reenter

__all__ = ["checkpoint", "checkpoint_sequential"]

_SEED_BOUND = 2 ** 63 - 1
_AUTOCAST_DEVICES = ("cpu", "cuda")


def checkpoint(function, *args, use_reentrant=None, preserve_rng_state=True, **kwargs):
    """``function(*args, **kwargs)`` without keeping its activations: they are recomputed in backward.

    Args:
        function: what to run; it returns a Tensor or a tuple/list of Tensors (other items in
            the tuple are passed through without gradient).
        *args: its positional arguments; the Tensors among them (and among the values of
            ``kwargs``) are the inputs whose gradients flow back.
        use_reentrant: True or False (see the module); None warns, as PyTorch, and means True.
        preserve_rng_state: restore the random state of the forward for the recomputation
            (dropout then recomputes the same masks); False skips the save and restore.
        **kwargs: keyword arguments of ``function`` (``use_reentrant=False`` only).

    Returns:
        what ``function`` returns.

    Example:
        >>> y = checkpoint(block, x, use_reentrant=False)   # block's activations not kept
        >>> y.sum().backward()                              # block runs again here
    """
    if use_reentrant is None:
        warnings.warn("dtrain.utils.checkpoint: the use_reentrant parameter should be passed explicitly; "
                      "use_reentrant=False is recommended, None means True (as PyTorch)", stacklevel=2)
        use_reentrant = True
    if kwargs and use_reentrant:
        raise ValueError(f"Unexpected keyword arguments: {','.join(kwargs)} (use_reentrant=False accepts them)")
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
    any_requires_grad = any(t.requires_grad for t in tensors)
    if use_reentrant and not any_requires_grad:
        warnings.warn("None of the inputs have requires_grad=True. Gradients will be None", stacklevel=2)
    if not is_grad_enabled() or (use_reentrant and not any_requires_grad):
        with no_grad():  # nothing to record: the plain call (and no random state saved)
            return function(*args, **kwargs)
    if not any_requires_grad:  # non-reentrant: record the node anyway, for the parameters inside
        tensors.append(tensor(0.0, requires_grad=True, device=tensors[0].device if tensors else "cpu"))
    segment = _Segment(function, args, kwargs, preserve_rng_state, tensors)
    outputs = segment.run_forward()
    if isinstance(outputs, Tensor):
        return _SegmentOutput.apply(*tensors, segment=segment, index=0)
    return type(outputs)(_SegmentOutput.apply(*tensors, segment=segment, index=i) if isinstance(o, Tensor) else o
                         for i, o in enumerate(outputs))


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):  # noqa: A002
    """Run ``functions`` (a list of callables or an nn.Sequential) in order on ``input``,
    checkpointing each of the first ``segments - 1`` segments of ``len // segments`` functions;
    the last segment (the rest) runs normally, as PyTorch's.

    Args:
        functions: nn.Sequential or a list of modules/functions, each taking one input.
        segments: the number of segments (at least 1).
        input: the first function's input.
        use_reentrant: as in :func:`checkpoint`.
        **kwargs: ``preserve_rng_state`` only.

    Example:
        >>> out = checkpoint_sequential(nn.Sequential(*blocks), 4, x, use_reentrant=False)
    """
    if use_reentrant is None:
        warnings.warn("dtrain.utils.checkpoint.checkpoint_sequential: the use_reentrant parameter should be "
                      "passed explicitly; use_reentrant=False is recommended, None means True (as PyTorch)",
                      stacklevel=2)
        use_reentrant = True
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError(f"Unexpected keyword arguments: {','.join(kwargs)}")
    if isinstance(functions, Sequential):
        functions = list(functions.children())
    if not isinstance(segments, int) or segments < 1:
        raise ValueError(f"checkpoint_sequential: segments must be a positive int, got {segments!r}")

    def run(first, last):
        def forward(x):
            for f in functions[first:last]:
                x = f(x)
            return x
        return forward

    size = len(functions) // segments
    end = 0
    for start in range(0, size * (segments - 1), size):
        end = start + size
        input = checkpoint(run(start, end), input, use_reentrant=use_reentrant, preserve_rng_state=preserve)
    return run(end, len(functions))(input)


class _Segment:
    """One checkpointed call: its function and arguments, the random state its forward saw, and
    (during one backward pass) the recomputed graph that its outputs' nodes backpropagate through."""

    def __init__(self, function, args, kwargs, preserve_rng_state, tensors):
        self.function, self.args, self.kwargs = function, args, kwargs
        self.rng = _RandomState(tensors) if preserve_rng_state else None
        self.autocast = _AutocastState()
        self.contexts = capture()  # what the recomputation re-enters: e.g. DDP micro-shards' aliases
        self.tensors = tensors  # the recorded node's inputs
        self.outputs = None
        self.recomputed = None  # (outputs, detached inputs) until every output's node has run
        self.pending = 0

    def run_forward(self):
        with no_grad():
            outputs = self._call(self.args, self.kwargs) if self.rng is None else self.rng.first_run(
                lambda: self._call(self.args, self.kwargs))
        if isinstance(outputs, Tensor):
            self.outputs = (outputs,)
        elif isinstance(outputs, (tuple, list)) and any(isinstance(o, Tensor) for o in outputs):
            self.outputs = tuple(outputs)
        else:
            raise TypeError(f"checkpoint: the function returned {type(outputs).__name__}: it must return a Tensor "
                            f"or a tuple/list of Tensors")
        self.pending = sum(isinstance(o, Tensor) for o in self.outputs)
        return outputs

    def _call(self, args, kwargs):
        return self.function(*args, **kwargs)

    def backward(self, index, grad):
        """The gradients of the node's inputs from output ``index``'s gradient ``grad``; the
        parameters' gradients are accumulated by the nested backward."""
        if self.recomputed is None:
            self.recomputed = self._recompute()
        outputs, detached = self.recomputed
        out = outputs[index]
        if not isinstance(out, Tensor) or not out.requires_grad:
            raise RuntimeError("none of output has requires_grad=True, this checkpoint() is not necessary")
        self.pending -= 1
        last = self.pending == 0
        if last:  # the recomputed graph is freed by this backward; a second pass (retain_graph) recomputes
            self.recomputed = None
            self.pending = sum(isinstance(o, Tensor) for o in self.outputs)
        out.backward(grad, retain_graph=not last)
        grads = []
        for d in detached:
            grads.append(None if d is None or d.grad is None else d.grad.array)
            if d is not None:
                d.grad = None  # the next output's backward reports its own contribution only
        return tuple(grads)

    def _recompute(self):
        detached = {id(t): _detached(t) for t in self.tensors}
        args = tuple(detached[id(a)] if isinstance(a, Tensor) else a for a in self.args)
        kwargs = {k: detached[id(v)] if isinstance(v, Tensor) else v for k, v in self.kwargs.items()}
        with enable_grad(), self.autocast.reopened(), reenter(self.contexts):
            outputs = self._call(args, kwargs) if self.rng is None else self.rng.replay(lambda: self._call(args, kwargs))
        if isinstance(outputs, Tensor):
            outputs = (outputs,)
        return tuple(outputs), [detached[id(t)] for t in self.tensors]


def _detached(t):
    d = t.detach()
    d.requires_grad_(t.requires_grad)
    return d


class _SegmentOutput(Function):
    """Output ``index`` of a checkpointed segment: forward hands over the array the no_grad run
    made; backward recomputes the segment (once for all its outputs) and backpropagates."""

    def forward(self, *arrays, segment, index):
        self.segment, self.index = segment, index
        return segment.outputs[index].array

    def backward(self, grad):
        return self.segment.backward(self.index, grad)


class _RandomState:
    """The random state the checkpointed forward starts from, re-entered for the recomputation
    (the surrounding state is restored after it): dtrain's CPU generator, and the generators
    of the CUDA devices of the tensor arguments (forked from a drawn seed: see the module)."""

    def __init__(self, tensors):
        self.cpu = get_rng_state()
        self.cuda = {}
        for t in tensors:
            if t.is_cuda and t.device not in self.cuda:
                g = default_generator(t.device)
                self.cuda[t.device] = int(g.rng.integers(0, _SEED_BOUND, size=()))

    def first_run(self, run):
        return self._on_forked_cuda(run)

    def replay(self, run):
        surrounding = get_rng_state()
        set_rng_state(self.cpu)
        try:
            return self._on_forked_cuda(run)
        finally:
            set_rng_state(surrounding)

    def _on_forked_cuda(self, run):
        generators = {device: default_generator(device) for device in self.cuda}
        kept = {device: (g.rng, g.initial_seed()) for device, g in generators.items()}
        for device, g in generators.items():
            # seeded as a whole (stream and seed): get/set_rng_state inside see the forked stream
            g.manual_seed(self.cuda[device])
        try:
            return run()
        finally:
            for device, g in generators.items():
                rng, seed = kept[device]
                g.manual_seed(seed)  # the seed back (its new stream touches no device: replaced at once)
                g.rng = rng  # the stream itself, where it was: nothing replayed


class _AutocastState:
    """The autocast regions open at the checkpointed forward, reopened for the recomputation
    (backward usually runs outside them), and those open at backward but not at forward closed:
    the recomputation then casts as the forward did, as PyTorch's checkpoint does."""

    def __init__(self):
        self.dtypes = {d: get_autocast_dtype(d) for d in _AUTOCAST_DEVICES if is_autocast_enabled(d)}
        self.cache_enabled = is_autocast_cache_enabled()

    def reopened(self):
        regions = contextlib.ExitStack()
        for device in _AUTOCAST_DEVICES:
            if device in self.dtypes:
                regions.enter_context(autocast(device, dtype=self.dtypes[device], cache_enabled=self.cache_enabled))
            elif is_autocast_enabled(device):
                regions.enter_context(autocast(device, dtype=get_autocast_dtype(device), enabled=False))
        return regions
