"""Image transforms, as ``torchvision.transforms``: ``from dtrain.vision import transforms``.

Example:
    >>> t = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
    ...                         transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
"""
from . import functional  # noqa: F401
from .functional import InterpolationMode  # noqa: F401
from .transforms import (CenterCrop, Compose, Lambda, Normalize, RandomCrop, RandomHorizontalFlip,  # noqa: F401
                         Resize, ToPILImage, ToTensor)
