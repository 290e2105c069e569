"""``autocast``: the region (context manager or decorator) where ops run in mixed precision."""
import functools
import warnings

from ..cuda import is_available as cuda_is_available
from ..tensor import backend, dtypes
from ..tensor.ops import autocast as state
from .bfloat16 import bfloat16_dtype

DEVICE_TYPES = ("cpu", "cuda")
LOW_DTYPES = ("float16", "bfloat16")


def is_autocast_available(device_type):
    """True for the device types autocast knows: "cpu" and "cuda"."""
    return device_type in DEVICE_TYPES


def _check_device_type(device_type):
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if not is_autocast_available(device_type):
        raise RuntimeError(f"User specified an unsupported autocast device_type {device_type!r}: "
                           f"dtrain's autocast knows {list(DEVICE_TYPES)}")


def get_autocast_dtype(device_type):
    """The low dtype of ``device_type``'s autocast: the innermost open region's, else
    PyTorch's default (bfloat16 on "cpu", float16 on "cuda")."""
    _check_device_type(device_type)
    dtype = state.get_dtype(device_type)
    if dtype is not None:
        return dtype
    return bfloat16_dtype() if device_type == "cpu" else dtypes.float16


def is_autocast_enabled(device_type="cuda"):
    """Whether autocast is on for ``device_type`` in this thread."""
    _check_device_type(device_type)
    return state.is_enabled(device_type)


def is_autocast_cache_enabled():
    """Whether the regions opened in this thread reuse the casts of float32 parameters."""
    return state.is_cache_enabled()


class autocast:  # noqa: N801  (PyTorch's name)
    """Run the ops of a region in mixed precision, as ``torch.autocast``.

    Inside, the matrix products (linear, matmul/mm/bmm, addmm/baddbmm, einsum, conv1d/conv2d/
    conv_transpose2d, prelu, scaled_dot_product_attention) cast their floating inputs to
    ``dtype`` and return ``dtype``; losses run in float32 (a low-precision input is cast up);
    on "cuda" also softmax/log_softmax, layer/group norm, sum/prod/cumsum, exp/log/pow, as
    PyTorch's CUDA list; on "cpu" softmax, norms, sum and mean keep a low-precision input's
    dtype and compute in float32, as PyTorch's CPU kernels. The casts are differentiable: a
    float32 parameter gets a float32 gradient. float64 tensors are never cast. Regions nest:
    ``autocast(..., enabled=False)`` inside restores full precision (cast the low-precision
    tensors coming in with ``.float()``).

    Args:
        device_type: "cuda" or "cpu": the device of the tensors whose ops are cast.
        dtype: float16 or bfloat16; default float16 on "cuda", bfloat16 on "cpu" (bfloat16
            needs ml_dtypes: ``pip install dtrain[bf16]``). Another dtype warns and disables
            the region, as in PyTorch.
        enabled: False makes the region run everything as written.
        cache_enabled: reuse the cast of a float32 parameter within the region (default: on).

    Example:
        >>> with dtrain.autocast("cpu", dtype=dtrain.bfloat16):
        ...     y = model(x)            # y.dtype: bfloat16
        ...     loss = F.cross_entropy(y, t)   # float32
        >>> loss.backward()             # outside the region, as PyTorch recommends
    """

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        _check_device_type(device_type)
        enabled = bool(enabled)  # scripts pass enabled=args.amp (0/1) as often as a bool
        self.device = device_type
        self.fast_dtype = get_autocast_dtype(device_type) if dtype is None else self._resolve(dtype)
        self._cache_enabled = is_autocast_cache_enabled() if cache_enabled is None else bool(cache_enabled)
        if enabled and self.fast_dtype.name not in LOW_DTYPES:
            warnings.warn(f"In {device_type.upper()} autocast, but the target dtype {self.fast_dtype} is not "
                          f"supported. Disabling autocast. Autocast supports float16 and bfloat16.", stacklevel=2)
            enabled = False
        if enabled and device_type == "cuda":
            if not cuda_is_available():
                warnings.warn("User provided device_type of 'cuda', but CUDA is not available. Disabling",
                              stacklevel=2)
                enabled = False
            elif not _cupy_holds(self.fast_dtype):
                raise RuntimeError(f"autocast: CuPy {backend.cupy.__version__} has no {self.fast_dtype} arrays; "
                                   f"use dtype=dtrain.float16 on 'cuda'")
        self._enabled = enabled
        self._saved = []

    @staticmethod
    def _resolve(dtype):
        if getattr(dtype, "__name__", dtype) == "bfloat16" or str(dtype) == "bfloat16":
            return bfloat16_dtype()
        return dtypes.as_dtype(dtype)

    def __enter__(self):
        self._saved.append(state.enter(self.device, self._enabled, self.fast_dtype, self._cache_enabled))
        return self

    def __exit__(self, *exc):
        state.exit(self._saved.pop())
        return False

    def __call__(self, func):
        """Use as a decorator: ``func`` runs inside this region."""
        @functools.wraps(func)
        def run(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        return run


def _cupy_holds(dtype):
    try:
        backend.cupy.zeros(1, dtype=dtype)
    except (TypeError, ValueError):
        return False
    return True
