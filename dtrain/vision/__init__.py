"""torchvision's shape: ``from dtrain.vision import datasets, transforms, utils``.

Images are PIL images when Pillow is installed (``pip install dtrain[vision]``), as in
torchvision; without it the datasets give uint8 arrays (H, W[, C]), which ``ToTensor``
also takes.
"""
from . import datasets, transforms, utils  # noqa: F401
