"""dtrain: a distributed data-parallel training runtime with a define-by-run autograd core.

The public API follows PyTorch: ``import dtrain as torch`` ports most scripts.
"""
import sys as _sys

from . import autograd, cuda  # noqa: F401
from .tensor import *  # noqa: F401,F403
from .tensor import Device as _Device
from .tensor.dtypes import (bool_ as bool, double, float, float16, float32, float64, get_default_dtype,  # noqa: F401,A004
                            half, int, int8, int16, int32, int64, long, set_default_dtype, short, uint8)

device = _Device
__version__ = "0.1.0"

from .serialization import load, save  # noqa: E402,F401
from . import checkpoint, data, nn, optim, preemption  # noqa: E402,F401
from . import linalg  # noqa: E402,F401  (torch.linalg's path)
from . import utils  # noqa: E402,F401  (torch.utils.data's path)
from . import accelerator, backends, distributed  # noqa: E402,F401  (torch.accelerator, torch.backends, torch.distributed)
from .backends import get_float32_matmul_precision, set_float32_matmul_precision  # noqa: E402,F401
from .compiler import compile  # noqa: E402,F401,A004  (torch.compile: returns the model)
from . import compiler  # noqa: E402,F401
from . import amp  # noqa: E402,F401  (torch.amp)
from .amp import autocast, get_autocast_dtype, is_autocast_cache_enabled, is_autocast_enabled  # noqa: E402,F401
from .amp import cuda_amp as _cuda_amp  # noqa: E402  (torch.cuda.amp's path: cuda sits below amp)
cuda.amp = _sys.modules[f"{__name__}.cuda.amp"] = _cuda_amp

# Names across layers that may not import upward (tests/test_layering.py), wired here on top:
# torch.nn's names for dtrain.parallel's wrappers (parallel imports nn, so nn cannot import it),
# and the process group DistributedSampler takes its defaults from (comm sits above data).
from . import comm, parallel  # noqa: E402
nn.parallel = _sys.modules[f"{__name__}.nn.parallel"] = parallel  # also `from dtrain.nn.parallel import ...`
nn.DataParallel, nn.SyncBatchNorm = parallel.DataParallel, parallel.SyncBatchNorm
data.sampler.set_process_group_source(comm)


def __getattr__(name):  # torch.multiprocessing's path, imported on first use: its spawned ranks
    if name == "multiprocessing":  # run it with -m, which must find it not yet imported
        import importlib
        return importlib.import_module(".multiprocessing", __name__)
    if name == "bfloat16":  # ml_dtypes' dtype, an optional extra: a missing one is an ImportError naming it
        return amp.bfloat16_dtype()
    raise AttributeError(f"module 'dtrain' has no attribute {name!r}")
