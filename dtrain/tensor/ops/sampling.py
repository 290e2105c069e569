"""Sampling indices from weights: multinomial, drawn from dtrain's per-device generators."""
import math
import numbers

from .. import dtypes
from ..backend import get_array_module
from ..random import uniform_array
from ..tensor import Tensor


def multinomial(input, num_samples, replacement=False, *, generator=None):  # noqa: A002
    """Draw ``num_samples`` category indices per row of ``input`` (1-D or 2-D non-negative
    weights, not necessarily normalized), with or without replacement. The draws come from
    dtrain's generator of the input's device, so ``dtrain.manual_seed`` reproduces them
    (PyTorch's own random stream differs).

    Args:
        input: weights, shape (n,) or (rows, n).
        num_samples: samples per row (at most n without replacement).
        replacement: draw with replacement.
        generator: a ``dtrain.Generator`` on the input's device.

    Example:
        >>> dtrain.multinomial(dtrain.tensor([0., 1., 0.]), 2, replacement=True)
        tensor([1, 1])
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial: expected a Tensor, got {type(input).__name__}")
    if input.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got shape {list(input.shape)}")
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got {input.dtype}")
    if not isinstance(num_samples, numbers.Integral) or num_samples <= 0:
        raise RuntimeError(f"multinomial: cannot sample n_sample <= 0 samples, got {num_samples}")
    n = input.shape[-1]
    if n == 0:
        raise RuntimeError("multinomial: number of categories cannot be zero")
    if not replacement and num_samples > n:
        raise RuntimeError(f"multinomial: cannot sample n_sample > prob_dist.size(-1) samples without "
                           f"replacement ({num_samples} > {n})")
    xp = get_array_module(input.array)
    w = input.array.reshape(-1, n).astype(dtypes.float64)
    bad = ~xp.isfinite(w) | (w < 0)
    total = w.sum(axis=1)
    nonzero = (w > 0).sum(axis=1)
    # one device sync for all the checks
    bad_any, min_total, min_nonzero = (float(v) for v in xp.stack([bad.any(), total.min(), nonzero.min()]).tolist())
    if bad_any:
        raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or element < 0")
    if min_total <= 0:
        raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
    if not replacement and min_nonzero < num_samples:
        raise RuntimeError(f"multinomial: invalid multinomial distribution (with replacement=False, not enough "
                           f"non-negative category to sample): {int(min_nonzero)} categories with weight > 0 "
                           f"for {num_samples} samples")
    rows = w.shape[0]
    u = uniform_array((rows, num_samples if replacement else n), 0.0, 1.0, dtypes.float64, input.device, generator)
    if replacement:
        # inverse CDF, all rows in one searchsorted: row r's CDF is shifted to [r, r + 1)
        cdf = xp.cumsum(w, axis=1) / total[:, None]
        offset = xp.arange(rows, dtype=dtypes.float64)[:, None]
        pos = xp.searchsorted((cdf + offset).reshape(-1), (u + offset).reshape(-1), side="right")
        out = xp.minimum(pos.reshape(rows, num_samples) - n * xp.arange(rows)[:, None], n - 1)
    else:
        # exponential races: category i finishes at -log(u_i) / w_i; the first k to finish are
        # a draw of k without replacement (zero weights never finish)
        with_weight = w > 0
        t = xp.where(with_weight, -xp.log1p(-u) / xp.where(with_weight, w, 1), math.inf)
        out = xp.argsort(t, axis=1, kind="stable")[:, :num_samples]
    out = out.astype(dtypes.int64, copy=False)
    return Tensor._wrap(out.reshape(num_samples) if input.ndim == 1 else out)
