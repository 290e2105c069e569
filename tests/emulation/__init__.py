"""CuPy's device model, emulated over NumPy, for dtrain's tests (never imported by dtrain).

Run the tests with ``DTRAIN_CUPY_EMULATION=N`` (N emulated GPUs, e.g. 2): tests/conftest.py
then puts these modules in ``sys.modules`` as ``cupy``, ``cupy.cuda``, ``cupy.cuda.nccl``,
``cupy.cuda.runtime``, ``cupy.random``, ``cupy.linalg``, ``cupy.fft``, ``cupy.lib.stride_tricks``,
``cupyx``, ``cupyx.scipy.special`` before dtrain is imported, so dtrain's guarded CuPy import
finds them and every ``gpu``-marked test runs; processes the tests start (mpiexec, the
launcher) get the same through ``boot/sitecustomize.py`` on their PYTHONPATH. Unset, nothing
changes.

What is emulated, as CuPy 14 behaves without peer access between devices:

* ``ndarray``: a NumPy array plus the device it lives on. Kernels (ufuncs, routines,
  computing methods, advanced indexing, setitem) run on the current device and raise
  CuPy's ValueError ("The device where the array resides (1) is different from the current
  device (0). Peer access is unavailable between these devices.") for an operand on another
  device; a NumPy operand is a TypeError ("Unsupported type"); results are allocated on the
  current device. Views (basic indexing, reshape, transpose, broadcast_to, ...) keep their
  array's device and check nothing. Reductions and full scalar indexing give 0-d arrays.
  ``copy()``/``asarray`` copy from any device to the current one.
* No implicit host conversion: ``numpy.asarray(a)`` raises CuPy's TypeError. The ways to
  the host (``get``, ``asnumpy``, ``item``, ``tolist``, ``float``/``int``/``bool``, ``repr``,
  pickling, boolean-mask reads, ``nonzero``/``unique``/one-argument ``where``, and every
  ``synchronize``) are counted in ``syncs`` with their caller: ``syncs.count``,
  ``syncs.events``, ``syncs.reset()``.
* ``cupy.cuda.Device`` (per-thread current device; context manager; ``use``), ``Stream``
  (per-thread current stream per device; launches logged in ``stream.log``), ``Event``
  (records the stream and its launch count), ``runtime.getDeviceCount`` /
  ``getDeviceProperties``, the default memory pool's ``used_bytes``/``total_bytes``/
  ``free_all_blocks`` per device, ``cupy.random.RandomState`` (NumPy's generator: draws
  differ from cuRAND's), ``cupyx.scipy.special.erf``, ``cupy.lib.stride_tricks.as_strided``.
* Stream order: every kernel, NCCL call and host read checks that memory last written on
  another stream is ordered after that write (an event the stream waited for, a
  synchronize, the legacy null stream's implicit sync with blocking streams); if not, a
  ``device.StreamOrderError`` names both streams (``DTRAIN_EMULATION_STREAM_CHECK=0`` turns
  the check off).
* Integer-array indices out of range wrap around (reads, writes, ``add.at``,
  ``take_along_axis``, ``take``), as CuPy's do; NumPy would raise.
* ``cupy.cuda.nccl`` over MPI with CuPy 14's signatures: see :mod:`.nccl`. A recv that would
  deadlock a GPU is an ``NcclError`` after ``DTRAIN_EMULATION_P2P_TIMEOUT`` seconds (20).
* Only names real CuPy 14 has (:mod:`.names`); tests/test_emulation.py compares the
  signatures with the installed ``cupy`` package where one is importable.

Not emulated: asynchrony itself (work runs at once; the stream-order check stands in for
it), write-after-read races, peer access, memory limits, cuRAND's values, CUDA-aware MPI,
NumPy-only behaviour CuPy lacks (writing through a read-only broadcast view raises here).
"""
import os
import sys

from . import device as _device
from .device import SYNCS as syncs

ENV = "DTRAIN_CUPY_EMULATION"
BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot")
_installed = []


def requested():
    """The number of emulated devices ``DTRAIN_CUPY_EMULATION`` asks for (0: not set)."""
    value = os.environ.get(ENV, "").strip()
    if not value or value == "0":
        return 0
    if not value.isdigit():
        raise ValueError(f"{ENV}={value!r}: expected the number of emulated GPUs, e.g. {ENV}=2")
    return int(value)


def modules(n_devices=None):
    """The emulated modules by name (built once per process), with ``n_devices`` devices."""
    from .namespaces import BUILT, build
    if n_devices is not None:
        _device.N_DEVICES[0] = n_devices
    return dict(BUILT) if BUILT else build()


def install(n_devices):
    """Put the emulated modules into ``sys.modules`` (before dtrain is imported)."""
    if "dtrain" in sys.modules and not _installed:
        raise RuntimeError("the CuPy emulation must be installed before dtrain is imported")
    real = sys.modules.get("cupy")
    if real is not None and not _installed:
        raise RuntimeError("the real cupy is already imported: the emulation cannot replace it")
    sys.modules.update(modules(n_devices))
    _installed.append(n_devices)


def installed():
    return bool(_installed)


def child_env(env):
    """``env`` with the bootstrap that installs the emulation in a child process first on PYTHONPATH."""
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOT]
    return {**env, "PYTHONPATH": os.pathsep.join([BOOT, *paths])}
