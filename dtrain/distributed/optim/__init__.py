"""``dtrain.distributed.optim``: torch.distributed.optim's ZeroRedundancyOptimizer (optimizer
state sharded across ranks). The optimizers themselves are in dtrain.optim."""
from .zero_redundancy_optimizer import ZeroRedundancyOptimizer  # noqa: F401
