"""Image transforms as functions, as ``torchvision.transforms.functional``.

Each takes a PIL image (through Pillow) or a tensor image (..., C, H, W). On tensors they
are built of dtrain's differentiable ops (indexing, flip, pad, matmul), so they run on the
tensor's device and need no backward of their own.
"""
import enum
import numbers

import numpy

from ...nn import functional as nn_functional
from ...tensor import Tensor, as_tensor, backend, dtypes, flip, from_numpy
from .. import _pil


class InterpolationMode(enum.Enum):
    """How ``resize`` samples, as torchvision's. Tensors support NEAREST, NEAREST_EXACT
    and BILINEAR; PIL images every mode Pillow has."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


# PIL's integer filter constants, which torchvision also accepts
_FROM_PIL_INT = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC,
                 4: InterpolationMode.BOX, 5: InterpolationMode.HAMMING, 1: InterpolationMode.LANCZOS}
_PIL_FILTER = {**{mode: i for i, mode in _FROM_PIL_INT.items()}, InterpolationMode.NEAREST_EXACT: 0}
_PAD_MODES = ("constant", "edge", "reflect", "symmetric")


def interpolation_mode(value):
    """``value`` as an InterpolationMode (an InterpolationMode or PIL's int constant)."""
    if isinstance(value, InterpolationMode):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) in _FROM_PIL_INT:
        return _FROM_PIL_INT[int(value)]
    raise TypeError(f"interpolation should be an InterpolationMode (e.g. InterpolationMode.BILINEAR) or one "
                    f"of PIL's filter ints {sorted(_FROM_PIL_INT)}, got {value!r}")


def get_dimensions(img):
    """``[channels, height, width]`` of a PIL image or a tensor image."""
    if _pil.is_image(img):
        return [len(img.getbands()), img.height, img.width]
    if isinstance(img, Tensor):
        if img.ndim < 2:
            raise ValueError(f"a tensor image needs at least 2 dims (..., H, W), got shape {list(img.shape)}")
        return [1 if img.ndim == 2 else int(img.shape[-3]), int(img.shape[-2]), int(img.shape[-1])]
    raise TypeError(f"img should be PIL Image or Tensor. Got {type(img)}")


def _hw(img):
    return get_dimensions(img)[1:]


# ---- conversions ---------------------------------------------------------------------------

def to_tensor(pic):
    """A PIL image or a NumPy array (H, W, C) or (H, W) as a CHW tensor; uint8 data becomes
    the default float dtype divided by 255, other dtypes keep their values.

    Example:
        >>> to_tensor(numpy.full((2, 2, 3), 255, numpy.uint8)).shape
        dtrain.Size([3, 2, 2])
    """
    if _pil.is_image(pic):
        array = numpy.array(pic)
        if pic.mode == "1":
            array = array.astype(numpy.uint8) * numpy.uint8(255)
        elif array.dtype == numpy.uint16:  # mode 'I;16': dtrain has no uint16
            array = array.astype(numpy.int32)
    elif isinstance(pic, numpy.ndarray):
        if pic.ndim not in (2, 3):
            raise ValueError(f"pic should be 2/3 dimensional. Got {pic.ndim} dimensions.")
        array = pic
    else:
        raise TypeError(f"pic should be PIL Image or ndarray. Got {type(pic)}")
    if array.ndim == 2:
        array = array[:, :, None]
    chw = numpy.ascontiguousarray(array.transpose(2, 0, 1))
    if chw.dtype == numpy.uint8:
        default = dtypes.get_default_dtype()
        return from_numpy(chw.astype(default) / numpy.array(255, default))
    return from_numpy(chw)


def _to_uint8(array):
    """As torch's ``float_tensor.mul(255).byte()``: truncated toward zero, and out-of-range
    values wrapped modulo 256 as PyTorch does on x86 (randn images give such values)."""
    return (numpy.trunc(array * 255).astype(numpy.int64) % 256).astype(numpy.uint8)


def image_of(hwc):
    """A uint8 (H, W, C) or (H, W) array as a PIL image (mode L, LA, RGB or RGBA; a single
    channel is dropped), or as the array itself when Pillow is not installed."""
    if hwc.ndim == 3 and hwc.shape[2] == 1:
        hwc = hwc[:, :, 0]
    hwc = numpy.ascontiguousarray(hwc)
    return hwc if _pil.Image is None else _pil.Image.fromarray(hwc)


