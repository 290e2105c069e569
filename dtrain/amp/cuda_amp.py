"""``dtrain.cuda.amp``: torch.cuda.amp's spellings (deprecated in PyTorch, still common in
scripts): ``autocast(enabled, dtype, cache_enabled)`` for "cuda" and ``GradScaler(...)`` on
"cuda", both warning as PyTorch's do."""
import warnings

from ..tensor import dtypes
from .autocast_mode import autocast as _amp_autocast
from .grad_scaler import GradScaler as _AmpGradScaler


class autocast(_amp_autocast):  # noqa: N801  (PyTorch's name)
    """``dtrain.autocast("cuda", ...)`` under torch.cuda.amp's signature."""

    def __init__(self, enabled=True, dtype=dtypes.float16, cache_enabled=True):
        warnings.warn("`dtrain.cuda.amp.autocast(args...)` is deprecated. Please use "
                      "`dtrain.amp.autocast('cuda', args...)` instead.", FutureWarning, stacklevel=2)
        super().__init__("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class GradScaler(_AmpGradScaler):
    """``dtrain.amp.GradScaler("cuda", ...)`` under torch.cuda.amp's signature."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled=True):
        warnings.warn("`dtrain.cuda.amp.GradScaler(args...)` is deprecated. Please use "
                      "`dtrain.amp.GradScaler('cuda', args...)` instead.", FutureWarning, stacklevel=2)
        super().__init__("cuda", init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
                         growth_interval=growth_interval, enabled=enabled)
