"""The autograd core: Tensor, Function, ops, creation, grad modes, gradcheck."""
from . import methods  # noqa: F401  (binds operators and methods onto Tensor)
from .backend import Device, get_array_module
from .deterministic import (are_deterministic_algorithms_enabled,  # noqa: F401
                            is_deterministic_algorithms_warn_only_enabled, use_deterministic_algorithms)
from .creation import (arange, as_tensor, empty, empty_like, eye, from_numpy, full, full_like, linspace,  # noqa: F401
                       ones, ones_like, rand, rand_like, randint, randn, randn_like, randperm, tensor, zeros,
                       zeros_like)
from .function import Function  # noqa: F401
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from .ops import *  # noqa: F401,F403
from .random import Generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state  # noqa: F401
from .tensor import Size, Tensor  # noqa: F401
from .tensor import is_tensor, numel  # noqa: F401
from .engine import reachable_leaves  # noqa: F401  (the graph query DDP's unused-parameter search uses)
from .grad_mode import inference_mode, is_inference_mode_enabled  # noqa: F401

device = Device

# star-imports export the functions, never the submodules (dtrain.nn must stay the nn package),
# nor reachable_leaves: it is dtrain.tensor's own, not one of torch's top-level names
__all__ = [_n for _n, _v in list(globals().items()) if not _n.startswith("_") and not isinstance(_v, type(__import__("sys")))
           and _n != "reachable_leaves"]
