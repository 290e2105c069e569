"""``make_grid`` and ``save_image``, as ``torchvision.utils``."""
import math

import numpy

from ..tensor import Tensor, backend, dtypes, get_array_module, stack
from . import _pil


def make_grid(tensor, nrow=8, padding=2, normalize=False, value_range=None, scale_each=False, pad_value=0.0):
    """Tile a batch of images (B, C, H, W) (or a list of (C, H, W)) into one image.

    One-channel images become three-channel; with a single image it is returned as is.

    Args:
        tensor: a 4-d batch, a 3-d or 2-d image, or a list of same-shaped images.
        nrow: images per row.
        padding: pixels between images and around the grid.
        normalize: shift and scale to [0, 1] by ``value_range`` (default: min and max).
        value_range: (low, high) used by ``normalize``; values outside are clamped.
        scale_each: normalize each image by its own min and max.
        pad_value: the value of the padding pixels.

    Returns:
        A tensor (C, rows * (H + padding) + padding, cols * (W + padding) + padding).

    Example:
        >>> make_grid(dtrain.rand(16, 3, 28, 28), nrow=4).shape
        dtrain.Size([3, 122, 122])
    """
    if isinstance(tensor, list) and tensor and all(isinstance(t, Tensor) for t in tensor):
        tensor = stack(tensor)
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor or list of tensors expected, got {type(tensor)}")
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"make_grid: nrow must be an int >= 1, got {nrow!r}")
    a = tensor.detach().array
    xp = get_array_module(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"make_grid: expected images (B, C, H, W), (C, H, W) or (H, W), got shape "
                         f"{list(tensor.shape)}")
    if a.shape[1] == 1:
        a = xp.concatenate([a, a, a], axis=1)
    if normalize:
        if value_range is not None and not (isinstance(value_range, tuple) and len(value_range) == 2):
            raise ValueError(f"value_range has to be a tuple (min, max) if specified, got {value_range!r}")
        a = a.astype(a.dtype if dtypes.is_floating(a.dtype) else numpy.float32)
        parts = list(a) if scale_each else [a]
        for part in parts:
            low, high = value_range if value_range is not None else (float(part.min()), float(part.max()))
            part[...] = (xp.clip(part, low, high) - low) / max(high - low, 1e-5)
    if a.shape[0] == 1:
        return Tensor._wrap(a[0])
    count, (channels, h, w) = a.shape[0], a.shape[1:]
    cols = min(nrow, count)
    rows = int(math.ceil(count / cols))
    cell_h, cell_w = h + padding, w + padding
    grid = xp.full((channels, rows * cell_h + padding, cols * cell_w + padding), pad_value, dtype=a.dtype)
    for k in range(count):
        y, x = divmod(k, cols)
        grid[:, y * cell_h + padding:(y + 1) * cell_h, x * cell_w + padding:(x + 1) * cell_w] = a[k]
    return Tensor._wrap(grid)


def save_image(tensor, fp, format=None, **kwargs):
    """Write an image, or a batch tiled by :func:`make_grid`, to a file (PNG by its name).

    Values in [0, 1] map to 0..255 (rounded); needs Pillow (``pip install dtrain[vision]``).

    Args:
        tensor: as :func:`make_grid` takes.
        fp: a path or a binary file object.
        format: the image format (needed for a file object), e.g. "PNG".
        **kwargs: :func:`make_grid`'s options (nrow, padding, normalize, ...).

    Example:
        >>> save_image(generated, "samples.png", nrow=8, normalize=True)
    """
    image_module = _pil.require("save_image")
    grid = make_grid(tensor, **kwargs)
    array = backend.asnumpy(grid.array)
    # + 0.5 rounds to the nearest level, as torchvision
    pixels = numpy.clip(array * 255 + 0.5, 0, 255).astype(numpy.uint8).transpose(1, 2, 0)
    img = image_module.fromarray(numpy.ascontiguousarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels))
    img.save(fp, format=format)
