"""SyncBatchNorm: batch normalization whose statistics span the batches of all ranks."""
from .. import comm as dist
from ..nn.modules.normalization import BatchNormBase
from ..tensor import no_grad
from ..tensor.backend import get_array_module
from ..tensor.deterministic import in_per_sample_scope
from ..tensor.ops.normalization import Normalize


class SyncBatchNormFunction(Normalize):
    """Batch norm over dim 1 with the mean and variance of the global batch (all ranks): the
    normalization and its gradient are batch_norm's (:class:`Normalize`), with the batch
    means taken over every rank.

    Forward all-reduces, per channel, the local sum, the sum of squares about the local
    mean (combined in float64, so no precision is lost to cancellation) and the count;
    a rank with an empty batch contributes zeros (as PyTorch's), still joining every collective;
    backward all-reduces the two per-channel sums its input gradient needs,
    ``sum(dy * w)`` and ``sum(dy * w * xhat)``. The weight and bias gradients stay local:
    DDP averages them with the other gradients.
    """

    def forward(self, x, weight, bias, group=None, eps=1e-5, running_mean=None, running_var=None, momentum=0.1):
        xp = get_array_module(x)
        c = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        pshape = (c,) + (1,) * (x.ndim - 2)
        n = x.size // c
        if n == 0:  # an empty batch adds a zero count (and zero sums): the others' samples make the statistics
            mean64 = m2 = xp.zeros(c, xp.float64)
        else:  # the mean of an empty batch is NaN, and 0 * NaN would poison every rank's sums
            mean = x.mean(axis=axes)
            centered = x - mean.reshape(pshape)
            m2 = (centered * centered).sum(axis=axes)
            mean64 = mean.astype(xp.float64)
        stats = xp.concatenate([mean64 * n, m2.astype(xp.float64) + n * mean64 * mean64, xp.array([n], xp.float64)])
        dist.all_reduce(stats, group=group)
        total = stats[-1]  # stays on the device: float() would synchronise the host every forward
        gmean = stats[:c] / total
        gvar = xp.maximum(stats[c:2 * c] / total - gmean * gmean, 0)
        if running_mean is not None:
            with no_grad():
                running_mean.lerp_(gmean.astype(running_mean.dtype), momentum)
                running_var.lerp_((gvar * (total / xp.maximum(total - 1, 1))).astype(running_var.dtype), momentum)
        self.group, self.total = group, total
        return super().forward(x, weight, bias, mean=gmean.astype(x.dtype).reshape(pshape),
                               var=gvar.astype(x.dtype).reshape(pshape), axes=axes, pshape=pshape, eps=eps)

    def batch_means(self, *arrays):
        xp = get_array_module(arrays[0])
        c = self.pshape[0]
        sums = xp.concatenate([a.sum(axis=self.axes) for a in arrays])
        dist.all_reduce(sums, group=self.group)
        return [(sums[k * c:(k + 1) * c] / self.total).astype(arrays[0].dtype).reshape(self.pshape)
                for k in range(len(arrays))]


class SyncBatchNorm(BatchNormBase):
    """Batch norm whose batch statistics are those of the global batch (as
    ``torch.nn.SyncBatchNorm``): training on N ranks with per-rank batches of B normalizes
    exactly as BatchNorm on the concatenated batch of N x B, running statistics included.

    In eval mode, at world size 1 or without an initialized process group it is plain
    BatchNorm; so it is inside a micro-shard of ``DistributedDataParallel(micro_shard_size=m)``
    (each micro-shard is normalized by its own statistics, the same at every world size; the
    running statistics become the exact mean over the global batch's micro-shards). Otherwise
    forward and backward are collectives (every rank must run them); the input is
    ``(N, C, ...)`` with any number of trailing dims.

    Args:
        num_features: C.
        eps, momentum, affine, track_running_stats: as BatchNorm.
        process_group: the group whose batches form the global batch (None: the default).

    Example:
        >>> model = SyncBatchNorm.convert_sync_batchnorm(model)
        >>> ddp = DistributedDataParallel(model)
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNorm: expected at least 2D input (got {input.dim()}D input of shape "
                             f"{list(input.shape)})")
        if input.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm: expected input with {self.num_features} channels (dim 1), "
                             f"got input of shape {list(input.shape)}")

    def _world_size(self):
        return dist.get_world_size(self.process_group) if dist.is_initialized() else 1

    def forward(self, input):
        # in a micro-shard of DistributedDataParallel(micro_shard_size=m) the statistics are the
        # micro-shard's own: the ranks hold different numbers of micro-shards at different world
        # sizes, so statistics over "the same micro-shard index on every rank" would depend on it
        if not self.training or self._world_size() == 1 or in_per_sample_scope():
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        running = self.track_running_stats and self.running_mean is not None
        return SyncBatchNormFunction.apply(
            input, 1 if self.weight is None else self.weight, 0 if self.bias is None else self.bias,
            group=self.process_group, eps=self.eps, momentum=factor,
            running_mean=self.running_mean if running else None, running_var=self.running_var if running else None)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replace every BatchNorm layer in ``module`` by a SyncBatchNorm sharing its parameters
        and buffers; returns the converted module (``module`` itself unless it is a BatchNorm).

        Example:
            >>> net = SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)))
            >>> type(net[1]).__name__
            'SyncBatchNorm'
        """
        out = module
        if isinstance(module, BatchNormBase) and not isinstance(module, SyncBatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group)
            out._parameters["weight"], out._parameters["bias"] = module.weight, module.bias
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                out._buffers[name] = getattr(module, name)
            out.training = module.training
        for name, child in module.named_children():
            out._modules[name] = cls.convert_sync_batchnorm(child, process_group)
        return out
