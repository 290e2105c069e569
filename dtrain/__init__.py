"""dtrain: a distributed data-parallel training runtime with a define-by-run autograd core.

The public API follows PyTorch: ``import dtrain as torch`` ports most scripts.
"""
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
