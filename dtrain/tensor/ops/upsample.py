"""Resampling of NC(H)W tensors: interpolate (nearest, nearest-exact, linear, bilinear) and
pixel_shuffle / pixel_unshuffle, as torch.nn.functional.

Interpolation is separable: along each spatial dim the output gathers one (nearest) or two
(linear) input positions with index_select and weights them, so the gradient is index_select's.
The positions and weights follow PyTorch's CPU kernels, computed in the input's dtype.
"""
import math
import numbers

from .. import dtypes
from ..backend import get_array_module
from ..function import on_input_device
from ..tensor import Tensor
from .index import index_select

_MODES = {"nearest": (1, 2), "nearest-exact": (1, 2), "linear": (1,), "bilinear": (2,)}
_SPATIAL = {1: "3D (N, C, L)", 2: "4D (N, C, H, W)"}


def _source(xp, n, o, scale, mode, align_corners, dtype):
    """Along one dim of input size n and output size o: (i0, i1, w0, w1) with output j =
    x[i0] * w0 + x[i1] * w1 (nearest modes: i1, w0, w1 are None)."""
    if mode == "nearest" or mode == "nearest-exact":
        s = xp.float32(n / o if scale is None else 1.0 / scale)  # PyTorch: a float scale
        if mode == "nearest":  # floorf(j * scale) in float
            src = xp.arange(o, dtype=xp.float32) * s
        else:  # floorf((j + 0.5) * scale): a double product, rounded to float
            src = ((xp.arange(o) + 0.5) * float(s)).astype(xp.float32)
        return xp.minimum(xp.floor(src).astype(xp.int64), n - 1), None, None, None
    j = xp.arange(o, dtype=dtype)
    if align_corners:
        src = j * dtype.type((n - 1) / (o - 1) if o > 1 else 0)
    else:
        src = xp.maximum((j + dtype.type(0.5)) * dtype.type(n / o if scale is None else 1.0 / scale) - 0.5, 0)
    i0 = src.astype(xp.int64)
    w1 = xp.clip(src - i0, 0, 1).astype(dtype)
    return i0, xp.minimum(i0 + 1, n - 1), 1 - w1, w1


def _along(x, axis, i0, i1, w0, w1):
    """x resampled along ``axis``: one gathered position, or two blended with weights."""
    a = index_select(x, axis, Tensor._wrap(i0))
    if i1 is None:
        return a
    shape = (-1,) + (1,) * (x.ndim - 1 - axis)
    b = index_select(x, axis, Tensor._wrap(i1))
    return a * Tensor._wrap(w0.reshape(shape)) + b * Tensor._wrap(w1.reshape(shape))


def _per_dim(op, x, dims, name, value, kind, kind_name):
    """``value`` as a list with one entry per spatial dim of ``x`` (a single value serves
    them all), each a positive instance of ``kind``."""
    values = list(value) if isinstance(value, (tuple, list)) else [value] * dims
    if len(values) != dims:
        raise ValueError(f"{op}: input of shape {list(x.shape)} has {dims} spatial dims {list(x.shape[2:])}, but "
                         f"{name}={value} has {len(values)}")
    if not all(isinstance(v, kind) and v > 0 for v in values):
        raise ValueError(f"{op}: {name} must hold positive {kind_name}, got {value!r}")
    return values


