"""Tensor: an array that records the Functions applied to it (the walk back is engine.py)."""
import builtins as _b

import numpy

from . import backend, dtypes
from .grad_mode import is_grad_enabled

# memory.py's counter while tracking is on: called with each array a Tensor wraps (and its grad_fn)
memory_hook = None


def _on_own_device(method):
    """Run an in-place method with its tensor's CUDA device current (CuPy allocates and
    launches on the current device, PyTorch on the tensor's); the method itself without CuPy."""
    if backend.cupy is None:  # decided at import: every tensor then lives on the CPU
        return method

    def run(self, *args, **kwargs):
        switch = backend.switch_to((self.array,))
        if switch is None:
            return method(self, *args, **kwargs)
        with switch:
            return method(self, *args, **kwargs)
    run.__name__, run.__qualname__, run.__doc__ = method.__name__, method.__qualname__, method.__doc__
    return run


def dtype_shortcut(name, dtype):
    """The method ``name(self)``: ``self.to(dtype)`` (as ``Tensor.float``, ``Module.half``)."""
    def convert(self):
        return self.to(dtype)
    convert.__name__ = convert.__qualname__ = name
    convert.__doc__ = f"``self.to(dtrain.{dtype.name})``."
    return convert


class DeviceDtypeShortcuts:
    """``cpu()``, ``cuda()``, ``float()``, ``double()``, ``half()``: shortcuts for ``self.to(...)``,
    shared by Tensor (``to`` returns a converted copy, or self) and nn.Module (``to`` converts
    its parameters and buffers in place and returns self)."""

    __slots__ = ()

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        """To a CUDA device: the current one (as ``dtrain.cuda.set_device`` chose), or ``device``
        (an index, "cuda:N" or a Device)."""
        return self.to("cuda" if device is None else device)

    float = dtype_shortcut("float", dtypes.float32)
    double = dtype_shortcut("double", dtypes.float64)
    half = dtype_shortcut("half", dtypes.float16)


