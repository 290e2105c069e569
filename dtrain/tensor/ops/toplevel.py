"""torch.softmax, log_softmax, relu, dropout: nn ops under their top-level names, with the
top-level signatures (``dtype`` third in softmax, ``train`` in dropout), as torch has them."""
from . import activation as _activation
from .dropout import dropout as _dropout


def softmax(input, dim, dtype=None):  # noqa: A002
    """``dtrain.nn.functional.softmax(input, dim, dtype=dtype)``."""
    return _activation.softmax(input, dim, dtype=dtype)


def log_softmax(input, dim, dtype=None):  # noqa: A002
    """``dtrain.nn.functional.log_softmax(input, dim, dtype=dtype)``."""
    return _activation.log_softmax(input, dim, dtype=dtype)


def relu(input):  # noqa: A002
    """``dtrain.nn.functional.relu(input)``."""
    return _activation.relu(input)


def dropout(input, p, train):  # noqa: A002
    """``dtrain.nn.functional.dropout(input, p, training=train)``."""
    return _dropout(input, p, train)
