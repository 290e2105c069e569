"""``dtrain.distributed.checkpoint``: torch.distributed.checkpoint's path. Its ``state_dict``
module gives a model's and its optimizers' state in one layout, keyed by parameter name,
whatever the parallelism (plain, DistributedDataParallel, fully_shard) and the world size.
Files are written with :func:`dtrain.save` (atomic, checksummed): see docs/checkpoints.md."""
from .state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,  # noqa: F401
                         get_state_dict, set_model_state_dict, set_optimizer_state_dict, set_state_dict)
