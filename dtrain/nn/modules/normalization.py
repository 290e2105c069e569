"""Normalization layers: BatchNorm1d, BatchNorm2d, LayerNorm, GroupNorm, RMSNorm (as torch.nn)."""
import numbers

from ...tensor import empty, ones, tensor, zeros
from ...tensor.dtypes import int64
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ._checks import check_int


def _add_affine_parameters(module, shape, affine, bias, device, dtype):
    """A ``weight`` and (if ``bias``) a ``bias`` of ``shape`` when ``affine``; else both None."""
    if affine:
        module.weight = Parameter(empty(*shape, dtype=dtype, device=device))
        module.bias = Parameter(empty(*shape, dtype=dtype, device=device)) if bias else None
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def _reset_affine_parameters(module):
    """The identity transform: weight ones, bias zeros (each where it exists)."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class BatchNormBase(Module):
    """Batch normalization over the channel dim (dim 1), with running statistics: the base of
    BatchNorm1d/2d and of dtrain.parallel.SyncBatchNorm (``_BatchNorm`` in PyTorch).

    In training mode it normalizes by the batch's mean and (biased) variance and updates
    ``running_mean``/``running_var`` (unbiased variance) with ``momentum``, or with a
    cumulative average when ``momentum=None``; in eval mode it uses the running statistics.
    """

    _expected_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        name = type(self).__name__
        self.num_features = check_int(name, "num_features", num_features, minimum=1)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None (cumulative average), got {momentum}")
        if eps < 0:
            raise ValueError(f"{name}: eps must be non-negative, got {eps}")
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        _add_affine_parameters(self, (num_features,), affine, bias, device, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, dtype=dtype, device=device))
            self.register_buffer("running_var", ones(num_features, dtype=dtype, device=device))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            init.zeros_(self.num_batches_tracked)

    def reset_parameters(self):
        self.reset_running_stats()
        _reset_affine_parameters(self)

    def _check_input_dim(self, input):
        if input.dim() not in self._expected_dims:
            dims = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"{type(self).__name__}: expected {dims} input (got {input.dim()}D input of shape "
                             f"{list(input.shape)})")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected input with {self.num_features} channels (dim 1), "
                             f"got input of shape {list(input.shape)}")

    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_running = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if keep_running else None,
                            self.running_var if keep_running else None, self.weight, self.bias,
                            use_batch_stats, factor, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # as PyTorch for a state dict without version metadata: num_batches_tracked may be absent
        key = prefix + "num_batches_tracked"
        if self.track_running_stats and key not in state_dict:
            state_dict[key] = self.num_batches_tracked if self.num_batches_tracked is not None \
                else tensor(0, dtype=int64)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


_BatchNorm = BatchNormBase  # PyTorch's (private) name, which PyTorch programs use in isinstance checks


class BatchNorm1d(BatchNormBase):
    """Batch norm over ``(N, C)`` or ``(N, C, L)`` input, per channel C.

    Args:
        num_features: C.
        eps: added to the variance for stability (default 1e-5).
        momentum: weight of the new batch in the running statistics (default 0.1);
            None for a cumulative average.
        affine: learn a per-channel scale ``weight`` and shift ``bias``.
        bias: (keyword) learn the shift too, when affine.
        track_running_stats: keep running statistics (else batch statistics in eval too).

    Example:
        >>> nn.BatchNorm1d(16)(dtrain.randn(8, 16)).shape
        dtrain.Size([8, 16])
    """

    _expected_dims = (2, 3)


class BatchNorm2d(BatchNormBase):
    """Batch norm over ``(N, C, H, W)`` input, per channel C (arguments as BatchNorm1d).

    Example:
        >>> nn.BatchNorm2d(16)(dtrain.randn(8, 16, 5, 5)).shape
        dtrain.Size([8, 16, 5, 5])
    """

    _expected_dims = (4,)


class LayerNorm(Module):
    """Normalize over the last ``len(normalized_shape)`` dims of each sample.

    Args:
        normalized_shape: an int or the trailing shape to normalize over.
        eps: added to the variance for stability (default 1e-5).
        elementwise_affine: learn ``weight`` (ones) and ``bias`` (zeros) of that shape.
        bias: learn the bias too (when elementwise_affine).

    Example:
        >>> nn.LayerNorm(10)(dtrain.randn(4, 7, 10)).shape
        dtrain.Size([4, 7, 10])
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(check_int("LayerNorm", "normalized_shape", s) for s in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        _add_affine_parameters(self, self.normalized_shape, elementwise_affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine_parameters(self)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalize each sample's channels in ``num_groups`` groups (mean and variance over the
    group's channels and all positions), then scale and shift per channel.

    Args:
        num_groups: the number of groups; must divide num_channels.
        num_channels: C of an (N, C, ...) input.
        eps: added to the variance (default 1e-5).
        affine: learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
        bias: (keyword) learn the bias too, when affine.

    Example:
        >>> nn.GroupNorm(2, 6)(dtrain.randn(4, 6, 5)).shape
        dtrain.Size([4, 6, 5])
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        num_groups = check_int("GroupNorm", "num_groups", num_groups, minimum=1)
        num_channels = check_int("GroupNorm", "num_channels", num_channels, minimum=1)
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        _add_affine_parameters(self, (num_channels,), affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine_parameters(self)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(Module):
    """Divide by the root mean square over the last ``len(normalized_shape)`` dims, then scale.

    Args:
        normalized_shape: an int or the trailing shape to normalize over.
        eps: added to the mean square; None (default): the input dtype's machine epsilon.
        elementwise_affine: learn a ``weight`` (ones) of that shape (there is no bias).

    Example:
        >>> nn.RMSNorm(10)(dtrain.randn(4, 7, 10)).shape
        dtrain.Size([4, 7, 10])
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(check_int("RMSNorm", "normalized_shape", s) for s in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(empty(*self.normalized_shape, dtype=dtype, device=device))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.elementwise_affine:
            init.ones_(self.weight)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
