"""The emulated ``cupy.ndarray`` and the kernel-call rules, backed by NumPy.

A kernel (a ufunc, a routine, a method that computes) runs on the current device: every
array operand must live there (else CuPy's ValueError about peer access), a NumPy array
operand is refused (CuPy's TypeError "Unsupported type"), and the result is allocated on
the current device. View operations (basic indexing, reshape, transpose, moveaxis, ...)
launch nothing: no device check, the view stays on its array's device. Reductions and
full scalar indexing give 0-d arrays. Nothing reaches the host implicitly: ``__array__``
raises; ``get``/``asnumpy``/``item``/``float``/``bool``/``tolist``/``repr`` do, and each
counts one host synchronisation.
"""
import numpy

from . import device as D
from . import names

PEER_MESSAGE = ("The device where the array resides ({}) is different from the current device ({}). "
                "Peer access is unavailable between these devices.")
IMPLICIT_MESSAGE = ("Implicit conversion to a NumPy array is not allowed. "
                    "Please use `.get()` to construct a NumPy array explicitly.")


def _check(array, dev):
    if array._dev != dev:
        raise ValueError(PEER_MESSAGE.format(array._dev, dev))


def _root(a):
    while isinstance(a.base, numpy.ndarray):
        a = a.base
    return a


class _Call:
    """One kernel call's operand bookkeeping: unwraps emulated arrays (checking their device)
    and wraps the results on the current device."""

    __slots__ = ("dev", "check", "host_ok", "inputs")

    def __init__(self, check=True, host_ok=False):
        self.dev, self.check, self.host_ok, self.inputs = D.current_id(), check, host_ok, []

    def unwrap(self, x):
        if isinstance(x, ndarray):
            if self.check:
                _check(x, self.dev)
            self.inputs.append(x)
            return x._a
        if isinstance(x, numpy.ndarray):
            if not self.host_ok:
                raise TypeError(f"Unsupported type {type(x)}")
            return x
        if type(x) in (list, tuple):
            return type(x)(self.unwrap(i) for i in x)
        return x

    def wrap(self, r, dev=None):
        dev = self.dev if dev is None else dev
        if isinstance(r, numpy.ndarray):
            for w in self.inputs:
                if w._a is r:
                    return w
            return ndarray._from(r, dev)
        if isinstance(r, numpy.generic):
            return ndarray._from(numpy.asarray(r), dev)
        if type(r) in (list, tuple):
            return type(r)(self.wrap(i, dev) for i in r)
        return r


def kernel(fn, args, kwargs, name="kernel", host_ok=False, writes=()):
    """Run NumPy's ``fn`` as a CuPy kernel on the current device (see the module): it reads
    every array operand and writes ``out``, the arguments at positions ``writes`` and its result."""
    call = _Call(host_ok=host_ok)
    out = kwargs.get("out")
    a = call.unwrap(args)
    k = {key: call.unwrap(v) for key, v in kwargs.items()}
    written = [x for x in (out if type(out) is tuple else (out,)) if isinstance(x, ndarray)]
    written += [args[i] for i in writes if isinstance(args[i], ndarray)]
    stream = launch(name, call.inputs, written)
    r = fn(*a, **k)
    if out is not None and isinstance(out, ndarray):
        return out
    result = call.wrap(r)
    for x in result if type(result) in (list, tuple) else (result,):
        if isinstance(x, ndarray) and x._a.size and all(x is not w for w in call.inputs):
            D.access(_root(x._a), stream, name, write=True)
    return result


def launch(name, reads, writes):
    """Queue ``name`` on the current stream, which reads ``reads`` and writes ``writes`` (arrays)."""
    stream = D.get_current_stream()
    stream.launch(name)
    for x in reads:
        if x._a.size:
            D.access(_root(x._a), stream, name)
    for x in writes:
        if x._a.size:
            D.access(_root(x._a), stream, name, write=True)
    return stream


