"""Dropout: elementwise (dropout) and of whole channels (dropout1d, dropout2d, dropout3d); the
mask comes from dtrain's generator of the input's device (in deterministic mode inside a
per-sample scope: from each sample's own stream, see :mod:`dtrain.tensor.deterministic`) and
is applied as a constant factor."""
import warnings

from ..deterministic import per_sample_uniform
from ..function import on_input_device
from ..random import uniform_array
from ._checks import check_float
from .elementwise import Scale


@on_input_device
def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p).

    The mask comes from dtrain's generator of the input's device (``dtrain.manual_seed``).

    Args:
        input: a floating-point Tensor.
        p: the probability of zeroing an element, in [0, 1].
        training: when False (or p == 0) the input is returned unchanged.
        inplace: accepted for PyTorch compatibility; computed out of place.

    Example:
        >>> F.dropout(dtrain.ones(4), p=0.5)   # e.g. tensor([2., 0., 2., 2.])
    """
    _check_dropout(input, p, "dropout")
    return _apply_mask(input, p, input.shape) if training else input


def _check_dropout(input, p, op):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    check_float(input, op)


def _apply_mask(input, p, mask_shape):
    """``input`` times a 0 / (1 / (1 - p)) mask of ``mask_shape`` (broadcast over the rest)."""
    if p == 0 or input.numel() == 0:
        return input
    mask = keep_mask(mask_shape, p, input.dtype, input.device).astype(input.dtype)
    if p < 1:
        mask *= 1 / (1 - p)
    return Scale.apply(input, factor=mask)


def keep_mask(shape, p, dtype, device):
    """The boolean mask of the elements dropout keeps (each with probability 1 - p): drawn
    per sample (row) in deterministic mode inside a per-sample scope, else from the
    generator of ``device``. Attention's dropout draws through here too."""
    u = per_sample_uniform(shape, dtype, device)
    if u is None:
        u = uniform_array(shape, 0.0, 1.0, dtype, device)
    return u >= p


def _channel_dropout(input, p, training, batched, op):
    """Zero whole channels: one mask entry per (sample, channel) of a batched input, per
    channel (dim 0) of an unbatched one, constant over the remaining dims."""
    lead = 2 if batched else 1
    if input.ndim < lead:
        raise RuntimeError(f"{op}: expected an input with channels, got shape {list(input.shape)}")
    if not training:
        return input
    return _apply_mask(input, p, tuple(input.shape[:lead]) + (1,) * (input.ndim - lead))


def _warn_rank(input, spatial, op):
    if input.ndim not in (spatial + 1, spatial + 2):
        warnings.warn(f"{op}: Received a {input.ndim}-D input to {op}, which is deprecated and will result in an "
                      f"error in a future release. To retain the behavior and silence this warning, please use "
                      f"dropout instead. Note that {op} exists to provide channel-wise dropout on inputs with "
                      f"{spatial} spatial dimensions, a channel dimension, and an optional batch dimension (i.e. "
                      f"{spatial + 1}D or {spatial + 2}D inputs).", UserWarning, stacklevel=3)


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, L) or (C, L) input with probability ``p``, scaling the
    rest by 1 / (1 - p).

    Args:
        input: a 2-D or 3-D floating-point Tensor.
        p: the probability of zeroing a channel.
        training: when False the input is returned unchanged.
        inplace: accepted for PyTorch compatibility; computed out of place.

    Example:
        >>> F.dropout1d(dtrain.ones(2, 3, 4), p=0.5)   # each [n, c, :] all 0 or all 2
    """
    op = "dropout1d"
    _check_dropout(input, p, op)
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{op}: Expected 2D or 3D input, but received a {input.ndim}D input of shape "
                           f"{list(input.shape)}. Note that dropout1d exists to provide channel-wise dropout on "
                           f"inputs with 1 spatial dimension, a channel dimension, and an optional batch "
                           f"dimension (i.e. 2D or 3D inputs).")
    return _channel_dropout(input, p, training, input.ndim == 3, op)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, H, W) input with probability ``p``, scaling the rest
    by 1 / (1 - p).

    As PyTorch (with its warning), a 3-D input is taken as (N, C, L), not as an unbatched
    (C, H, W); other ranks are warned about and get one mask entry per element of dims 0-1.

    Example:
        >>> F.dropout2d(dtrain.ones(2, 3, 4, 4), p=0.5)   # each [n, c] plane all 0 or all 2
    """
    op = "dropout2d"
    _check_dropout(input, p, op)
    _warn_rank(input, 2, op)
    if input.ndim == 3:
        warnings.warn(f"{op}: Received a 3D input to {op} and assuming that channel-wise 1D dropout behavior is "
                      f"desired - input is interpreted as shape (N, C, L), where C is the channel dim. This "
                      f"behavior will change in a future release to interpret the input as one without a batch "
                      f"dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout behavior, please "
                      f"switch to using dropout1d instead.", UserWarning, stacklevel=2)
    return _channel_dropout(input, p, training, True, op)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, D, H, W) or (C, D, H, W) input with probability ``p``,
    scaling the rest by 1 / (1 - p).

    Example:
        >>> F.dropout3d(dtrain.ones(2, 3, 2, 2, 2), p=0.5)
    """
    op = "dropout3d"
    _check_dropout(input, p, op)
    _warn_rank(input, 3, op)
    return _channel_dropout(input, p, training, input.ndim == 5, op)

