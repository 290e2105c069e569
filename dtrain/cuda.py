"""``dtrain.cuda``: what CUDA devices CuPy sees; works (answering no) without CuPy."""
from .tensor.backend import cuda_device_count, cuda_is_available


def is_available():
    """True if CuPy is installed and sees at least one CUDA device."""
    return cuda_is_available()


def device_count():
    """The number of CUDA devices CuPy sees (0 without CuPy)."""
    return cuda_device_count()


def current_device():
    if not is_available():
        raise RuntimeError("no CUDA device is available (CuPy missing or no GPU)")
    from .tensor.backend import cupy
    return cupy.cuda.Device().id


def set_device(device):
    from .tensor.backend import Device, cupy, module_for
    d = Device(device) if not isinstance(device, int) else Device("cuda", device)
    module_for(d)
    cupy.cuda.Device(d.index).use()


def synchronize(device=None):
    """Wait for all work on ``device`` (an index, "cuda:N" or Device; default: current) to finish."""
    if not is_available():
        return
    from .tensor.backend import Device, cupy
    if device is None:
        cupy.cuda.Device().synchronize()
    else:
        d = Device("cuda", device) if isinstance(device, int) else Device(device)
        cupy.cuda.Device(d.index).synchronize()


def manual_seed_all(seed):
    from .tensor.random import manual_seed
    manual_seed(seed)