def view(fn, args, kwargs, name="view"):
    """Run NumPy's ``fn`` as a metadata-only CuPy operation: a result that is a view of the
    first array operand stays on its device unchecked; a copy is a kernel."""
    call = _Call(check=False)
    a = call.unwrap(args)
    k = {key: call.unwrap(v) for key, v in kwargs.items()}
    r = fn(*a, **k)
    if not call.inputs:
        return call.wrap(r)
    first = call.inputs[0]
    base = _root(first._a)
    results = r if type(r) in (list, tuple) else [r]
    if all(isinstance(x, numpy.ndarray) and _root(x) is base for x in results):
        return call.wrap(r, first._dev)
    for x in call.inputs:
        _check(x, D.current_id())
    D.get_current_stream().launch(name)
    return call.wrap(r)


class MemoryPointer:
    """``array.data``: ``ptr`` is the address of the first element, which
    :func:`lookup` maps back to the array's memory (the emulated NCCL reads it)."""

    def __init__(self, array):
        self.device_id = array._dev
        self.ptr = array._a.__array_interface__["data"][0] if array._a.size else 0
        _register(array)

    @property
    def device(self):
        return D.Device(self.device_id)

    def __int__(self):
        return self.ptr


_allocations = {}  # id(root numpy array) -> (root, device id): every buffer whose pointer was taken


def _register(array):
    root = _root(array._a)
    if id(root) not in _allocations:
        import weakref
        _allocations[id(root)] = (weakref.ref(root), array._dev)
        weakref.finalize(root, _allocations.pop, id(root), None)


def lookup(ptr, count, dtype):
    """The ``count`` elements of ``dtype`` at device address ``ptr``, as a NumPy view, and
    the device they live on; LookupError if no emulated buffer holds them all."""
    dtype = numpy.dtype(dtype)
    n = count * dtype.itemsize
    for ref, dev in list(_allocations.values()):
        root = ref()
        if root is None:
            continue
        start = root.__array_interface__["data"][0]
        if start <= ptr and ptr + n <= start + root.nbytes:
            flat = root.reshape(-1).view(numpy.uint8)
            return flat[ptr - start:ptr - start + n].view(dtype), dev
    raise LookupError(f"no emulated device buffer holds {n} bytes at {ptr:#x}")


class Flags:
    def __init__(self, a):
        self.c_contiguous, self.f_contiguous = a.flags.c_contiguous, a.flags.f_contiguous
        self.owndata = a.base is None

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


def _sync(kind, array=None):
    """A host synchronisation; reading ``array`` waits for the current stream's work."""
    D.SYNCS.record(kind)
    stream = D.get_current_stream()
    if array is not None and array._a.size:
        D.access(_root(array._a), stream, kind)
    stream.host_synced = stream.launches


def _rebuild(host):
    return ndarray._from(numpy.array(host), D.current_id())


_VIEW_METHODS = {"reshape", "view", "transpose", "swapaxes", "squeeze", "ravel", "diagonal"}
_SYNC_METHODS = {"tolist", "tobytes", "tofile", "dump", "dumps"}


