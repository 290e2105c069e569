"""MNIST at torchvision's path, read by :class:`dtrain.data.datasets.MNIST`."""
import os

from ...data.datasets import mnist
from ._files import PILSamples, require_files


class MNIST(PILSamples, mnist.MNIST):
    """The MNIST digits as ``torchvision.datasets.MNIST``: samples are (PIL image mode L,
    int label).

    The IDX files (optionally ``.gz``) are read from ``root/MNIST/raw`` (torchvision's
    layout) or from ``root``; dtrain does not download them.

    Args:
        root: the directory holding ``MNIST/raw``.
        train: the 60,000 training images if True, else the 10,000 test images.
        transform: applied to each PIL image (e.g. ``transforms.ToTensor()``).
        target_transform: applied to each label.
        download: files missing with download=True are an error naming them and where
            to place them (as with download=False).

    Example:
        >>> train = datasets.MNIST("data", train=True, transform=transforms.ToTensor())
    """

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        root = os.path.expanduser(os.fspath(root))
        raw = os.path.join(root, "MNIST", "raw")
        prefix = "train" if train else "t10k"
        require_files("MNIST", [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"], [raw, root],
                      download, raw, f"from {mnist.URL}", gz=True)
        super().__init__(root, train, transform, target_transform)

    @property
    def raw_folder(self):
        return os.path.join(self.root, "MNIST", "raw")

    @property
    def class_to_idx(self):
        return {c: i for i, c in enumerate(self.classes)}
