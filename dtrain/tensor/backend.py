"""Devices and the array module: NumPy on the CPU, CuPy on a GPU.

Everything that must be spelled differently for NumPy and CuPy lives here, so the
ops are written once against ``xp``.
"""
import numbers

import numpy

from . import device_checks

try:  # the CuPy import is guarded: CPU-only installs never need it
    import cupy
except Exception:  # ImportError, or a CuPy build that cannot load its CUDA libraries
    cupy = None


def cuda_device_count():
    if cupy is None:
        return 0
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # CuPy installed but no driver / no device
        return 0


def cuda_is_available():
    return cuda_device_count() > 0


class Device:
    """Where a tensor lives: ``Device("cpu")``, ``Device("cuda")``, ``Device("cuda:1")``;
    an int is a CUDA device index, as in PyTorch (``Device(1)`` is cuda:1).

    As in PyTorch, ``Device("cuda")`` has index None and means the CURRENT CUDA device
    (``dtrain.cuda.set_device``) at the moment it is used: tensors and modules moved or
    created there land on that device; a tensor's own ``.device`` always has an index.
    Devices compare as PyTorch's (``Device("cuda") != Device("cuda:0")``); unlike PyTorch's
    they also compare with strings, where "cuda" is the current device (``t.device == "cuda"``
    asks whether ``t`` is on the current CUDA device).

    Args:
        spec: a string "cpu", "cuda" or "cuda:N", another Device, or an int N.
        index: device index, for ``Device("cuda", 1)``.

    Example:
        >>> Device("cuda:1").index
        1
        >>> Device("cuda").index is None
        True
    """

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu", index=None):
        if isinstance(spec, Device):
            spec, index = spec.type, spec.index if index is None else index
        elif isinstance(spec, int) and not isinstance(spec, bool):
            if spec < 0 or index is not None:
                raise ValueError(f"device index must be a non-negative int (a CUDA device), got {spec!r}")
            spec, index = "cuda", spec
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string like 'cpu' or 'cuda:0', got {spec!r}")
        kind, _, idx = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"unknown device type {kind!r} in {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")
        if idx:
            if not idx.isdigit():
                raise ValueError(f"invalid device index {idx!r} in {spec!r}: expected 'cuda:N' with N >= 0")
            if index is not None and int(idx) != index:
                raise ValueError(f"device {spec!r} given together with a different index {index}")
            index = int(idx)
        if kind == "cpu":
            if index not in (None, 0):
                raise ValueError(f"the CPU has no device index {index}: use 'cpu'")
            index = None
        elif index is not None:
            if not isinstance(index, numbers.Integral) or isinstance(index, bool) or index < 0:
                raise ValueError(f"device index must be a non-negative int, got {index!r}")
            index = int(index)
        self.type, self.index = kind, index

    def __repr__(self):
        return f"device(type='{self.type}')" if self.index is None else f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):  # a convenience PyTorch lacks: "cuda" there is the current device
            a, b = resolve(self), resolve(Device(other))
            return (a.type, a.index) == (b.type, b.index)
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


CPU = Device("cpu")


def current_cuda_index():
    """The index of the current CUDA device of this thread (0 without CuPy, or where CuPy sees
    no device: CuPy installed on a machine without a GPU or driver, where getDevice raises a raw
    cudaError; the caller's own check then says that no CUDA device is available)."""
    return 0 if cupy is None or cuda_device_count() == 0 else cupy.cuda.runtime.getDevice()


