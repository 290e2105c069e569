"""MNIST from its standard IDX files (optionally gzipped) in a local directory."""
import os

import numpy

from ...tensor import from_numpy
from ._files import ImageDataset, find_file, read_bytes

URL = "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"


def read_idx_ubyte(dataset, path, ndim):
    """The uint8 array in an IDX file: big-endian magic 0x000008NN (unsigned bytes, NN
    dims), then NN big-endian int32 sizes, then the data."""
    raw = read_bytes(dataset, path)
    magic, header = int.from_bytes(raw[:4], "big"), 4 + 4 * ndim
    if len(raw) >= 4 and magic != 0x0800 | ndim:
        raise ValueError(f"{dataset} file {path} is corrupted: magic number {magic:#010x}, expected "
                         f"{0x0800 | ndim:#010x} (IDX of unsigned bytes with {ndim} dims)")
    if len(raw) < header:
        raise ValueError(f"{dataset} file {path} is truncated: {len(raw)} bytes, shorter than the "
                         f"{header}-byte IDX header")
    shape = tuple(int(s) for s in numpy.frombuffer(raw, ">i4", ndim, 4))
    expected = int(numpy.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(f"{dataset} file {path} is corrupted: {len(raw) - header} bytes of data, expected "
                         f"{' x '.join(map(str, shape))} = {expected}")
    return numpy.frombuffer(raw, numpy.uint8, expected, header).reshape(shape)


class MNIST(ImageDataset):
    """The MNIST handwritten digits, read from the four standard IDX files.

    Files (each also accepted gzipped, ``.gz``) are looked up in ``root``, then in
    ``root/MNIST/raw`` (torchvision's layout); dtrain does not download them.

    Args:
        root: the directory holding the files.
        train: the 60,000 training images (``train-*``) if True, else the 10,000 test
            images (``t10k-*``).
        transform: applied to each image, a float32 tensor (1, 28, 28) in [0, 1].
        target_transform: applied to each label (an int).
        download: accepted for compatibility; missing files raise an error saying where
            to get them.

    Attributes:
        data: the uint8 images, a tensor (N, 28, 28). targets: the int64 labels (N,).

    Example:
        >>> train = MNIST("~/data/mnist")
        >>> image, label = train[0]
    """

    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
               "8 - eight", "9 - nine"]

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        super().__init__(transform, target_transform)
        self.root, self.train = os.path.expanduser(root), train
        prefix = "train" if train else "t10k"
        dirs = [self.root, os.path.join(self.root, "MNIST", "raw")]
        how = f"download it from {URL} into that directory"
        images_path = find_file("MNIST", f"{prefix}-images-idx3-ubyte", dirs, how, gz=True)
        labels_path = find_file("MNIST", f"{prefix}-labels-idx1-ubyte", dirs, how, gz=True)
        images = read_idx_ubyte("MNIST", images_path, 3)
        labels = read_idx_ubyte("MNIST", labels_path, 1)
        if len(images) != len(labels):
            raise ValueError(f"MNIST files disagree: {images_path} holds {len(images)} images but "
                             f"{labels_path} holds {len(labels)} labels")
        self.data = from_numpy(images)
        self.targets = from_numpy(labels.astype(numpy.int64))

    def _image(self, index):
        return self.data.array[index][None]
