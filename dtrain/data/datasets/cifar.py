"""CIFAR-10 from the official "python version" batches in a local directory."""
import codecs
import io
import os
import pickle

import numpy

from ._files import ImageDataset, find_file, read_bytes

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_SAMPLE = numpy.zeros(1)
# The official batches are pickles: that is the format the dataset is distributed in. The
# unpickler below resolves only what a dict of NumPy arrays, bytes and lists needs, so a
# tampered file fails to load instead of running code.
_SAFE_GLOBALS = {
    ("numpy", "_reconstruct"): _SAMPLE.__reduce__()[0],
    ("numpy", "_frombuffer"): _SAMPLE.__reduce_ex__(5)[0],
    ("numpy", "ndarray"): numpy.ndarray,
    ("numpy", "dtype"): numpy.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 pickles bytes at protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _SAFE_GLOBALS.get((module.split(".")[0], name))
        if found is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return found


def _load_batch(path):
    try:
        # latin1 reads the Python 2 pickles of the official release (as torchvision does)
        entry = _RestrictedUnpickler(io.BytesIO(read_bytes("CIFAR10", path)), encoding="latin1").load()
    except Exception as e:  # unpickling a damaged file can fail in many ways
        raise ValueError(f"CIFAR10 file {path} is corrupted: cannot unpickle it ({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"CIFAR10 file {path} is corrupted: expected a dict, found a {type(entry).__name__}")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    for key in ("data", "labels"):
        if key not in entry:
            raise ValueError(f"CIFAR10 file {path} is corrupted: no {key!r} entry (found {sorted(entry)})")
    data, labels = entry["data"], numpy.asarray(entry["labels"])
    if not isinstance(data, numpy.ndarray) or data.dtype != numpy.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"CIFAR10 file {path} is corrupted: 'data' should be uint8 of shape (N, 3072), got "
                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or labels.size and not (
            0 <= labels.min() and labels.max() <= 9):
        raise ValueError(f"CIFAR10 file {path} is corrupted: 'labels' should be {len(data)} ints in 0..9, got "
                         f"{labels.dtype} of shape {labels.shape}")
    return data, labels


class CIFAR10(ImageDataset):
    """CIFAR-10 (32x32 colour images, 10 classes) from the official python batches.

    The batches are looked up in ``root/cifar-10-batches-py`` (torchvision's layout), then
    in ``root``; dtrain does not download them.

    Args:
        root: the directory that holds ``cifar-10-batches-py``.
        train: the 50,000 images of ``data_batch_1..5`` if True, else the 10,000 of ``test_batch``.
        transform: applied to each image, a float32 tensor (3, 32, 32) in [0, 1].
        target_transform: applied to each label (an int).
        download: accepted for compatibility; missing files raise an error saying where
            to get them.

    Attributes:
        data: the uint8 images, a NumPy array (N, 32, 32, 3) as torchvision's. targets: a list of ints.

    Example:
        >>> test = CIFAR10("~/data", train=False)
        >>> image, label = test[0]
    """

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        super().__init__(transform, target_transform)
        self.root, self.train = os.path.expanduser(root), train
        dirs = [os.path.join(self.root, "cifar-10-batches-py"), self.root]
        how = f"download cifar-10-python.tar.gz from {URL} and extract it into {self.root}"
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        batches = [_load_batch(find_file("CIFAR10", name, dirs, how)) for name in names]
        self.data = numpy.concatenate([d for d, _ in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets = numpy.concatenate([t for _, t in batches]).tolist()

    def _image(self, index):
        return self.data[index].transpose(2, 0, 1)