def _sizes(op, x, size, scale_factor, dims):
    """The output sizes, and the scales to resample with (None: in / out)."""
    if size is not None and scale_factor is not None:
        raise ValueError(f"{op}: only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError(f"{op}: either size or scale_factor should be defined")
    if size is not None:
        return [int(s) for s in _per_dim(op, x, dims, "size", size, numbers.Integral, "ints")], [None] * dims
    scales = _per_dim(op, x, dims, "scale_factor", scale_factor, numbers.Real, "numbers")
    out = [math.floor(float(n * s)) for n, s in zip(x.shape[2:], scales)]
    if min(out) < 1:
        raise ValueError(f"{op}: input of shape {list(x.shape)} with scale_factor={scale_factor} gives an empty "
                         f"output {out}")
    return out, [float(s) for s in scales]


@on_input_device
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of an (N, C, L) or (N, C, H, W) input, as PyTorch.

    Args:
        input: (N, C, L) for 'nearest'/'nearest-exact'/'linear'; (N, C, H, W) for
            'nearest'/'nearest-exact'/'bilinear'.
        size: the output's spatial size (an int or one per spatial dim).
        scale_factor: or a multiplier (a number or one per dim): output = floor(input * scale).
        mode: 'nearest' (PyTorch's: floor(j * in / out)), 'nearest-exact' (pixel centres),
            'linear' or 'bilinear'.
        align_corners: linear modes only: True maps the corner pixels' centres onto each
            other; False (the default) their outer edges.
        recompute_scale_factor: with scale_factor, resample with in / out instead of 1 / scale.
        antialias: not supported (only False).

    Example:
        >>> F.interpolate(dtrain.tensor([[[1.0, 2.0]]]), scale_factor=2, mode="linear")
        tensor([[[1.0000, 1.2500, 1.7500, 2.0000]]])
    """
    op = "interpolate"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(input).__name__}")
    if mode not in _MODES:
        raise NotImplementedError(f"{op}: mode {mode!r} is not supported; expected one of {sorted(_MODES)}")
    dims = input.ndim - 2
    if dims not in _MODES[mode]:
        need = " or ".join(_SPATIAL[d] for d in _MODES[mode])
        raise NotImplementedError(f"{op}: got a {input.ndim}D input of shape {list(input.shape)}, but {mode} mode "
                                  f"needs a {need} input")
    if align_corners is not None and mode.startswith("nearest"):
        raise ValueError(f"{op}: align_corners option can only be set with the interpolating modes: linear | "
                         f"bilinear, got mode={mode!r}")
    if antialias:
        raise NotImplementedError(f"{op}: antialias=True is not supported")
    if not dtypes.is_floating(input.dtype) and not mode.startswith("nearest"):
        raise RuntimeError(f"{op}: {mode} mode needs a floating-point input, got dtype {input.dtype}")
    out, scales = _sizes(op, input, size, scale_factor, dims)
    if recompute_scale_factor:
        scales = [None] * dims
    xp = get_array_module(input.array)
    # bfloat16 in float32 (weights, and one rounding, not one per axis, as torch): ml_dtypes rounds each op
    widened = input.dtype.name == "bfloat16"
    dtype = input.dtype if dtypes.is_floating(input.dtype) and not widened else xp.dtype("float32")
    y = input.float() if widened else input
    for axis, n, o, s in zip(range(2, input.ndim), input.shape[2:], out, scales):
        if n != o or s is not None:
            y = _along(y, axis, *_source(xp, n, o, s, mode, bool(align_corners), dtype))
    if widened:
        return y.to(input.dtype)
    return y if y is not input else input.clone()


def pixel_shuffle(input, upscale_factor):
    """(*, C * r^2, H, W) -> (*, C, H * r, W * r): channel blocks of r^2 become r x r patches.

    Example:
        >>> F.pixel_shuffle(dtrain.randn(1, 8, 3, 3), 2).shape
        dtrain.Size([1, 2, 6, 6])
    """
    op, r = "pixel_shuffle", _factor("pixel_shuffle", input, upscale_factor, "upscale_factor")
    *lead, c, h, w = input.shape
    if c % (r * r):
        raise RuntimeError(f"{op}: input of shape {list(input.shape)} has {c} channels (dim -3), not divisible by "
                           f"upscale_factor^2 = {r * r}")
    k = len(lead)
    y = input.reshape(*lead, c // (r * r), r, r, h, w).permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H * r, W * r) -> (*, C * r^2, H, W), the inverse of pixel_shuffle.

    Example:
        >>> F.pixel_unshuffle(dtrain.randn(1, 2, 6, 6), 2).shape
        dtrain.Size([1, 8, 3, 3])
    """
    op, r = "pixel_unshuffle", _factor("pixel_unshuffle", input, downscale_factor, "downscale_factor")
    *lead, c, h, w = input.shape
    if h % r or w % r:
        raise RuntimeError(f"{op}: input of shape {list(input.shape)} has height {h} and width {w}; both must be "
                           f"divisible by downscale_factor={r}")
    k = len(lead)
    y = input.reshape(*lead, c, h // r, r, w // r, r).permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return y.reshape(*lead, c * r * r, h // r, w // r)


def _factor(op, input, r, name):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(input).__name__}")
    if input.ndim < 3:
        raise RuntimeError(f"{op}: expected an input of at least 3 dims (*, C, H, W), got shape {list(input.shape)}")
    if not isinstance(r, numbers.Integral) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {r!r}")
    return int(r)
