"""group_norm and rms_norm: group_norm through nn.py's Normalize Function (batch norm's),
on a (N, G, C/G, rest) view normalized over its last two dims; rms_norm through RowNormalize
(layer norm's), dividing by the root mean square without centering."""
import math
import numbers

from ..backend import get_array_module
from .nn import Normalize, _check_float, _moments, _param, normalize_rows, trailing_axes


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize each sample's channels in ``num_groups`` groups, then scale and shift per channel.

    Args:
        input: (N, C, ...) with C divisible by ``num_groups``.
        num_groups: how many groups the channels are split into.
        weight, bias: optional per-channel affine parameters of shape (C,).
        eps: added to the variance.

    Example:
        >>> F.group_norm(dtrain.randn(2, 6, 4), 3).shape
        dtrain.Size([2, 6, 4])
    """
    op = "group_norm"
    _check_float(input, op)
    if input.ndim < 2:
        raise RuntimeError(f"{op}: expected an input of at least 2 dimensions (N, C, ...), got shape "
                           f"{list(input.shape)}")
    n, c = input.shape[:2]
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or num_groups < 1 or \
            c % num_groups:
        raise RuntimeError(f"{op}: the number of channels {c} (dim 1 of input shape {list(input.shape)}) must be "
                           f"divisible by num_groups={num_groups!r}")
    weight, bias = _param(weight, (c,), "weight", op, input), _param(bias, (c,), "bias", op, input)
    rest = math.prod(input.shape[2:])
    if n * (c // num_groups) * rest == 1:  # as PyTorch: a group of one value has no spread
        raise ValueError(f"{op}: expected more than 1 value per group, got input size {list(input.shape)} with "
                         f"num_groups={num_groups}")
    x = input.reshape(n, num_groups, c // num_groups, rest)
    mean, var = _moments(x.array, (2, 3))
    out = Normalize.apply(x, 1 if weight is None else weight, 0 if bias is None else bias, mean=mean, var=var,
                          axes=(2, 3), pshape=(num_groups, c // num_groups, 1), eps=eps, batch_stats=True)
    return out.reshape(input.shape)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x^2) + eps) over the last dims ``normalized_shape``, times ``weight``.

    Args:
        input: a Tensor whose shape ends with ``normalized_shape``.
        normalized_shape: an int or a tuple of ints.
        weight: optional, of shape ``normalized_shape``.
        eps: added to the mean square; None: the machine epsilon of the input's dtype (as PyTorch).

    Example:
        >>> F.rms_norm(dtrain.tensor([[3.0, 4.0]]), (2,))
        tensor([[0.8485, 1.1314]])
    """
    op = "rms_norm"
    shape, _ = trailing_axes(input, normalized_shape, op)
    weight = _param(weight, shape, "weight", op, input)
    if eps is None:
        eps = float(get_array_module(input.array).finfo(input.dtype).eps)
    return normalize_rows(input, shape, weight, None, eps, center=False)
