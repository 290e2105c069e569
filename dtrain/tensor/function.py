"""Function: one differentiable op, its forward and backward side by side."""
import functools
import itertools
import numbers

from . import anomaly, backend
from .grad_mode import is_grad_enabled
from .tensor import Tensor

_seq = itertools.count()


class SliceGrad:
    """A gradient that is zero outside ``index`` (a basic index: ints, slices, None,
    Ellipsis) of an array of ``shape``, and ``values`` inside it: what the backward of a
    basic-indexed view (``x[i]``, split, chunk, unbind) returns.

    The backward walk keeps it sparse until it must be dense: the pieces of a split then sum
    into one zero-filled array, where full-size gradients would cost one zero-filled array
    and one full-size add per piece (a transformer's q, k, v split: three of each)."""

    __slots__ = ("shape", "dtype", "index", "values")

    def __init__(self, shape, index, values):
        self.shape, self.dtype, self.index, self.values = tuple(shape), values.dtype, index, values

    def dense(self):
        """The full gradient, a fresh array on the values' device (which must be current)."""
        out = backend.get_array_module(self.values).zeros(self.shape, dtype=self.dtype)
        out[self.index] = self.values
        return out

    def add_to(self, out):
        """``out += self`` in place (out: an array of this shape that the caller owns)."""
        out[self.index] += self.values
        return out


class Function:
    """Base of every differentiable op.

    A subclass writes ``forward(self, *arrays, **params)`` returning one array, and
    ``backward(self, grad)`` returning one gradient array (or None) per positional input,
    in that input's shape (the backward walk sums a gradient of a shape the input broadcasts
    to down to it, refuses any other shape, and casts to the input's dtype, as PyTorch's).
    Anything backward needs is saved as an attribute of ``self`` in forward; it is freed
    after backward unless ``retain_graph=True``. ``self.needs_input_grad`` says which
    inputs want a gradient (forward may skip saving what no gradient needs).

    backward must return either fresh arrays or views of ``grad``, never an array that
    a tensor still holds (the engine hands fresh arrays to ``.grad`` without copying).

    Use ``MyOp.apply(*tensors, **params)``; positional arguments must be Tensors.
    """

    __slots__ = ("inputs", "needs_input_grad", "seq", "versions", "out_hooks", "__dict__")
    differentiable = True

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @property
    def name(self):
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name}Backward>"

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op. Positional inputs are Tensors, or constants (Python numbers,
        arrays) that take part in forward but get no gradient."""
        fn = cls()
        arrays = [t.array if type(t) is Tensor or isinstance(t, Tensor) else t for t in inputs]
        if len(arrays) > 1:
            check_same_device(fn.name, arrays)
        switch = backend.switch_to(arrays) if backend.cupy is not None else None
        needs = tuple(isinstance(t, Tensor) and t.requires_grad for t in inputs)
        track = cls.differentiable and any(needs) and is_grad_enabled()
        fn.needs_input_grad = needs if track else (False,) * len(inputs)
        if switch is None:
            out = fn.forward(*arrays, **params)
        else:  # the op runs on its operands' device, whichever is current (as PyTorch)
            with switch:
                out = fn.forward(*arrays, **params)
        if anomaly._enabled[0]:
            anomaly.check_forward(fn, inputs, out)
        if not track:
            return Tensor._wrap(out)
        fn.inputs = inputs
        fn.versions = tuple(t._version if isinstance(t, Tensor) else None for t in inputs)
        fn.seq = next(_seq)
        fn.out_hooks = None
        return Tensor._wrap(out, fn)


def input_switch(args):
    """The ``cupy.cuda.Device`` to enter for work on ``args`` (its first Tensor's device), or
    None: no CuPy, no Tensor, or that device already current."""
    if backend.cupy is None:
        return None
    for a in args:
        if isinstance(a, Tensor):
            return backend.switch_to((a.array,))
    return None


def on_input_device(op):
    """Decorate a functional op whose wrapper works on arrays outside ``Function.apply``
    (masks, index arrays, checks): it runs with its first Tensor argument's CUDA device
    current, as ``Function.apply`` runs a kernel; a plain call on the CPU.

    Example:
        >>> @on_input_device
        ... def dropout(input, p=0.5, training=True): ...
    """
    @functools.wraps(op)
    def run(*args, **kwargs):
        switch = input_switch(args)
        if switch is None:
            return op(*args, **kwargs)
        with switch:
            return op(*args, **kwargs)
    return run


def check_same_device(op, arrays):
    devices = {backend.device_of(a) for a in arrays if not isinstance(a, numbers.Number)}
    if len(devices) > 1:
        a, b = sorted(map(str, devices))[:2]
        raise RuntimeError(f"{op}: expected all tensors to be on the same device, but found at least "
                           f"two devices, {a} and {b}")


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape`` (the inverse of broadcasting ``shape`` up to grad.shape)."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if lead:
        grad = grad.reshape(shape)
    return grad

