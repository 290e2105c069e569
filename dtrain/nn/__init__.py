"""dtrain.nn: modules, layers, losses, init, and the functional API (as torch.nn).

torch.nn's names for the data-parallel wrappers (``nn.parallel``, ``nn.DataParallel``,
``nn.SyncBatchNorm``) are dtrain.parallel's, set by ``import dtrain``: parallel sits above nn.
"""
from . import functional  # noqa: F401
from . import init, utils  # noqa: F401
from .containers import ModuleDict, ModuleList, Sequential  # noqa: F401
from .containers import ParameterDict, ParameterList  # noqa: F401
from .module import Module  # noqa: F401
from .modules import *  # noqa: F401,F403
from .parameter import Parameter  # noqa: F401
