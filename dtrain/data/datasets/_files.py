"""What the file-backed datasets share: finding their files, reading (gzipped) bytes,
and serving (image, label) samples as torchvision's ToTensor would."""
import gzip
import os
import zlib

import numpy

from ...tensor import Tensor, dtypes
from ..dataset import Dataset


def find_file(dataset, name, dirs, how_to_get, gz=False):
    """The path of ``name`` (or ``name.gz`` if ``gz``) in the first of ``dirs`` holding it.

    Raises:
        FileNotFoundError naming the file, the first directory and ``how_to_get``.
    """
    for d in dirs:
        for candidate in (name, f"{name}.gz") if gz else (name,):
            path = os.path.join(d, candidate)
            if os.path.isfile(path):
                return path
    others = f" (nor in {', '.join(dirs[1:])})" if len(dirs) > 1 else ""
    raise FileNotFoundError(f"{dataset} file {name}{'(.gz)' if gz else ''} not found in {dirs[0]}{others}: "
                            f"{how_to_get}")


def read_bytes(dataset, path):
    """The contents of ``path``, decompressed when it ends in ``.gz``."""
    if not path.endswith(".gz"):
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{dataset} file {path} is corrupted: not a complete gzip file ({e})") from None


def transformed(dataset, image, target):
    """The sample ``(image, target)`` after ``dataset``'s ``transform`` and ``target_transform``
    (each where it is not None)."""
    if dataset.transform is not None:
        image = dataset.transform(image)
    if dataset.target_transform is not None:
        target = dataset.target_transform(target)
    return image, target


class ImageDataset(Dataset):
    """(image, label) samples: the image a float32 CHW tensor in [0, 1], the label an int.

    Subclasses set ``targets`` and define ``_image(index)``, the raw uint8 CHW array;
    ``_convert`` makes the sample's image of it (dtrain.vision's datasets give PIL images).
    """

    def __init__(self, transform=None, target_transform=None):
        self.transform, self.target_transform = transform, target_transform

    def _convert(self, image):
        return Tensor._wrap(image.astype(dtypes.float32) / numpy.float32(255))

    def __getitem__(self, index):
        return transformed(self, self._convert(self._image(index)), int(self.targets[index]))

    def __len__(self):
        return len(self.targets)
