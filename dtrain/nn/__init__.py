"""dtrain.nn: modules, layers, losses, init, and the functional API (as torch.nn)."""
from . import functional  # noqa: F401
