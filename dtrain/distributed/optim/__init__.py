"""``dtrain.distributed.optim``: reserved for ZeroRedundancyOptimizer (torch.distributed.optim's),
which is not built yet; asking for it says so. The optimizers themselves are in dtrain.optim."""

RESERVED = ("ZeroRedundancyOptimizer",)


def __getattr__(name):
    if name in RESERVED:
        # NotImplementedError, not AttributeError: `from ... import` would replace the message
        raise NotImplementedError(f"dtrain.distributed.optim.{name} is not available yet: this subpackage is "
                                  f"reserved for it; until then wrap a dtrain.optim optimizer in "
                                  f"DistributedDataParallel training without sharding its state")
    raise AttributeError(f"module 'dtrain.distributed.optim' has no attribute {name!r}")
