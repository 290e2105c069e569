"""Transform objects, as ``torchvision.transforms``: compose them into a dataset's pipeline.

The random ones draw from dtrain's default generator (``dtrain.rand``, ``dtrain.randint``),
so ``dtrain.manual_seed`` reproduces them. As in torchvision, the ones with a tensor path
are Modules (usable in ``nn.Sequential``); ToTensor, ToPILImage, Lambda and Compose are
plain callables.
"""
import numbers

from ...nn import Module
from ...tensor import rand, randint
from . import functional as F


class Compose:
    """Apply ``transforms`` in order.

    Example:
        >>> t = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])
    """

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable, got {type(t).__name__}")

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        body = "".join(f"\n    {t}" for t in self.transforms)
        return f"{type(self).__name__}({body}\n)"


class ToTensor:
    """A PIL image or a NumPy array (H, W, C) to a CHW tensor; uint8 is scaled to [0, 1]
    (see :func:`functional.to_tensor`)."""

    def __call__(self, pic):
        return F.to_tensor(pic)

    def __repr__(self):
        return f"{type(self).__name__}()"


class ToPILImage:
    """A tensor (C, H, W) or a NumPy array (H, W, C) to a PIL image (see
    :func:`functional.to_pil_image`).

    Args:
        mode: the PIL mode to convert the result to (default: L, LA, RGB or RGBA by channels).
    """

    def __init__(self, mode=None):
        self.mode = mode

    def __call__(self, pic):
        return F.to_pil_image(pic, self.mode)

    def __repr__(self):
        return f"{type(self).__name__}({'' if self.mode is None else f'mode={self.mode}'})"


class Lambda:
    """Apply a user function ``lambd(img)`` as a transform."""

    def __init__(self, lambd):
        if not callable(lambd):
            raise TypeError(f"Argument lambd should be callable, got {type(lambd).__name__!r}")
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Normalize(Module):
    """``(img - mean) / std`` per channel of a float tensor image.

    Args:
        mean: one value per channel (or one for all).
        std: one value per channel (or one for all), none zero.
        inplace: modify the input tensor.

    Example:
        >>> Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(dtrain.ones(3, 2, 2)).max().item()
        1.0
    """

    def __init__(self, mean, std, inplace=False):
        super().__init__()
        self.mean, self.std, self.inplace = mean, std, inplace

    def forward(self, tensor):
        return F.normalize(tensor, self.mean, self.std, self.inplace)

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


def _check_probability(owner, p):
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"{owner}: p should be a probability in [0, 1], got {p!r}")
    return p


class RandomHorizontalFlip(Module):
    """Mirror the image left to right with probability ``p`` (one ``dtrain.rand`` draw per call)."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = _check_probability("RandomHorizontalFlip", p)

    def forward(self, img):
        if rand(1).item() < self.p:
            return F.hflip(img)
        return img

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"


class RandomCrop(Module):
    """Crop a random ``size`` region, after optional padding.

    Args:
        size: int (square) or (h, w).
        padding: pad first: an int, (left/right, top/bottom) or (left, top, right, bottom).
        pad_if_needed: pad an image smaller than ``size`` up to it.
        fill: the constant padding's value.
        padding_mode: 'constant', 'edge', 'reflect' or 'symmetric'.

    Example:
        >>> RandomCrop(32, padding=4)   # CIFAR-10's augmentation
    """

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0, padding_mode="constant"):
        super().__init__()
        self.size = F.setup_size(size, "RandomCrop")
        if padding is not None:
            F.parse_padding(padding)
        if padding_mode not in F._PAD_MODES:
            raise ValueError(f"RandomCrop: padding_mode should be either constant, edge, reflect or symmetric, "
                             f"got {padding_mode!r}")
        self.padding, self.pad_if_needed, self.fill, self.padding_mode = padding, pad_if_needed, fill, padding_mode

    @staticmethod
    def get_params(img, output_size):
        """``(top, left, height, width)`` of a random crop of ``output_size`` (two
        ``dtrain.randint`` draws: top, then left)."""
        h, w = F.get_dimensions(img)[1:]
        th, tw = output_size
        if h < th or w < tw:
            raise ValueError(f"Required crop size {(th, tw)} is larger than input image size {(h, w)}")
        if h == th and w == tw:
            return 0, 0, h, w
        top = randint(0, h - th + 1, size=(1,)).item()
        left = randint(0, w - tw + 1, size=(1,)).item()
        return top, left, th, tw

    def forward(self, img):
        if self.padding is not None:
            img = F.pad(img, self.padding, self.fill, self.padding_mode)
        h, w = F.get_dimensions(img)[1:]
        if self.pad_if_needed and w < self.size[1]:
            img = F.pad(img, [self.size[1] - w, 0], self.fill, self.padding_mode)
        if self.pad_if_needed and h < self.size[0]:
            img = F.pad(img, [0, self.size[0] - h], self.fill, self.padding_mode)
        return F.crop(img, *self.get_params(img, self.size))

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, padding={self.padding})"


class CenterCrop(Module):
    """Crop the central ``size`` region (zero-padded where the image is smaller)."""

    def __init__(self, size):
        super().__init__()
        self.size = F.setup_size(size, "CenterCrop")

    def forward(self, img):
        return F.center_crop(img, self.size)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size})"


class Resize(Module):
    """Resize to ``size``: an int sets the smaller edge (aspect ratio kept), (h, w) both.

    Args:
        size: int or (h, w) (or [int]).
        interpolation: InterpolationMode.BILINEAR (default) or NEAREST (also
            NEAREST_EXACT on tensors; every Pillow filter on PIL images), or PIL's int.
        max_size: the cap on the longer edge when ``size`` is an int.
        antialias: antialiased bilinear downscaling of tensors (PIL always antialiases).

    Example:
        >>> Resize(4)(dtrain.ones(3, 8, 16)).shape
        dtrain.Size([3, 4, 8])
    """

    def __init__(self, size, interpolation=F.InterpolationMode.BILINEAR, max_size=None, antialias=True):
        super().__init__()
        if not (isinstance(size, numbers.Integral) and not isinstance(size, bool) or isinstance(size, (list, tuple))):
            raise TypeError(f"Size should be int or sequence. Got {type(size)}")
        if isinstance(size, (list, tuple)) and len(size) not in (1, 2):
            raise ValueError(f"If size is a sequence, it should have 1 or 2 values, got {list(size)}")
        sizes = [size] if isinstance(size, numbers.Integral) else list(size)
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(f"Resize: size must be positive ints, got {size!r}")
        self.size, self.max_size, self.antialias = size, max_size, antialias
        self.interpolation = F.interpolation_mode(interpolation)

    def forward(self, img):
        return F.resize(img, self.size, self.interpolation, self.max_size, self.antialias)

    def __repr__(self):
        return (f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation.value}, "
                f"max_size={self.max_size}, antialias={self.antialias})")