def to_pil_image(pic, mode=None):
    """A tensor (C, H, W) / (H, W) or a NumPy array (H, W, C) / (H, W) as a PIL image.

    Floating data is taken as [0, 1] and becomes uint8 as ``mul(255).byte()`` (truncated);
    1, 2, 3 and 4 channels give modes L, LA, RGB and RGBA; ``mode`` converts the result.

    Example:
        >>> to_pil_image(dtrain.ones(3, 4, 5)).size
        (5, 4)
    """
    image_module = _pil.require("to_pil_image")
    if isinstance(pic, Tensor):
        if pic.ndim not in (2, 3):
            raise ValueError(f"pic should be 2/3 dimensional. Got {pic.ndim} dimensions.")
        array = backend.asnumpy(pic.detach().array)
        array = array[None] if array.ndim == 2 else array
        if array.shape[0] > 4:
            raise ValueError(f"pic should not have > 4 channels. Got {array.shape[0]} channels.")
        if dtypes.is_floating(array.dtype) and mode != "F":
            array = _to_uint8(array)
        array = array.transpose(1, 2, 0)
    elif isinstance(pic, numpy.ndarray):
        if pic.ndim not in (2, 3):
            raise ValueError(f"pic should be 2/3 dimensional. Got {pic.ndim} dimensions.")
        array = pic[:, :, None] if pic.ndim == 2 else pic
        if array.shape[2] > 4:
            raise ValueError(f"pic should not have > 4 channels. Got {array.shape[2]} channels.")
    else:
        raise TypeError(f"pic should be Tensor or ndarray. Got {type(pic)}.")
    if array.shape[2] > 1 and array.dtype != numpy.uint8:
        raise TypeError(f"Input type {array.dtype} is not supported: {array.shape[2]}-channel images must be uint8")
    if array.shape[2] == 1 and array.dtype not in (numpy.uint8, numpy.int16, numpy.int32, numpy.float32):
        raise TypeError(f"Input type {array.dtype} is not supported: one channel images must be uint8, int16, "
                        f"int32 or float32")
    img = image_module.fromarray(numpy.ascontiguousarray(array[:, :, 0] if array.shape[2] == 1 else array))
    return img if mode is None or mode == img.mode else img.convert(mode)


