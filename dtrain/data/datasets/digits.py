"""scikit-learn's 8x8 handwritten digits (1,797 real images, shipped inside the package)."""
import numpy

from ...tensor import dtypes, from_numpy
from ..dataset import TensorDataset

N_TRAIN = 1437  # of 1797: an 80/20 split
_SPLIT_SEED = 0  # fixed, so the split never depends on dtrain's or NumPy's global RNG


def digits(train=True, flatten=False):
    """The UCI handwritten digits as a TensorDataset of (image, label).

    A fixed permutation splits the 1,797 images into 1,437 for training and 360 for testing;
    the split is the same on every call and machine.

    Args:
        train: the training split if True, else the test split.
        flatten: images of shape (64,) instead of (1, 8, 8).

    Returns:
        TensorDataset(images, labels): images float32 in [0, 1] (the 0..16 gray levels
        divided by 16), labels int64 in 0..9.

    Raises:
        ImportError: scikit-learn, which ships the data, is not installed.

    Example:
        >>> train = digits()
        >>> len(train), train[0][0].shape
        (1437, dtrain.Size([1, 8, 8]))
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("dtrain.data.datasets.digits needs scikit-learn, which ships the data: "
                          "pip install scikit-learn") from e
    bunch = load_digits()
    order = numpy.random.default_rng(_SPLIT_SEED).permutation(len(bunch.target))
    rows = order[:N_TRAIN] if train else order[N_TRAIN:]
    images = (bunch.images[rows] / 16).astype(dtypes.float32)
    images = images.reshape(len(rows), 64) if flatten else images.reshape(len(rows), 1, 8, 8)
    return TensorDataset(from_numpy(images), from_numpy(bunch.target[rows].astype(dtypes.int64)))
