"""The emulated modules: ``cupy`` and its submodules, ``cupyx``; :func:`build` makes them."""
import inspect
import types

import numpy

from . import core as A
from . import device as D
from . import names

# routines that bring data to the host to size their output: one synchronisation each
_SYNCING = {"nonzero", "flatnonzero", "argwhere", "unique", "extract", "compress", "bincount", "histogram"}
# pure metadata: a view of their first operand, no kernel
_VIEWS = {"broadcast_to", "moveaxis", "swapaxes", "transpose", "expand_dims", "squeeze", "reshape", "ravel",
          "flip", "fliplr", "flipud", "rollaxis", "atleast_1d", "atleast_2d", "atleast_3d", "diagonal", "real",
          "split", "array_split", "hsplit", "vsplit", "dsplit", "broadcast_arrays", "imag"}
# answer about dtypes and shapes on the host; array arguments are read for their dtype only
_HOST = {"result_type", "can_cast", "promote_types", "min_scalar_type", "common_type", "isscalar", "ndim", "shape",
         "size", "issubdtype", "broadcast_shapes", "iscomplexobj", "isrealobj", "get_printoptions",
         "set_printoptions", "printoptions", "shares_memory", "may_share_memory", "binary_repr", "base_repr",
         "format_float_positional", "format_float_scientific", "isfortran", "array_repr", "array_str"}


def cupy_keywords(fn, qualified):
    """``fn`` taking keywords as CuPy's ``qualified`` function does: a keyword CuPy lacks is
    CuPy's TypeError, one that NumPy spells differently is renamed (functions without a
    recorded signature pass through)."""
    params = names.SIGNATURES.get(qualified)
    if params is None or "**kwargs" in params:
        return fn
    try:
        theirs = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        theirs = list(params)
    rename = {p: theirs[i] for i, p in enumerate(params) if p not in theirs and i < len(theirs)}
    short = qualified.rsplit(".", 1)[-1]

    def call(*args, **kwargs):
        for k in list(kwargs):
            if k not in params:
                raise TypeError(f"{short}() got an unexpected keyword argument '{k}'")
            if k in rename:
                kwargs[rename[k]] = kwargs.pop(k)
        return fn(*args, **kwargs)
    return call


def _function(fn, name, prefix="cupy."):
    fn_numpy, fn = fn, cupy_keywords(fn, prefix + name)
    if name in _HOST:
        def f(*args, **kwargs):
            call = A._Call(check=False)
            return fn(*call.unwrap(args), **{k: call.unwrap(v) for k, v in kwargs.items()})
    elif name in _VIEWS:
        def f(*args, **kwargs):
            return A.view(fn, args, kwargs, name)
    elif name in _SYNCING:
        def f(*args, **kwargs):
            A._sync(name, next((a for a in args if isinstance(a, A.ndarray)), None))
            return A.kernel(fn, args, kwargs, name)
    else:
        writes = (0,) if name == "copyto" else ()

        def f(*args, **kwargs):
            return A.kernel(fn, args, kwargs, name, writes=writes)
    f.__name__ = f.__qualname__ = name
    f.__wrapped__ = fn_numpy
    return f


def _fill(module, source, allowed, skip=(), prefix="cupy."):
    for name in allowed:
        if name in skip or not hasattr(source, name):
            continue
        obj = getattr(source, name)
        if isinstance(obj, numpy.ufunc):
            obj = A._ufuncs[name]
        elif callable(obj) and not isinstance(obj, type):
            obj = _function(obj, name, prefix)
        setattr(module, name, obj)


