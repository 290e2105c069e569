"""``dtrain.accelerator``: torch.accelerator's device-neutral helpers; dtrain's accelerator is CUDA
through CuPy.

As in PyTorch, :func:`current_accelerator` names the accelerator dtrain was installed with
(CuPy present: ``device('cuda')``; else None) unless ``check_available=True`` asks whether one is
usable now; the functions that need a device raise "Cannot access accelerator device when
none is available." without one.

Example:
    >>> device = dtrain.accelerator.current_accelerator() if dtrain.accelerator.is_available() else "cpu"
"""
from . import cuda
from .tensor import backend
from .tensor.backend import Device

NO_DEVICE = "Cannot access accelerator device when none is available."


def is_available():
    """True if an accelerator (a CUDA device that CuPy sees) can be used."""
    return cuda.is_available()


def current_accelerator(check_available=False):
    """``device('cuda')`` if dtrain has CUDA support (CuPy is installed), else None.

    Args:
        check_available: also require a usable device now (None without one).
    """
    if backend.cupy is None or (check_available and not is_available()):
        return None
    return Device("cuda")


def device_count():
    """The number of accelerator devices (0 without one)."""
    return cuda.device_count()


def _need_device():
    if not is_available():
        raise RuntimeError(NO_DEVICE)


def current_device_index():
    """The index of the current accelerator device."""
    _need_device()
    return cuda.current_device()


current_device_idx = current_device_index  # PyTorch's older name


def set_device_index(device):
    """Make ``device`` (an index, "cuda:N" or a Device) the current accelerator device."""
    _need_device()
    if device is not None:
        cuda.set_device(device)


set_device_idx = set_device_index  # PyTorch's older name


def synchronize(device=None):
    """Wait for all work on ``device`` (default: the current one) to finish."""
    _need_device()
    cuda.synchronize(device)


class device_index:
    """Make device ``device`` current inside a ``with`` block (None: change nothing).

    Example:
        >>> with dtrain.accelerator.device_index(1): ...
    """

    def __init__(self, device):
        self.device, self.previous = device, None

    def __enter__(self):
        if self.device is not None:
            self.previous = current_device_index()
            set_device_index(self.device)

    def __exit__(self, *exc):
        if self.previous is not None:
            set_device_index(self.previous)


def empty_cache():
    """Return cached, unused accelerator memory (nothing without a device)."""
    cuda.empty_cache()


memory_allocated = cuda.memory_allocated
max_memory_allocated = cuda.max_memory_allocated
memory_reserved = cuda.memory_reserved
max_memory_reserved = cuda.max_memory_reserved
reset_peak_memory_stats = cuda.reset_peak_memory_stats
