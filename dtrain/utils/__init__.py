"""``torch.utils``'s path: ``dtrain.utils.data`` is :mod:`dtrain.data` under torch's name;
``dtrain.utils.checkpoint`` is activation checkpointing."""
from . import checkpoint, data  # noqa: F401