def normalize(tensor, mean, std, inplace=False):
    """``(tensor - mean) / std`` per channel of a float tensor image (..., C, H, W).

    Example:
        >>> normalize(dtrain.ones(1, 2, 2), [0.5], [0.25])[0, 0, 0].item()
        2.0
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"img should be Tensor Image. Got {type(tensor)}")
    if not dtypes.is_floating(tensor.dtype):
        raise TypeError(f"Input tensor should be a float tensor. Got {tensor.dtype}.")
    if tensor.ndim < 3:
        raise ValueError(f"Expected tensor to be a tensor image of size (..., C, H, W). Got tensor.size() = "
                         f"{tensor.shape}")
    mean = as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    std = as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    channels = int(tensor.shape[-3])
    for name, value in (("mean", mean), ("std", std)):
        if value.ndim > 1 or value.numel() not in (1, channels):
            raise ValueError(f"normalize: {name} has {value.numel()} values but the image has {channels} channels")
    if bool((std == 0).any()):
        raise ValueError(f"std evaluated to zero after conversion to {tensor.dtype}, leading to division by zero.")
    mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
    if inplace:
        return tensor.sub_(mean).div_(std)
    return (tensor - mean) / std


# ---- geometry ------------------------------------------------------------------------------

def hflip(img):
    """The image mirrored left to right."""
    if _pil.is_image(img):
        return img.transpose(_pil.Image.Transpose.FLIP_LEFT_RIGHT)
    get_dimensions(img)
    return flip(img, (-1,))


def parse_padding(padding):
    """``(left, top, right, bottom)`` from an int or a 1, 2 (left/right, top/bottom) or 4
    element sequence, as torchvision reads ``padding``."""
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        padding = [padding]
    if not isinstance(padding, (list, tuple)) or not all(
            isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in padding):
        raise TypeError(f"Got inappropriate padding arg: {padding!r}: an int or a tuple of ints is expected")
    if len(padding) not in (1, 2, 4):
        raise ValueError(f"Padding must be an int or a 1, 2, or 4 element tuple, not a {len(padding)} element tuple")
    if len(padding) == 1:
        return [padding[0]] * 4
    if len(padding) == 2:
        return [padding[0], padding[1], padding[0], padding[1]]
    return list(padding)


def pad(img, padding, fill=0, padding_mode="constant"):
    """Pad the image's borders.

    Args:
        img: a PIL image or a tensor image (..., H, W).
        padding: an int (all sides), (left/right, top/bottom) or (left, top, right, bottom).
        fill: the value (or, for a PIL image, per-band tuple) of constant padding.
        padding_mode: 'constant', 'edge', 'reflect' or 'symmetric' (not on tensors).

    Example:
        >>> pad(dtrain.ones(1, 2, 2), 1).shape
        dtrain.Size([1, 4, 4])
    """
    left, top, right, bottom = parse_padding(padding)
    if padding_mode not in _PAD_MODES:
        raise ValueError(f"Padding mode should be either constant, edge, reflect or symmetric, got {padding_mode!r}")
    if _pil.is_image(img):
        image_module = _pil.Image
        if padding_mode == "constant":
            out = image_module.new(img.mode, (img.width + left + right, img.height + top + bottom), fill)
            out.paste(img, (left, top))
        else:
            array = numpy.asarray(img)
            widths = [(top, bottom), (left, right)] + [(0, 0)] * (array.ndim - 2)
            out = image_module.fromarray(numpy.pad(array, widths, mode=padding_mode))
        if img.mode == "P":
            out.putpalette(img.getpalette())
        return out
    get_dimensions(img)
    if padding_mode == "symmetric":
        raise NotImplementedError("pad: padding_mode 'symmetric' is supported for PIL images only in dtrain; use "
                                  "'reflect' or 'edge' on tensors")
    if not isinstance(fill, numbers.Number):
        raise TypeError(f"pad: fill on a tensor image must be a number, got {fill!r}")
    mode = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}[padding_mode]
    return nn_functional.pad(img, (left, right, top, bottom), mode=mode,
                             value=fill if padding_mode == "constant" else None)


def crop(img, top, left, height, width):
    """The ``height`` x ``width`` region whose top-left corner is (``top``, ``left``);
    what lies outside the image is zero, as in torchvision."""
    if _pil.is_image(img):
        return img.crop((left, top, left + width, top + height))
    h, w = _hw(img)
    right, bottom = left + width, top + height
    if left < 0 or top < 0 or right > w or bottom > h:
        inside = img[..., max(top, 0):max(bottom, 0), max(left, 0):max(right, 0)]
        return pad(inside, [max(-left, 0), max(-top, 0), max(right - w, 0), max(bottom - h, 0)])
    return img[..., top:bottom, left:right]


def setup_size(size, what):
    """``(h, w)`` from an int or a 1 or 2 element sequence of positive ints."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    elif isinstance(size, (list, tuple)) and len(size) == 1:
        size = (size[0], size[0])
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise ValueError(f"{what}: please provide only two dimensions (h, w) for size, got {size!r}")
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"{what}: size must be positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def center_crop(img, output_size):
    """The central ``output_size`` region (an int for a square), zero-padded first where
    the image is smaller, as torchvision."""
    th, tw = setup_size(output_size, "center_crop")
    h, w = _hw(img)
    if th > h or tw > w:
        img = pad(img, [(tw - w) // 2 if tw > w else 0, (th - h) // 2 if th > h else 0,
                        (tw - w + 1) // 2 if tw > w else 0, (th - h + 1) // 2 if th > h else 0])
        h, w = _hw(img)
    return crop(img, int(round((h - th) / 2.0)), int(round((w - tw) / 2.0)), th, tw)


def resized_output_size(h, w, size, max_size=None):
    """``(new_h, new_w)``: an int ``size`` (or ``[size]``) is the new smaller edge, keeping
    the aspect ratio (the longer edge capped at ``max_size``); ``(h, w)`` is exact."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool) or len(size) == 1:
        requested = int(size if isinstance(size, numbers.Integral) else size[0])
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = requested, int(requested * long / short)
        if max_size is not None:
            if max_size <= requested:
                raise ValueError(f"max_size = {max_size} must be strictly greater than the requested size for the "
                                 f"smaller edge size = {size}")
            if new_long > max_size:
                new_short, new_long = int(max_size * new_short / new_long), max_size
        return (new_long, new_short) if w <= h else (new_short, new_long)
    if max_size is not None:
        raise ValueError("max_size should only be passed if size specifies the length of the smaller edge, i.e. "
                         "size should be an int or a sequence of length 1")
    return int(size[0]), int(size[1])


def _resize_weights(n_in, n_out, mode, antialias):
    """The (n_out, n_in) matrix that resamples one axis.

    Bilinear is PIL's triangle filter, stretched by the scale when downscaling with
    ``antialias`` (so every input pixel counts, as PIL and torchvision's antialias=True);
    with a width of 1 it is exactly ``interpolate(mode='bilinear', align_corners=False)``,
    the edge clamping included (the row normalization does it). Nearest takes input
    ``floor(i * n_in / n_out)``, as ``interpolate(mode='nearest')`` (NEAREST_EXACT:
    ``floor((i + 0.5) * n_in / n_out)``, as mode 'nearest-exact').
    """
    scale = n_in / n_out
    if mode in (InterpolationMode.NEAREST, InterpolationMode.NEAREST_EXACT):
        offset = 0.5 if mode is InterpolationMode.NEAREST_EXACT else 0.0
        weights = numpy.zeros((n_out, n_in))
        source = numpy.minimum(numpy.floor((numpy.arange(n_out) + offset) * scale).astype(numpy.int64), n_in - 1)
        weights[numpy.arange(n_out), source] = 1.0
        return weights
    support = max(scale, 1.0) if antialias else 1.0
    centers = (numpy.arange(n_out) + 0.5) * scale
    distance = (numpy.arange(n_in)[None, :] + 0.5 - centers[:, None]) / support
    weights = numpy.maximum(0.0, 1.0 - numpy.abs(distance))
    return weights / weights.sum(axis=1, keepdims=True)


def resize(img, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    """The image resized to ``size``: an int sets the smaller edge (aspect ratio kept), a
    pair ``(h, w)`` both.

    Args:
        img: a PIL image (resized by Pillow, which always antialiases) or a tensor image
            (..., H, W) (NEAREST, NEAREST_EXACT or BILINEAR; integer images are rounded back).
        size: int or (h, w).
        interpolation: an InterpolationMode (default BILINEAR) or PIL's filter int.
        max_size: the longest the longer edge may become when ``size`` is an int.
        antialias: on tensors, whether bilinear downscaling averages over every input
            pixel (as PIL) instead of sampling 2x2 neighbours.

    Example:
        >>> resize(dtrain.ones(3, 8, 16), 4).shape
        dtrain.Size([3, 4, 8])
    """
    mode = interpolation_mode(interpolation)
    h, w = _hw(img)
    out_h, out_w = resized_output_size(h, w, size, max_size)
    if (out_h, out_w) == (h, w):
        return img
    if _pil.is_image(img):
        return img.resize((out_w, out_h), _PIL_FILTER[mode])
    if mode not in (InterpolationMode.NEAREST, InterpolationMode.NEAREST_EXACT, InterpolationMode.BILINEAR):
        raise NotImplementedError(f"resize: interpolation {mode.name} is not supported on tensors in dtrain "
                                  f"(NEAREST, NEAREST_EXACT and BILINEAR are); resize the PIL image instead")
    # bfloat16 too is resized in float32 (one rounding at the end, as torch's float accumulation)
    x = img if img.dtype.kind == "f" else img.to(dtypes.float32)
    rows = as_tensor(_resize_weights(h, out_h, mode, antialias), dtype=x.dtype, device=x.device)
    cols = as_tensor(_resize_weights(w, out_w, mode, antialias).T, dtype=x.dtype, device=x.device)
    out = rows @ x @ cols
    if dtypes.is_floating(img.dtype):
        return out.to(img.dtype)
    info = numpy.iinfo(img.dtype) if img.dtype.kind in "iu" else None
    out = out.round()
    if info is not None:
        out = out.clamp(info.min, info.max)
    return out.to(img.dtype)