def resolve(device):
    """``device`` with its index: "cuda" without one is the current CUDA device (as PyTorch)."""
    if device.type == "cuda" and device.index is None:
        return Device("cuda", current_cuda_index())
    return device


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy`` (as Chainer does)."""
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return numpy


def is_cuda_array(a):
    return cupy is not None and isinstance(a, cupy.ndarray)


_CUDA = {}  # index -> Device: built once, as device_of runs for every operand of every op


def device_of(array):
    if not is_cuda_array(array):
        return CPU
    index = array.device.id
    device = _CUDA.get(index)
    if device is None:
        device = _CUDA[index] = Device("cuda", index)
    return device


def module_for(device):
    """The array module that holds data on ``device``; a clear error when it cannot."""
    if device.type == "cpu":
        return numpy
    if cupy is None:
        raise RuntimeError(f"{device} requested but CuPy is not installed, so no CUDA device is available: "
                           f"install dtrain[cuda] or use 'cpu'")
    n = cuda_device_count()
    if resolve(device).index >= n:
        none = " (no CUDA device is available): use 'cpu'" if n == 0 else ""
        raise RuntimeError(f"{device} requested but only {n} CUDA device(s) are visible{none}")
    return cupy


def to_device(array, device):
    """Copy (or pass through) ``array`` so that it lives on ``device``."""
    device = resolve(device)
    if device_of(array) == device:
        return array
    if device.type == "cpu":
        return asnumpy(array)
    xp = module_for(device)
    with xp.cuda.Device(device.index):  # asarray copies a CuPy array from another GPU onto this one
        return xp.asarray(array)


def asnumpy(array):
    """``array`` on the host. From a GPU this synchronises the host with the device: the
    ops' deferred index checks (device_checks) raise their error here."""
    if not is_cuda_array(array):
        return numpy.asarray(array)
    host = cupy.asnumpy(array)
    device_checks.raise_pending()
    return host


class device_guard:
    """Make ``device`` current for CuPy allocations inside the block (no-op on CPU)."""

    def __init__(self, device):
        self.ctx = cupy.cuda.Device(resolve(device).index) if device.type == "cuda" else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def switch_to(arrays):
    """The ``cupy.cuda.Device`` to enter to run a kernel on ``arrays`` (those of the first
    CuPy array among them), or None where nothing needs entering: NumPy arrays, or that
    device already current. CuPy launches on the current device and refuses operands from
    another, while PyTorch runs an op on its operands' device, whichever is current.

    Example:
        >>> dev = switch_to(arrays)
        >>> with dev or contextlib.nullcontext(): ...
    """
    if cupy is None:
        return None
    for a in arrays:
        if isinstance(a, cupy.ndarray):
            index = a.device.id
            return None if index == cupy.cuda.runtime.getDevice() else cupy.cuda.Device(index)
    return None


# --- the few spellings that differ between NumPy and CuPy ------------------------------

def scatter_add(target, indices, values):
    """``target[indices] += values`` where repeated indices accumulate (unbuffered)."""
    get_array_module(target).add.at(target, indices, values)  # cupyx.scatter_add is CuPy's deprecated spelling


def sliding_window_view(x, window_shape, axis):
    """A strided, zero-copy, read-only view of every window, as
    ``numpy.lib.stride_tricks.sliding_window_view``: shape ``x.shape`` (trimmed along
    ``axis``) + ``window_shape``. Built here on as_strided for both modules because
    CuPy's own version copies window_shape to the GPU and syncs on every call (and is
    missing from older CuPy releases)."""
    shape = list(x.shape)
    for ax, w in zip(axis, window_shape):
        if not 0 < w <= shape[ax]:
            raise ValueError(f"window {tuple(window_shape)} does not fit axis {ax} of an array of shape {x.shape}")
        shape[ax] -= w - 1
    return as_strided(x, tuple(shape) + tuple(window_shape), x.strides + tuple(x.strides[ax] for ax in axis))


def as_strided(x, shape, strides):
    """A view of ``x`` with the given shape and byte strides (read-only on NumPy; CuPy's
    as_strided has no writeable flag: never write into an overlapping view)."""
    if is_cuda_array(x):
        from cupy.lib.stride_tricks import as_strided as ast
        return ast(x, shape=shape, strides=strides)
    return numpy.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)


