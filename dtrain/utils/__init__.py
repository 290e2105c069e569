"""``torch.utils``'s path: ``dtrain.utils.data`` is :mod:`dtrain.data` under torch's name."""
from . import data  # noqa: F401
