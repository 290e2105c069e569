"""dtrain.nn: modules, layers, losses, init, and the functional API (as torch.nn)."""
from . import functional  # noqa: F401
from . import init, utils  # noqa: F401
from .containers import ModuleDict, ModuleList, Sequential  # noqa: F401
from .containers import ParameterDict, ParameterList  # noqa: F401
from .module import Module  # noqa: F401
from .modules import *  # noqa: F401,F403
from .parameter import Parameter  # noqa: F401

# torch.nn's names for the data-parallel wrappers; dtrain.parallel sits above nn (it imports
# nn and comm), so these are looked up on first use, not imported here
def __getattr__(name):
    if name == "parallel":  # the submodule dtrain.nn.parallel, as torch.nn.parallel
        import importlib
        return importlib.import_module(".parallel", __name__)
    if name in ("DataParallel", "SyncBatchNorm"):
        from .. import parallel
        return getattr(parallel, name)
    raise AttributeError(f"module 'dtrain.nn' has no attribute {name!r}")
