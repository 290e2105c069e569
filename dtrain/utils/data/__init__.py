"""``torch.utils.data``'s path to :mod:`dtrain.data`: the same objects, no copies.

``from dtrain.utils.data import DataLoader`` and ``from dtrain.utils.data.distributed
import DistributedSampler`` are what a renamed PyTorch script imports; the submodules
``dataloader``, ``dataset`` and ``sampler`` are dtrain.data's too.

Example:
    >>> import dtrain
    >>> dtrain.utils.data.DataLoader is dtrain.data.DataLoader
    True
"""
import sys

from ...data import *  # noqa: F401,F403
from ...data import dataloader, dataset, sampler  # noqa: F401  (also in *: named for the loop below)
from . import distributed  # noqa: F401

# `from dtrain.utils.data.dataloader import DataLoader` finds dtrain.data's modules
for _name in ("dataloader", "dataset", "sampler"):
    sys.modules.setdefault(f"{__name__}.{_name}", globals()[_name])
del _name
