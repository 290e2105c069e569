"""``dtrain.distributed``: torch.distributed's path to :mod:`dtrain.comm`.

``import dtrain.distributed as dist`` gives every public name of ``dtrain.comm`` (the same
objects): ``dist.init_process_group("gloo")``, ``dist.all_reduce``, ``dist.ReduceOp``, ... so
a PyTorch script ports by renaming ``torch`` to ``dtrain``. ``dtrain.distributed.optim`` has
ZeroRedundancyOptimizer, ``dtrain.distributed.fsdp`` fully_shard, and
``dtrain.distributed.checkpoint.state_dict`` get_state_dict / set_state_dict (state that loads
at any world size); ``python -m dtrain.distributed.run`` is torchrun (the launcher,
:mod:`dtrain.launch`).

Example:
    >>> import dtrain.distributed as dist
    >>> dist.init_process_group("gloo")
    >>> t = dtrain.ones(2); dist.all_reduce(t)
"""
from ..comm import *  # noqa: F401,F403 -- the same objects as dtrain.comm's public names
from .. import comm as _comm


def __getattr__(name):  # what dtrain.comm gains later (e.g. its backend modules, once imported)
    if not name.startswith("_") and hasattr(_comm, name):
        return getattr(_comm, name)
    raise AttributeError(f"module 'dtrain.distributed' has no attribute {name!r}")
