"""``dtrain.backends.cudnn``: torch.backends.cudnn's flags. dtrain's convolutions run through
CuPy's matrix products, not cuDNN: ``benchmark`` and ``allow_tf32`` are recorded only, and
``deterministic`` holds already (dtrain's GPU kernels do not choose algorithms by timing).

Example:
    >>> dtrain.backends.cudnn.benchmark = True
"""
from .flags import make_flag_module

FLAGS = {"enabled": (True, "set_enabled_cudnn"), "benchmark": (False, "set_benchmark_cudnn"),
         "deterministic": (False, "set_deterministic_cudnn"), "allow_tf32": (True, "set_allow_tf32_cudnn")}
make_flag_module(__name__)


def is_available():
    """False: dtrain does not call cuDNN."""
    return False


def version():
    """None: no cuDNN is loaded (as in a PyTorch build without it)."""
    return None