class Tensor(DeviceDtypeShortcuts):
    """An n-dimensional array that records the operations applied to it.

    The raw NumPy (CPU) or CuPy (GPU) array is the attribute ``array``; ``data`` is, as
    in PyTorch, a detached Tensor that shares that storage.

    Example:
        >>> x = dtrain.tensor([1.0, 2.0], requires_grad=True)
        >>> (x * x).sum().backward()
        >>> x.grad
        tensor([2., 4.])
    """

    __slots__ = ("array", "requires_grad", "grad", "grad_fn", "_version", "_hooks", "_post_hooks",
                 "__weakref__")
    __array_priority__ = 1000  # numpy_array * tensor goes to Tensor.__rmul__

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        # as torch.Tensor(data): the default float dtype unless one is given (dtrain.tensor infers)
        from .creation import _to_array
        self._init(_to_array(data, dtype or dtypes.get_default_dtype(), device, copy=True), requires_grad)

    def _init(self, array, requires_grad=False, grad_fn=None):
        self.array = array
        self.grad = None
        self.grad_fn = grad_fn
        self._version = 0
        self._hooks = None
        self._post_hooks = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)
        elif grad_fn is not None:
            self.requires_grad = True
        if memory_hook is not None:
            memory_hook(array, grad_fn)

    @classmethod
    def _wrap(cls, array, grad_fn=None):
        if isinstance(array, numpy.generic):  # NumPy turns 0-d results into scalars
            array = numpy.asarray(array)
        t = object.__new__(Tensor)
        t._init(array, grad_fn=grad_fn)
        return t

    # ---- basic properties ------------------------------------------------------------
    @property
    def shape(self):
        return Size(self.array.shape)

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def device(self):
        return backend.device_of(self.array)

    @property
    def is_cuda(self):
        return backend.is_cuda_array(self.array)

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def data(self):
        return Tensor._wrap(self.array)

    @data.setter
    def data(self, value):
        self.array = value.array if isinstance(value, Tensor) else value
        if memory_hook is not None:
            memory_hook(self.array, None)

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def dim(self):
        return self.array.ndim

    def size(self, dim=None):
        if dim is None:
            return self.shape
        return self.array.shape[_check_dim(dim, self.ndim, "size")]

    def numel(self):
        return int(self.array.size)

    def element_size(self):
        return self.array.itemsize

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    def is_floating_point(self):
        return dtypes.is_floating(self.dtype)

    def is_contiguous(self):
        return bool(self.array.flags.c_contiguous)

    def data_ptr(self):
        a = self.array
        return a.data.ptr if self.is_cuda else a.ctypes.data

    # ---- conversion ------------------------------------------------------------------
    def numpy(self):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("Can't call numpy() on a Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if self.is_cuda:
            raise TypeError("can't convert a cuda tensor to numpy: use tensor.cpu() first")
        return self.array

    def item(self):
        if self.array.size != 1:
            raise ValueError(f"a Tensor with {self.array.size} elements cannot be converted to a Python scalar")
        return self.array.reshape(()).item() if not self.is_cuda else backend.asnumpy(self.array).item()

    def tolist(self):
        return backend.asnumpy(self.array).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.array.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self.array.size} elements is ambiguous")
        return bool(self.item())

    def __index__(self):
        if self.dtype.kind not in "iub" or self.array.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        a = backend.asnumpy(self.array)
        return a if dtype is None else a.astype(dtype)

    def to(self, *args, **kwargs):
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(other_tensor)``;
        differentiable; returns ``self`` when nothing changes."""
        device, dtype = parse_to_args(args, kwargs)
        from .ops.shape import Cast, ToDevice
        out = self
        if device is not None:
            if device != self.device:
                out = ToDevice.apply(out, device=device)
        if dtype is not None:
            if dtype != out.dtype:
                # a cast to an integer or bool dtype leaves the graph, as in PyTorch
                out = Cast.apply(out if dtypes.is_differentiable(dtype) else out.detach(), dtype=dtype)
        return out

    long = dtype_shortcut("long", dtypes.int64)
    int = dtype_shortcut("int", dtypes.int32)
    bool = dtype_shortcut("bool", dtypes.bool_)

    def type(self, dtype=None):
        if dtype is None:
            return f"dtrain.{self.dtype.name}"
        return self.to(dtype)

    def type_as(self, other):
        return self.to(other.dtype)

    def view_as(self, other):
        """``self.view(other.shape)``."""
        return self.view(other.shape)

    # ---- new tensors like self (self's dtype and device unless given) ---------------------
    def _new(self, make, args, dtype, device, requires_grad):
        from . import creation
        return getattr(creation, make)(*args, dtype=self.dtype if dtype is None else dtype,
                                       device=self.device if device is None else device, requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        """Zeros of ``size`` with self's dtype and device (unless given), as in PyTorch.

        Example:
            >>> dtrain.ones(2, dtype=dtrain.float64).new_zeros(3).dtype
            dtype('float64')
        """
        return self._new("zeros", size, dtype, device, requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new("ones", size, dtype, device, requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new("empty", size, dtype, device, requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._new("full", (size, fill_value), dtype, device, requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        """A copy of ``data`` with self's dtype and device (unless given), detached."""
        return self._new("tensor", (data.detach() if isinstance(data, Tensor) else data,), dtype, device,
                         requires_grad)

    # ---- autograd --------------------------------------------------------------------
    def detach(self):
        return Tensor._wrap(self.array)

    def detach_(self):
        self.grad_fn = None
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad=True):
        if not self.is_leaf:
            if not requires_grad:
                raise RuntimeError("you can only change requires_grad flags of leaf variables: use detach() instead")
            return self
        if requires_grad and not dtypes.is_differentiable(self.dtype):
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients, got {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if self.is_leaf:
            return
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if getattr(self.grad_fn, "retains", None) is None:
            import weakref
            ref = weakref.ref(self)

            def keep(g):
                t = ref()
                if t is not None:
                    t.grad = g.detach() if t.grad is None else Tensor._wrap(t.grad.array + g.array)
            self.grad_fn.retains = keep
            self.register_hook(keep)

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned tensor
        replaces the gradient. Returns a handle with ``remove()``."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            if self.grad_fn.out_hooks is None:
                self.grad_fn.out_hooks = []
            hooks = self.grad_fn.out_hooks
        else:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` during backward as soon as this leaf's ``.grad`` is final
        for the pass, before backward goes on to earlier layers. Returns a handle."""
        if not self.is_leaf:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._post_hooks is None:
            self._post_hooks = []
        self._post_hooks.append(hook)
        return RemovableHandle(self._post_hooks, hook)

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        Args:
            gradient: d(output)/d(self); may be omitted only for a single-element tensor.
            retain_graph: keep the graph so that backward can run through it again.
        """
        from .engine import run_backward
        run_backward(self, gradient, retain_graph)

    # ---- in-place ops (not recorded; refused where they would corrupt autograd) --------
    def _check_inplace(self, op):
        if self.requires_grad and is_grad_enabled():
            if self.is_leaf:
                raise RuntimeError(
                    f"{op}: a leaf Tensor that requires grad is being used in an in-place operation; "
                    f"wrap it in `with dtrain.no_grad():` (as optimizers do) or use the out-of-place op")
            raise RuntimeError(f"{op}: in-place operations on tensors that are part of a graph are not "
                               f"supported; use the out-of-place op instead")
        self._version += 1

    def _inplace(self, op, value):
        """Write ``value`` (an array, broadcast to self's shape) into self's storage."""
        self._check_inplace(op)
        value = _raw(value, self)
        if numpy.shape(value) != self.array.shape and numpy.broadcast_shapes(numpy.shape(value), self.array.shape) != self.array.shape:
            raise RuntimeError(f"{op}: output with shape {tuple(self.shape)} doesn't match the broadcast "
                               f"shape {numpy.broadcast_shapes(numpy.shape(value), self.array.shape)}")
        self.array[...] = value
        return self

    @_on_own_device
    def copy_(self, src):
        """Copy ``src``'s values into self; ``src`` may live on another device (as in PyTorch)."""
        if isinstance(src, Tensor):
            src = backend.to_device(src.array, self.device)
        return self._inplace("copy_", src)

    @_on_own_device
    def fill_(self, value):
        return self._inplace("fill_", value)

    @_on_own_device
    def zero_(self):
        return self._inplace("zero_", 0)

    def _ufunc_(self, op, ufunc, operand):
        """``self = ufunc(self, operand)`` computed straight into self's storage."""
        self._check_inplace(op)
        a = self.array
        try:
            getattr(backend.get_array_module(a), ufunc)(a, _raw(operand, self), out=a)
        except (ValueError, TypeError) as e:
            o = _raw(operand, self)
            raise RuntimeError(f"{op}: cannot apply to a tensor of shape {list(a.shape)} and dtype {a.dtype} "
                               f"with an operand of shape {list(numpy.shape(o))} and dtype "
                               f"{getattr(o, 'dtype', type(o).__name__)}: {e}") from None
        return self

    @_on_own_device
    def add_(self, other, alpha=1):
        return self._ufunc_("add_", "add", other if alpha == 1 else _raw(other, self) * alpha)

    @_on_own_device
    def sub_(self, other, alpha=1):
        return self._ufunc_("sub_", "subtract", other if alpha == 1 else _raw(other, self) * alpha)

    @_on_own_device
    def mul_(self, other):
        return self._ufunc_("mul_", "multiply", other)

    @_on_own_device
    def div_(self, other):
        return self._ufunc_("div_", "true_divide", other)

    @_on_own_device
    def addcmul_(self, t1, t2, value=1):
        prod = _raw(t1, self) * _raw(t2, self)
        return self._ufunc_("addcmul_", "add", prod if value == 1 else prod * value)

    @_on_own_device
    def addcdiv_(self, t1, t2, value=1):
        q = _raw(t1, self) / _raw(t2, self)
        return self._ufunc_("addcdiv_", "add", q if value == 1 else q * value)

    @_on_own_device
    def lerp_(self, end, weight):
        return self._inplace("lerp_", self.array + _raw(weight, self) * (_raw(end, self) - self.array))

    @_on_own_device
    def clamp_(self, min=None, max=None):
        xp = backend.get_array_module(self.array)
        return self._inplace("clamp_", xp.clip(self.array, min, max))

    @_on_own_device
    def sqrt_(self):
        return self._inplace("sqrt_", backend.get_array_module(self.array).sqrt(self.array))

    @_on_own_device
    def neg_(self):
        return self._inplace("neg_", -self.array)

    @_on_own_device
    def pow_(self, exponent):
        return self._inplace("pow_", self.array ** _raw(exponent, self))

    @_on_own_device
    def uniform_(self, a=0.0, b=1.0, generator=None):
        from .random import uniform_array
        return self._inplace("uniform_", uniform_array(self.shape, a, b, self.dtype, self.device, generator))

    @_on_own_device
    def normal_(self, mean=0.0, std=1.0, generator=None):
        from .random import normal_array
        return self._inplace("normal_", normal_array(self.shape, mean, std, self.dtype, self.device, generator))

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    @_on_own_device
    def __setitem__(self, index, value):
        if isinstance(value, Tensor) and value.requires_grad and is_grad_enabled():
            raise RuntimeError("__setitem__: the value requires grad, but writing into a tensor records no graph "
                               "and would drop its gradient; build the result with dtrain.cat, stack or where")
        self._check_inplace("__setitem__")
        from .ops.index import normalize_index
        value = _raw(value, self)
        shape = numpy.shape(value)
        lead = next((i for i, n in enumerate(shape) if n != 1), len(shape))
        if lead and hasattr(value, "reshape"):  # leading 1s broadcast away, as in PyTorch (NumPy refuses (1,) into ())
            value = value.reshape(shape[lead:])
        where = normalize_index(index, self)
        backend.check_index_bounds(self.array.shape, where)  # CuPy would wrap an out-of-range index around
        try:
            self.array[where] = value
        except ValueError as e:
            raise RuntimeError(f"__setitem__: a value of shape {list(shape)} cannot be written into a tensor "
                               f"of shape {list(self.shape)} at index {index!r} ({e})") from None

    # ---- printing --------------------------------------------------------------------
    def __repr__(self):
        a = backend.asnumpy(self.array)
        if a.dtype.name == "bfloat16":  # ml_dtypes' kind "V" takes no floatmode: printed as the float32 it widens to
            a = a.astype(numpy.float32)
        # as PyTorch: whole numbers print as "1.", otherwise every element with 4 decimals
        finite = a[numpy.isfinite(a)] if a.dtype.kind == "f" else a
        mode = "fixed" if a.dtype.kind == "f" and (finite != numpy.round(finite)).any() else "maxprec"
        body = numpy.array2string(a, separator=", ", prefix="tensor(", precision=4, floatmode=mode)
        extra = []
        if self.dtype not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool_):
            extra.append(f"dtype=dtrain.{self.dtype.name}")
        if self.is_cuda:
            extra.append(f"device='{self.device}'")
        if self.grad_fn is not None:
            extra.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return f"tensor({body}{''.join(', ' + e for e in extra)})"

    __hash__ = object.__hash__  # __eq__ (methods.py) is elementwise; identity hashing keeps tensors usable as keys


def is_tensor(obj):
    """True if ``obj`` is a dtrain Tensor (a Parameter included)."""
    return isinstance(obj, Tensor)


def numel(input):  # noqa: A002
    """The number of elements of ``input``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"numel(): argument 'input' must be Tensor, not {type(input).__name__}")
    return input.numel()


class Size(tuple):
    """The shape of a tensor: a tuple, as ``torch.Size`` is."""

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n

    def __repr__(self):
        return f"dtrain.Size({list(self)})"


class RemovableHandle:
    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def zero_grads(params, set_to_none=True):
    """Reset the gradients of ``params``: to None, or to zeros in place (Module and Optimizer)."""
    for p in params:
        if p.grad is None:
            continue
        if set_to_none:
            p.grad = None
        else:
            p.grad.detach_()
            p.grad.zero_()


def parse_to_args(args, kwargs):
    """(Device or None, dtype or None) from the arguments of ``to()``: ``to(device)``,
    ``to(dtype)``, ``to(device, dtype)``, ``to(other_tensor)``, or keywords."""
    kwargs = dict(kwargs)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("copy", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, (str, backend.Device, _b.int)) and not isinstance(a, _b.bool):  # an int: a CUDA index
            device = a
        else:
            dtype = a
    return (None if device is None else backend.resolve(backend.Device(device))), dtypes.as_dtype(dtype)


def _check_dim(dim, ndim, op):
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim % n


def _raw(value, like):
    """The array behind ``value`` (a Tensor, array, nested list or Python number), on like's
    device: a Tensor elsewhere is an error; host data (a NumPy array or a list) is copied to
    a CUDA ``like``, as CuPy refuses it both in ufuncs and in ``a[...] = value``."""
    if isinstance(value, Tensor):
        if value.device != like.device:
            raise RuntimeError(f"expected all tensors to be on the same device, but found {like.device} and {value.device}")
        return value.array
    if like.is_cuda and isinstance(value, (numpy.ndarray, list, tuple)):
        return backend.to_device(numpy.asarray(value), like.device)
    return value
