"""Datasets, as ``torchvision.datasets``: MNIST and CIFAR-10 from their standard files, FakeData."""
from .cifar import CIFAR10  # noqa: F401
from .fakedata import FakeData  # noqa: F401
from .mnist import MNIST  # noqa: F401
