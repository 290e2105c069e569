"""Datasets: real ones (scikit-learn's digits; MNIST and CIFAR-10 from their standard files)
and synthetic learnable ones for benchmarks."""
from ._files import transformed  # noqa: F401  (applies a dataset's transforms; vision's datasets use it)
from .cifar import CIFAR10  # noqa: F401
from .digits import digits  # noqa: F401
from .mnist import MNIST  # noqa: F401
from .synthetic import make_classification, make_regression  # noqa: F401