class _CupyRNG:
    """CuPy's RandomState behind NumPy's Generator method names."""

    def __init__(self, seed):
        self.state = cupy.random.RandomState(seed)

    def standard_normal(self, size, dtype):
        return self.state.standard_normal(size, dtype=dtype)

    def random(self, size, dtype):
        return self.state.random_sample(size, dtype=dtype)

    def integers(self, low, high, size):
        return self.state.randint(low, high, size=size, dtype="int64")

    def permutation(self, n):
        return self.state.permutation(n)


def make_rng(device, seed):
    """A random generator with NumPy Generator's methods, on ``device``."""
    if device.type == "cpu":
        return numpy.random.default_rng(seed)
    module_for(device)
    with cupy.cuda.Device(resolve(device).index):
        return _CupyRNG(seed)


def broadcast_shapes(*shapes):
    """The shape that ``shapes`` broadcast to; ValueError if they do not (shape arithmetic
    only, the same for NumPy and CuPy arrays)."""
    return numpy.broadcast_shapes(*shapes)


def erf(x):
    """The error function, elementwise, keeping x's dtype (NumPy has none of its own)."""
    if is_cuda_array(x):
        from cupyx.scipy.special import erf as f
        return f(x)
    try:
        from scipy.special import erf as f
    except ImportError:  # scipy is optional: exact but slow, one Python call per element
        import math
        f = numpy.vectorize(math.erf, otypes=[x.dtype])
    return f(x)


def diagonal(a, offset=0, axis1=0, axis2=1):
    """The diagonal as a view that writes through to ``a`` where ``a`` is writable, as
    torch.diagonal's (NumPy's view is read-only unless asked; CuPy's always writes)."""
    d = get_array_module(a).diagonal(a, offset, axis1, axis2)
    if not is_cuda_array(d) and a.flags.writeable:
        d.setflags(write=True)
    return d


def repeat(a, counts):
    """``xp.repeat(a, counts)`` where ``counts`` is an int or an array of counts (CuPy takes
    only an int or a list: a CuPy counts array goes to the host, one sync)."""
    if is_cuda_array(counts):
        counts = counts.tolist()
    return get_array_module(a).repeat(a, counts)


def quiet_float_errors():
    """A context in which division by zero and overflow give inf/nan silently (NumPy warns
    by default; CuPy never reports floating-point errors)."""
    return numpy.errstate(divide="ignore", over="ignore", invalid="ignore")


def check_index_bounds(shape, index):
    """Raise IndexError, as NumPy does, if an integer-array entry of ``index`` (a tuple of
    ints, slices, None, Ellipsis and arrays) is out of range for an array of ``shape``.

    CuPy wraps such indices around silently instead of raising ("Differences between CuPy
    and NumPy"), so CuPy index arrays are checked here, on the device: the IndexError comes
    at the next host synchronisation (device_checks), the op meanwhile running on the
    wrapped-around indices. NumPy raises by itself.
    """
    if not any(_is_int_cuda_array(i) for i in index):
        return
    widths = [0 if i is None or i is Ellipsis else i.ndim if getattr(i, "dtype", None) == numpy.bool_ else 1
              for i in index]
    checks, axis = [], 0
    for i, w in zip(index, widths):
        if i is Ellipsis:
            axis += len(shape) - sum(widths)
        elif _is_int_cuda_array(i) and i.size and axis < len(shape):
            checks.append((axis, i))
        axis += w
    if not checks:
        return
    sizes = tuple((axis, shape[axis]) for axis, _ in checks)

    def make_error(*bounds):
        for k, (axis, n) in enumerate(sizes):
            low, high = bounds[2 * k], bounds[2 * k + 1]
            if low < -n or high >= n:
                return IndexError(f"index {high if high >= n else low} is out of bounds for axis {axis} with size {n}")
    device_checks.range_check(get_array_module(checks[0][1]), [(i, -n, n) for (_, i), (_, n) in zip(checks, sizes)],
                              ("index", sizes), make_error)


def _is_int_cuda_array(i):
    return is_cuda_array(i) and i.dtype.kind in "iu"