# ---- creation and host transfer (written out: they take host data) -------------------------
def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """From the host (a copy to the current device), or another device (a copy), or as is."""
    if isinstance(a, A.ndarray):
        if a._dev != D.current_id():
            a = a.copy()
        return a.astype(dtype, copy=bool(copy)) if dtype is not None or copy else a
    return array(a, dtype, copy=True, order=order)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, A.ndarray):
        if obj._dev != D.current_id():
            obj = obj.copy()
            copy = False
        r = numpy.array(obj._a, dtype=dtype, copy=bool(copy), order=order, ndmin=ndmin)
        return obj if r is obj._a else A.ndarray._from(r, D.current_id())
    host = A._Call(host_ok=True).unwrap(obj)  # a list of CuPy arrays: each must be on the current device
    return A.ndarray._from(numpy.array(host, dtype=dtype, order=order, ndmin=ndmin, copy=True), D.current_id())


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, A.ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    r = numpy.asarray(a, order=order)
    if out is not None:
        out[...] = r
        return out
    return r


def get_array_module(*args):
    for a in args:
        if isinstance(a, A.ndarray):
            return BUILT["cupy"]
    return numpy


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, A.ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
                        f"got {type(a).__name__})")
    return A.kernel(numpy.ascontiguousarray, (a,), {} if dtype is None else {"dtype": dtype}, "ascontiguousarray")


def _take_along_axis(a, indices, axis):
    n = a.size if axis is None else a.shape[axis]
    return numpy.take_along_axis(a, indices % n if n else indices, axis)  # CuPy wraps out-of-range indices


def _take(a, indices, axis=None, out=None):
    return numpy.take(a, indices, axis, out, mode="wrap")  # CuPy's take wraps around


def where(condition, x=None, y=None):
    if x is None and y is None:
        A._sync("where", condition if isinstance(condition, A.ndarray) else None)
        return A.kernel(numpy.where, (condition,), {}, "where")
    return A.kernel(numpy.where, (condition, x, y), {}, "where")


def as_strided(x, shape=None, strides=None):
    """``cupy.lib.stride_tricks.as_strided``: a view, writable (CuPy has no flag to say otherwise)."""
    v = numpy.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides, writeable=True)
    return A.ndarray._from(v, x._dev)


class RandomState:
    """``cupy.random.RandomState(seed=None, method=None)`` over NumPy's PCG64: draws are
    allocated on the current device (values differ from CuPy's cuRAND streams)."""

    def __init__(self, seed=None, method=None):
        self.seed(seed)

    def seed(self, seed=None):
        self._g = numpy.random.default_rng(seed)

    def _out(self, r):
        return A.ndarray._from(numpy.asarray(r), D.current_id())

    def standard_normal(self, size=None, dtype=float):
        return self._out(self._g.standard_normal(size, dtype=numpy.dtype(dtype)))

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=float):
        return self._out(self._g.normal(loc, scale, size).astype(dtype))

    def random_sample(self, size=None, dtype=float):
        return self._out(self._g.random(size, dtype=numpy.dtype(dtype)))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
        return self._out(self._g.uniform(low, high, size).astype(dtype))

    def rand(self, *size, **kwarg):
        return self.random_sample(size, **kwarg)

    def randn(self, *size, **kwarg):
        return self.standard_normal(size, **kwarg)

    def randint(self, low, high=None, size=None, dtype=int):
        return self._out(self._g.integers(low, high, size=size, dtype=dtype))

    def permutation(self, a):
        if isinstance(a, A.ndarray):
            return A.kernel(self._g.permutation, (a,), {}, "permutation")
        return self._out(self._g.permutation(a))

    def shuffle(self, a):
        A.kernel(self._g.shuffle, (a,), {}, "shuffle")

    def choice(self, a, size=None, replace=True, p=None):
        return A.kernel(self._g.choice, (a, size, replace, p), {}, "choice")


_states = {}


def get_random_state():
    return _states.setdefault(D.current_id(), RandomState())


def seed(seed=None):
    get_random_state().seed(seed)


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:
        import math
        erf = numpy.vectorize(math.erf, otypes=[x.dtype])
    return A.kernel(erf, (x,), {}, "erf")


def scatter_add(a, slices, value):
    """``cupyx.scatter_add``: ``cupy.add.at`` (CuPy 14.2's neither warns nor checks bounds)."""
    A._ufuncs["add"].at(a, slices, value)