class ndarray:
    """An array on an emulated device: a NumPy array and a device id."""

    __slots__ = ("_a", "_dev", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = numpy.empty(shape, dtype, order=order)
        self._dev = D.current_id()
        D.POOL.allocate(self._a, self._dev)

    @classmethod
    def _from(cls, a, dev):
        if a.dtype.kind in "OSUVMm":
            raise ValueError(f"Unsupported dtype {a.dtype}")  # CuPy holds numbers and bools only
        self = object.__new__(cls)
        self._a, self._dev = a, dev
        if a.base is None:
            D.POOL.allocate(a, dev)
        return self

    # ---- metadata -------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: Flags(self._a))
    device = property(lambda self: D.Device(self._dev))
    data = property(lambda self: MemoryPointer(self))

    @property
    def base(self):
        return None if self._a.base is None else ndarray._from(_root(self._a), self._dev)

    T = property(lambda self: ndarray._from(self._a.T, self._dev))
    mT = property(lambda self: ndarray._from(self._a.mT, self._dev))
    real = property(lambda self: view(numpy.real, (self,), {}))

    @property
    def imag(self):
        if self._a.dtype.kind != "c":  # CuPy: a read-only zero array, a copy
            return kernel(numpy.zeros_like, (self,), {})
        return view(numpy.imag, (self,), {})

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "descr": self.dtype.descr,
                "data": (self.data.ptr, False), "strides": None if self._a.flags.c_contiguous else self.strides,
                "version": 3}

    def __len__(self):
        if not self._a.ndim:
            raise TypeError("len() of unsized object")
        return len(self._a)

    # ---- the host, explicitly -------------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        _sync("get", self)
        host = numpy.array(self._a, order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        if not isinstance(arr, numpy.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("Shape or dtype mismatch")
        self._a[...] = arr

    def item(self):
        _sync("item", self)
        return self._a.item()

    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_MESSAGE)

    def _scalar(self, kind, convert):
        if self._a.size != 1:
            raise TypeError("only length-1 arrays can be converted to Python scalars") if kind != "bool" else \
                ValueError("The truth value of an array with more than one element is ambiguous. "
                           "Use a.any() or a.all()")
        _sync(kind, self)
        return convert(self._a.reshape(()).item())

    def __bool__(self):
        return self._scalar("bool", bool)

    def __float__(self):
        return self._scalar("float", float)

    def __int__(self):
        return self._scalar("int", int)

    def __complex__(self):
        return self._scalar("complex", complex)

    def __repr__(self):
        _sync("repr", self)
        return repr(self._a)

    def __str__(self):
        _sync("str", self)
        return str(self._a)

    def __format__(self, spec):
        _sync("format", self)
        return format(self._a.item() if not self._a.ndim else self._a, spec)

    def __reduce__(self):
        _sync("pickle", self)
        return _rebuild, (numpy.array(self._a),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        with self.device:
            return self.copy()

    def __iter__(self):
        if not self._a.ndim:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # ---- copies and casts -----------------------------------------------------------
    def copy(self, order="C"):
        """A copy on the current device (CuPy copies from another device too)."""
        return ndarray._from(numpy.array(self._a, order=order), D.current_id())

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and numpy.dtype(dtype) == self.dtype:
            return self
        k = {} if casting is None else {"casting": casting}
        return kernel(lambda a: a.astype(dtype, order=order, **k), (self,), {}, "astype")

    def fill(self, value):
        kernel(lambda a, v: a.fill(v), (self, value), {}, "fill", writes=(0,))

    def nonzero(self):
        _sync("nonzero")
        return kernel(numpy.nonzero, (self,), {}, "nonzero")

    def scatter_add(self, slices, value):
        _ufuncs["add"].at(self, slices, value)

    def __getattr__(self, name):
        if name not in names.NDARRAY or not hasattr(numpy.ndarray, name):
            raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")
        from .namespaces import cupy_keywords
        numpy_method = cupy_keywords(getattr(self._a, name), f"cupy.ndarray.{name}")
        if name in _SYNC_METHODS:
            def method(*args, **kwargs):
                _sync(name, self)
                return numpy_method(*args, **kwargs)
        elif name in _VIEW_METHODS:
            def method(*args, **kwargs):
                return view(lambda a, *x, **k: numpy_method(*x, **k), (self, *args), kwargs, name)
        else:
            def method(*args, **kwargs):
                return kernel(lambda a, *x, **k: numpy_method(*x, **k), (self, *args), kwargs, name)
        return method

    # ---- numpy protocol ---------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        u = _ufuncs.get(ufunc.__name__)
        if u is None:
            return NotImplemented
        return getattr(u, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import namespaces
        f = namespaces.function_for(func)
        if f is None:
            return NotImplemented
        return f(*args, **kwargs)

    # ---- indexing -------------------------------------------------------------------
    def __getitem__(self, key):
        items = key if type(key) is tuple else (key,)
        if all(_basic(i) for i in items):
            if Ellipsis not in items:
                items = items + (Ellipsis,)  # a 0-d view, not a NumPy scalar, for a full integer index
            return ndarray._from(self._a[items], self._dev)
        masks = [i for i in items if isinstance(i, ndarray) and i.dtype == numpy.bool_]
        if masks:
            _sync("boolean mask", masks[0])  # the output's size comes to the host
        call = _Call(host_ok=True)
        a = call.unwrap(self)
        key = wrap_indices(a.shape, tuple(call.unwrap(i) for i in items))
        stream = launch("getitem", call.inputs, ())
        r = call.wrap(a[key])
        D.access(_root(r._a), stream, "getitem", write=True)
        return r

    def __setitem__(self, key, value):
        items = key if type(key) is tuple else (key,)
        call = _Call(host_ok=True)
        call.unwrap(self)
        k = tuple(call.unwrap(i) for i in items)
        if not all(_basic(i) for i in k):
            k = wrap_indices(self._a.shape, k)
        v = call.unwrap(value)
        launch("setitem", call.inputs, (self,))
        self._a[k] = v


def wrap_indices(shape, key):
    """``key`` (unwrapped) with its integer-array entries taken modulo their axis' size: CuPy
    wraps out-of-range integer-array indices around where NumPy raises ("Differences between
    CuPy and NumPy"); scalar indices still raise."""
    key = tuple(numpy.asarray(i) if type(i) is list else i for i in key)
    widths = [0 if i is None or i is Ellipsis else i.ndim if isinstance(i, numpy.ndarray) and i.dtype == numpy.bool_
              else 1 for i in key]
    out, axis = [], 0
    for i, w in zip(key, widths):
        if i is Ellipsis:
            axis += len(shape) - sum(widths)
        elif isinstance(i, numpy.ndarray) and i.dtype.kind in "iu" and axis < len(shape) and shape[axis]:
            i = i % shape[axis]
        out.append(i)
        axis += w
    return tuple(out)


def _basic(i):
    return i is None or i is Ellipsis or type(i) is slice or (isinstance(i, (int, numpy.integer))
                                                            and not isinstance(i, bool))


class ufunc:
    """A CuPy ufunc: ``__call__``, ``at``, ``reduce``, ``accumulate``, ``reduceat``, ``outer``."""

    def __init__(self, u):
        self._u, self.__name__, self.name = u, u.__name__, u.__name__
        self.nin, self.nout, self.nargs, self.types = u.nin, u.nout, u.nargs, u.types

    def __call__(self, *args, **kwargs):
        return kernel(self._u, args, kwargs, self.name)

    def at(self, a, indices, b=None):
        def at(x, i, *v):
            self._u.at(x, wrap_indices(x.shape, i if type(i) is tuple else (i,)), *v)
        return kernel(at, (a, indices) if b is None else (a, indices, b), {}, f"{self.name}.at", writes=(0,))

    def reduce(self, *args, **kwargs):
        return kernel(self._u.reduce, args, kwargs, f"{self.name}.reduce")

    def accumulate(self, *args, **kwargs):
        return kernel(self._u.accumulate, args, kwargs, f"{self.name}.accumulate")

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        return kernel(self._u.reduceat, (array, indices, axis, dtype, out), {}, f"{self.name}.reduceat")

    def outer(self, *args, **kwargs):
        return kernel(self._u.outer, args, kwargs, f"{self.name}.outer")

    def __repr__(self):
        return f"<ufunc '{self.name}'>"


_ufuncs = {n: ufunc(getattr(numpy, n)) for n in names.CUPY if isinstance(getattr(numpy, n, None), numpy.ufunc)}


def _operator(name, uf, reflected=False, inplace=False):
    u = _ufuncs[uf]
    if inplace:
        def op(self, other):
            return u(self, other, out=self)
    elif reflected:
        def op(self, other):
            return u(other, self)
    else:
        def op(self, other):
            return u(self, other)
    op.__name__ = name
    setattr(ndarray, name, op)


for _name, _uf in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "true_divide"),
                   ("floordiv", "floor_divide"), ("mod", "remainder"), ("pow", "power"), ("matmul", "matmul"),
                   ("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor"),
                   ("lshift", "left_shift"), ("rshift", "right_shift")]:
    _operator(f"__{_name}__", _uf)
    _operator(f"__r{_name}__", _uf, reflected=True)
    if _name != "matmul":  # CuPy has no __imatmul__
        _operator(f"__i{_name}__", _uf, inplace=True)
for _name, _uf in [("lt", "less"), ("le", "less_equal"), ("gt", "greater"), ("ge", "greater_equal"),
                   ("eq", "equal"), ("ne", "not_equal")]:
    _operator(f"__{_name}__", _uf)
for _name, _uf in [("neg", "negative"), ("pos", "positive"), ("abs", "absolute"), ("invert", "invert")]:
    setattr(ndarray, f"__{_name}__", (lambda u: lambda self: u(self))(_ufuncs[_uf]))
ndarray.__divmod__ = lambda self, other: _ufuncs["divmod"](self, other)
