"""Synthetic, learnable datasets for benchmarks and tests, reproducible from a seed."""
import numbers

import numpy

from ...tensor import dtypes, from_numpy
from ..dataset import TensorDataset


def _check_count(fn, name, value, least):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise ValueError(f"{fn}: {name} must be an int >= {least}, got {value!r}")


def make_classification(n_samples=1000, n_features=20, n_classes=2, seed=0, class_sep=1.0):
    """Gaussian class clusters: class ``c`` is ``N(centers[c], I)``.

    The centers are drawn from ``N(0, class_sep**2 I)``, so classes separate better with
    more features or a larger ``class_sep``. Classes are balanced (sizes differ by at most one).

    Args:
        n_samples: number of samples.
        n_features: dimension of each sample.
        n_classes: number of classes (at least 2).
        seed: the seed of the data (independent of ``dtrain.manual_seed``).
        class_sep: scale of the cluster centers.

    Returns:
        TensorDataset(x float32 (n_samples, n_features), y int64 (n_samples,)) with the
        attribute ``centers``, a float32 tensor (n_classes, n_features).

    Example:
        >>> ds = make_classification(512, 20, 4, seed=0)
        >>> x, y = ds.tensors
    """
    fn = "make_classification"
    _check_count(fn, "n_samples", n_samples, 1)
    _check_count(fn, "n_features", n_features, 1)
    _check_count(fn, "n_classes", n_classes, 2)
    rng = numpy.random.default_rng(seed)
    centers = rng.normal(0.0, class_sep, (n_classes, n_features))
    y = rng.permutation(numpy.arange(n_samples) % n_classes)
    x = centers[y] + rng.standard_normal((n_samples, n_features))
    ds = TensorDataset(from_numpy(x.astype(dtypes.float32)), from_numpy(y.astype(dtypes.int64)))
    ds.centers = from_numpy(centers.astype(dtypes.float32))
    return ds


def make_regression(n_samples=1000, n_features=10, noise=0.1, seed=0, n_targets=1):
    """A known linear map plus Gaussian noise: ``y = x @ weight.T + bias + noise * N(0, 1)``.

    Args:
        n_samples: number of samples.
        n_features: dimension of each input (drawn from N(0, I)).
        noise: standard deviation of the noise added to the targets.
        seed: the seed of the data (independent of ``dtrain.manual_seed``).
        n_targets: dimension of each target.

    Returns:
        TensorDataset(x float32 (n_samples, n_features), y float32 (n_samples, n_targets))
        with the true map attached as ``weight`` (n_targets, n_features) and ``bias``
        (n_targets,), in ``nn.Linear``'s layout.

    Example:
        >>> ds = make_regression(256, 8, noise=0.0)
        >>> x, y = ds.tensors   # y == x @ ds.weight.T + ds.bias
    """
    fn = "make_regression"
    _check_count(fn, "n_samples", n_samples, 1)
    _check_count(fn, "n_features", n_features, 1)
    _check_count(fn, "n_targets", n_targets, 1)
    if not noise >= 0:
        raise ValueError(f"{fn}: noise must be a standard deviation >= 0, got {noise!r}")
    rng = numpy.random.default_rng(seed)
    weight = rng.standard_normal((n_targets, n_features))
    bias = rng.standard_normal(n_targets)
    x = rng.standard_normal((n_samples, n_features))
    y = x @ weight.T + bias + noise * rng.standard_normal((n_samples, n_targets))
    ds = TensorDataset(from_numpy(x.astype(dtypes.float32)), from_numpy(y.astype(dtypes.float32)))
    ds.weight = from_numpy(weight.astype(dtypes.float32))
    ds.bias = from_numpy(bias.astype(dtypes.float32))
    return ds