BUILT = {}  # the modules of the last build()
_BY_NUMPY = {}  # NumPy function -> emulated function, for __array_function__


def function_for(func):
    return _BY_NUMPY.get(func)


def _module(name, doc=None):
    m = types.ModuleType(name, doc)
    m.__file__ = __file__
    return m


def build():
    """The emulated modules by name, ready for ``sys.modules``."""
    from . import nccl
    cupy = _module("cupy", "CuPy emulated over NumPy for dtrain's tests (tests/emulation).")
    special = {"ndarray", "asnumpy", "asarray", "array", "get_array_module", "ascontiguousarray", "where",
               "cuda", "random", "linalg", "fft", "lib", "testing", "fuse"}
    _fill(cupy, numpy, names.CUPY, skip=special)
    cupy.__version__ = "14.2.0"
    cupy.ndarray, cupy.asnumpy, cupy.asarray, cupy.array = A.ndarray, asnumpy, asarray, array
    cupy.get_array_module, cupy.ascontiguousarray, cupy.where = get_array_module, ascontiguousarray, where
    cupy.take_along_axis = _function(_take_along_axis, "take_along_axis")
    cupy.take = _function(_take, "take")
    cupy.get_default_memory_pool = D.get_default_memory_pool
    cupy.get_default_pinned_memory_pool = D.get_default_pinned_memory_pool
    cupy.ufunc = A.ufunc

    cuda = _module("cupy.cuda")
    for name in ("Device", "Stream", "Event", "get_current_stream", "get_elapsed_time", "MemoryPool",
                 "PinnedMemoryPool", "is_available"):
        setattr(cuda, name, getattr(D, name))
    cuda.MemoryPointer = A.MemoryPointer
    cuda.get_device_id = D.current_id
    runtime = _module("cupy.cuda.runtime")
    for name in ("getDeviceCount", "getDevice", "setDevice", "deviceSynchronize", "getDeviceProperties",
                 "memGetInfo", "runtimeGetVersion", "driverGetVersion", "CUDARuntimeError"):
        setattr(runtime, name, getattr(D, name))
    cuda.runtime, cuda.device, cuda.stream = runtime, cuda, cuda
    nccl_module = nccl.build(_module("cupy.cuda.nccl"))
    cuda.nccl = nccl_module

    random = _module("cupy.random")
    random.RandomState, random.get_random_state, random.seed = RandomState, get_random_state, seed
    linalg = _module("cupy.linalg")
    _fill(linalg, numpy.linalg, names.LINALG, prefix="cupy.linalg.")
    fft = _module("cupy.fft")
    _fill(fft, numpy.fft, names.FFT, prefix="cupy.fft.")
    lib = _module("cupy.lib")
    stride_tricks = _module("cupy.lib.stride_tricks")
    stride_tricks.as_strided = as_strided
    lib.stride_tricks = stride_tricks
    cupy.cuda, cupy.random, cupy.linalg, cupy.fft, cupy.lib = cuda, random, linalg, fft, lib

    cupyx = _module("cupyx")
    cupyx.scatter_add = scatter_add
    cupyx.__version__ = "14.2.0"
    scipy = _module("cupyx.scipy")
    special_module = _module("cupyx.scipy.special")
    special_module.erf = _erf
    scipy.special, cupyx.scipy = special_module, scipy

    for m, src in ((cupy, numpy), (linalg, numpy.linalg), (fft, numpy.fft)):
        for name, obj in vars(m).items():
            np_obj = getattr(src, name, None)
            if callable(np_obj) and not isinstance(np_obj, (type, numpy.ufunc)) and callable(obj):
                _BY_NUMPY[np_obj] = obj
    BUILT.update({"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.runtime": runtime, "cupy.cuda.nccl": nccl_module,
            "cupy.random": random, "cupy.linalg": linalg, "cupy.fft": fft, "cupy.lib": lib,
            "cupy.lib.stride_tricks": stride_tricks, "cupyx": cupyx, "cupyx.scipy": scipy,
            "cupyx.scipy.special": special_module})
    return dict(BUILT)
