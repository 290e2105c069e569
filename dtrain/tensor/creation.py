"""Creating tensors: tensor, as_tensor, from_numpy, zeros, ones, randn, arange, ..."""
import numbers

import numpy

from . import backend, dtypes, random
from .tensor import Tensor


def _device(device):
    return backend.CPU if device is None else backend.resolve(backend.Device(device))


def _to_array(data, dtype=None, device=None, copy=True):
    """The array for ``data`` with PyTorch's dtype inference: Python floats give the
    default dtype, Python ints int64; NumPy/CuPy arrays keep theirs."""
    dtype = dtypes.as_dtype(dtype)
    if isinstance(data, Tensor):
        data = data.array
    if isinstance(data, numpy.ndarray) or backend.is_cuda_array(data) or isinstance(data, numpy.generic):
        arr = data
    else:
        if isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) or backend.is_cuda_array(d)
                                                   for d in _flat(data)):
            data = _nested_tensor_to_list(data)  # numpy.asarray refuses CuPy arrays (no implicit host copy)
        try:
            arr = numpy.asarray(data)
        except ValueError:  # NumPy >= 1.24 refuses ragged nested sequences
            arr = None
        if arr is None or arr.dtype == object:
            raise TypeError(f"could not convert {type(data).__name__} of mixed or ragged contents to a tensor")
        if dtype is None:
            if dtypes.is_floating(arr.dtype):  # bfloat16 elements (kind "V") too, as float16's: the default dtype
                arr = arr.astype(dtypes.get_default_dtype())
            elif arr.dtype.kind in "iu":
                arr = arr.astype(dtypes.int64)
            elif arr.dtype.kind not in "b":
                raise TypeError(f"could not infer a dtype for data of dtype {arr.dtype}")
        copy = False  # asarray of Python data already made a fresh array
    if device is not None:
        target = _device(device)
    else:
        target = backend.CPU if isinstance(arr, numpy.generic) else backend.device_of(arr)
    out = backend.to_device(arr, target)
    if out is not arr:
        copy = False
    with backend.device_guard(target):  # astype and copy allocate on the current device
        if dtype is not None and out.dtype != dtype:
            out, copy = out.astype(dtype), False
        if copy:
            out = out.copy()
        return backend.get_array_module(out).asarray(out)


def _flat(data):
    for d in data:
        if isinstance(d, (list, tuple)):
            yield from _flat(d)
        else:
            yield d


def _nested_tensor_to_list(data):
    if isinstance(data, Tensor) or backend.is_cuda_array(data):
        return backend.asnumpy(getattr(data, "array", data))
    if isinstance(data, (list, tuple)):
        return [_nested_tensor_to_list(d) for d in data]
    return data


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor that copies ``data`` (a nested list, number, NumPy/CuPy array or Tensor).

    Args:
        data: the values; arrays keep their dtype, Python floats give float32.
        dtype: the dtype to convert to (optional).
        device: "cpu" or "cuda:N" (default: where ``data`` is, else the CPU).
        requires_grad: record operations on the tensor for backward.

    Example:
        >>> dtrain.tensor([[1, 2], [3, 4]]).dtype
        dtype('int64')
    """
    return Tensor._wrap(_to_array(data, dtype, device, copy=True)).requires_grad_(requires_grad)


def as_tensor(data, dtype=None, device=None):
    """Like ``tensor`` but shares memory with ``data`` when dtype and device allow."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    if isinstance(data, Tensor):
        return data.to(*(a for a in (device, dtype) if a is not None))
    return Tensor._wrap(_to_array(data, dtype, device, copy=False))


def from_numpy(array):
    """A tensor that shares memory with the NumPy array (writes show through both ways)."""
    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor._wrap(array)


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, numbers.Integral) or isinstance(s, bool):
            raise TypeError(f"size must be a tuple of ints, but got an element of type {type(s).__name__}")
        if s < 0:
            raise RuntimeError(f"trying to create tensor with negative dimension {s}: {list(size)}")
    return tuple(int(s) for s in size)


def _make(fill, size, dtype, device, requires_grad, default=None):
    device = _device(device)
    dtype = dtypes.as_dtype(dtype) or default or dtypes.get_default_dtype()
    xp = backend.module_for(device)
    with backend.device_guard(device):
        arr = fill(xp, _shape(size), dtype)
    return Tensor._wrap(arr).requires_grad_(requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, d: xp.zeros(s, d), size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, d: xp.ones(s, d), size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, d: xp.empty(s, d), size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = dtypes.promote_scalar(dtypes.bool_, fill_value)
    return _make(lambda xp, s, d: xp.full(s, fill_value, d), (size,) if isinstance(size, int) else size,
                 dtype, device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    for name, v in (("n", n), ("m", m)):
        if v is not None and v < 0:
            raise RuntimeError(f"eye: {name} must be greater or equal to 0, got {v}")
    return _make(lambda xp, s, d: xp.eye(n, m, dtype=d), (), dtype, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """Values from start (inclusive) to end (exclusive); int64 unless a bound is a float."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    floaty = any(isinstance(v, float) for v in (start, end, step))
    default = dtypes.get_default_dtype() if floaty else dtypes.int64
    return _make(lambda xp, s, d: xp.arange(start, end, step).astype(d), (), dtype, device, requires_grad, default)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    if steps < 0:
        raise RuntimeError(f"linspace: number of steps must be non-negative, got {steps}")
    return _make(lambda xp, s, d: xp.linspace(start, end, steps).astype(d), (), dtype, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False, generator=None):
    """Standard normal samples from the device's generator (see ``manual_seed``)."""
    device = _device(device)
    arr = random.normal_array(_shape(size), 0.0, 1.0, dtype, device, generator)
    return Tensor._wrap(arr).requires_grad_(requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False, generator=None):
    """Uniform samples on [0, 1)."""
    device = _device(device)
    arr = random.uniform_array(_shape(size), 0.0, 1.0, dtype, device, generator)
    return Tensor._wrap(arr).requires_grad_(requires_grad)


def randint(low, high=None, size=None, dtype=None, device=None, generator=None):
    """Integers on [low, high); ``randint(high, size)`` as in PyTorch."""
    if size is None:
        if not isinstance(high, (tuple, list)):
            raise TypeError("randint() missing the size argument, e.g. randint(0, 10, (3,))")
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if high <= low:
        raise RuntimeError(f"randint: expected low < high, but got low={low}, high={high}")
    device = _device(device)
    dtype = dtypes.as_dtype(dtype) or dtypes.int64
    arr = random.integers_array(low, high, _shape(tuple(size)), dtype, device, generator)
    return Tensor._wrap(arr)


def randperm(n, dtype=None, device=None, generator=None):
    if n < 0:
        raise RuntimeError(f"randperm: n must be non-negative, got {n}")
    device = _device(device)
    return Tensor._wrap(random.permutation_array(n, dtypes.as_dtype(dtype) or dtypes.int64, device, generator))


def _like(fn, t, dtype, device, requires_grad, *args):
    return fn(*args, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return _like(zeros, t, dtype, device, requires_grad, tuple(t.shape))


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return _like(ones, t, dtype, device, requires_grad, tuple(t.shape))


def empty_like(t, dtype=None, device=None, requires_grad=False):
    return _like(empty, t, dtype, device, requires_grad, tuple(t.shape))


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return _like(full, t, dtype, device, requires_grad, tuple(t.shape), fill_value)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return _like(randn, t, dtype, device, requires_grad, *t.shape)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return _like(rand, t, dtype, device, requires_grad, *t.shape)
