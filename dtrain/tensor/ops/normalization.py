"""Normalization: batch_norm and group_norm through Normalize (statistics over any axes;
group_norm on a (N, G, C/G, rest) view normalized over its last two dims), layer_norm and
rms_norm through RowNormalize (over the trailing dims taken as rows; rms_norm divides by the
root mean square without centering)."""
import math
import numbers

from ..backend import get_array_module
from ..function import Function, on_input_device, unbroadcast
from ..grad_mode import no_grad
from ..tensor import Tensor
from .autocast import autocast_call, bfloat16_input, fp32_math, open_regions, thread_state
from ._checks import check_float
from .workspace import output


class Normalize(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias. ``batch_stats``: mean and var were taken
    from x over ``axes`` (so they carry gradient); else they are constants (running stats).
    weight and bias are Tensors of any shape reshaping to ``pshape``, or the numbers 1 and 0.
    batch_norm and group_norm; layer_norm and rms_norm have RowNormalize."""

    def forward(self, x, weight, bias, mean=None, var=None, axes=(), pshape=(), eps=1e-5, batch_stats=True):
        xp = get_array_module(x)
        self.invstd = 1 / xp.sqrt(var + eps)
        xhat = x - mean
        xhat *= self.invstd
        self.xhat, self.axes, self.pshape, self.batch_stats = xhat, axes, pshape, batch_stats
        self.w = weight.reshape(pshape) if hasattr(weight, "shape") else weight
        return xhat * self.w + (bias.reshape(pshape) if hasattr(bias, "shape") else bias)

    def backward(self, g):
        nx, nw, nb = self.needs_input_grad
        xhat = self.xhat
        gx = gw = gb = None
        if nx:
            gxhat = g * self.w
            if self.batch_stats:  # mean and var depend on x too
                mean, proj = self.batch_means(gxhat, gxhat * xhat)
                gxhat = gxhat - mean
                gxhat = gxhat - xhat * proj
            gx = gxhat * self.invstd
        if nw:
            gw = unbroadcast(g * xhat, self.pshape).reshape(self.inputs[1].shape)
        if nb:
            gb = unbroadcast(g, self.pshape).reshape(self.inputs[2].shape)
        return gx, gw, gb

    def batch_means(self, *arrays):
        """The means of ``arrays`` over the batch's ``axes``, kept as dims (SyncBatchNorm's
        subclass takes them over every rank's batch)."""
        return [a.mean(axis=self.axes, keepdims=True) for a in arrays]


def _moments(a, axes):
    mean = a.mean(axis=axes, keepdims=True)
    centered = a - mean
    return mean, (centered * centered).mean(axis=axes, keepdims=True)


def _param(t, shape, name, op, input):
    if t is None:
        return None
    if not isinstance(t, Tensor) or tuple(t.shape) != tuple(shape):
        got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise RuntimeError(f"{op}: expected {name} of shape {list(shape)} for input of shape {list(input.shape)}, "
                           f"got {got}")
    if t.device != input.device:
        raise RuntimeError(f"{op}: {name} is on {t.device} but the input is on {input.device}")
    return t


@on_input_device
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalization over dim 1 (channels) of an (N, C, ...) input.

    Training: normalize with the batch's mean and biased variance, and (when given) update
    ``running_mean`` / ``running_var`` in place with ``momentum`` and the unbiased variance,
    as PyTorch. Eval: normalize with the running statistics.

    Args:
        input: (N, C) or (N, C, d1, ...).
        running_mean, running_var: Tensors of shape (C,), or None (training only).
        weight, bias: optional affine parameters of shape (C,).
        training: use batch statistics.
        momentum: running = (1 - momentum) * running + momentum * batch.
        eps: added to the variance.

    Example:
        >>> x = dtrain.randn(8, 3, 4, 4)
        >>> F.batch_norm(x, dtrain.zeros(3), dtrain.ones(3), training=True).shape
        dtrain.Size([8, 3, 4, 4])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(batch_norm, "batch_norm", **locals())
    if bfloat16_input(input):  # float32 math, rounded once (as torch's CPU kernel); running stats kept in their dtype
        stats = (running_mean, running_var)
        wide = [s.float() if isinstance(s, Tensor) else s for s in stats]
        out = fp32_math(batch_norm, input, *wide, weight, bias, training, momentum, eps)
        with no_grad():
            for s, w in zip(stats, wide):
                if training and w is not s and isinstance(s, Tensor):
                    s.copy_(w)
        return out
    op = "batch_norm"
    check_float(input, op)
    if input.ndim < 2:
        raise ValueError(f"{op}: expected input of shape (N, C, ...), got shape {list(input.shape)}")
    c = input.shape[1]
    running_mean = _param(running_mean, (c,), "running_mean", op, input)
    running_var = _param(running_var, (c,), "running_var", op, input)
    weight, bias = _param(weight, (c,), "weight", op, input), _param(bias, (c,), "bias", op, input)
    axes = (0,) + tuple(range(2, input.ndim))
    pshape = (c,) + (1,) * (input.ndim - 2)
    if training:
        n = input.numel() // c
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                             f"{list(input.shape)}")
        mean, var = _moments(input.array, axes)
        with no_grad():
            if running_mean is not None:
                running_mean.lerp_(mean.reshape(c), momentum)
            if running_var is not None:
                running_var.lerp_(var.reshape(c) * (n / (n - 1)), momentum)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError(f"{op}: running_mean and running_var must be given in evaluation mode "
                               f"(training=False)")
        mean = running_mean.array.reshape(pshape).astype(input.dtype, copy=False)
        var = running_var.array.reshape(pshape).astype(input.dtype, copy=False)
    return Normalize.apply(input, 1 if weight is None else weight, 0 if bias is None else bias, mean=mean,
                           var=var, axes=axes, pshape=pshape, eps=eps, batch_stats=training)


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
    if open_regions[0] and not thread_state.running:
        return autocast_call(group_norm, "group_norm", **locals())
    if bfloat16_input(input):  # float32 math, the result rounded once (as torch's CPU kernel)
        return fp32_math(group_norm, **locals())
    op = "group_norm"
    check_float(input, op)
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


def trailing_axes(input, normalized_shape, op):
    """(normalized_shape as a tuple, the axes it covers) for layer_norm and rms_norm: the
    input must be floating and end with that shape."""
    check_float(input, op)
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or k > input.ndim or tuple(input.shape[input.ndim - k:]) != shape:
        raise RuntimeError(f"{op}: input of shape {list(input.shape)} does not end with normalized_shape "
                           f"{list(shape)}")
    return shape, tuple(range(input.ndim - k, input.ndim))


def _product_type(xp, a, b):
    """The dtype of ``a * b``: ``b`` an array or a Python number (weight 1, bias 0)."""
    return xp.result_type(a, b) if hasattr(b, "dtype") else a.dtype


class RowNormalize(Function):
    """layer_norm and rms_norm: each row of x, an (M, K) view of the input whose K covers
    the normalized trailing dims, becomes (x - mean) / sqrt(var + eps) * weight + bias
    (``center=False``: no mean subtracted, var is the mean square). weight and bias are
    (K,) Tensors, or the numbers 1 and 0.

    Not Normalize (batch and group norm): along rows, the sums are matrix-vector products
    and the row dot products einsum, one pass each, several times faster than NumPy's
    ``mean`` over a short last axis."""

    def forward(self, x, weight, bias, eps=1e-5, center=True):
        xp = get_array_module(x)
        self.inv_k = 1 / max(x.shape[-1], 1)
        self.mean_vec = xp.full(x.shape[-1], self.inv_k, dtype=x.dtype)  # x @ mean_vec: the row means
        # xhat, out and the gradients in pooled buffers when over 1 MiB (workspace.output: no
        # fresh pages per call; the GPT's 512 KiB rows stay with malloc)
        xhat = output(xp, x.shape, x.dtype)
        if center:
            xp.subtract(x, (x @ self.mean_vec)[:, None], out=xhat)
        else:
            xp.copyto(xhat, x)
        invstd = xp.einsum("ij,ij->i", xhat, xhat)
        invstd *= self.inv_k
        invstd += eps
        xp.sqrt(invstd, out=invstd)
        xp.reciprocal(invstd, out=invstd)
        xhat *= invstd[:, None]
        self.xhat, self.invstd, self.w, self.center = xhat, invstd, weight, center
        out = xp.multiply(xhat, weight, out=output(xp, x.shape, _product_type(xp, xhat, weight)))
        if hasattr(bias, "shape"):
            out += bias
        return out

    def backward(self, g):
        xp = get_array_module(g)
        nx, nw, nb = self.needs_input_grad
        xhat = self.xhat
        gx = gw = gb = None
        if nx:
            gxhat = xp.multiply(g, self.w, out=output(xp, g.shape, xp.result_type(g, self.w))) \
                if hasattr(self.w, "shape") else g
            # d/dx = invstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)), per row
            proj = xp.einsum("ij,ij->i", gxhat, xhat)
            proj *= -self.inv_k
            gx = xp.multiply(xhat, proj[:, None], out=output(xp, xhat.shape, xp.result_type(xhat, proj)))
            gx += gxhat
            if self.center:
                gx -= (gxhat @ self.mean_vec)[:, None]
            gx *= self.invstd[:, None]
        if nw:
            gw = xp.einsum("ij,ij->j", g, xhat)
        if nb:
            gb = xp.ones(g.shape[0], dtype=g.dtype) @ g
        return gx, gw, gb


def normalize_rows(input, shape, weight, bias, eps, center):
    """RowNormalize of ``input`` over its trailing dims ``shape`` (weight and bias: Tensors
    of that shape, or None), in the input's shape."""
    k = math.prod(shape)
    rows = input if input.ndim == 2 and len(shape) == 1 else \
        input.reshape(math.prod(input.shape[:input.ndim - len(shape)]), k)
    weight = 1 if weight is None else weight if weight.ndim == 1 else weight.reshape(k)
    bias = 0 if bias is None else bias if bias.ndim == 1 else bias.reshape(k)
    out = RowNormalize.apply(rows, weight, bias, eps=eps, center=center)
    return out if rows is input else out.reshape(input.shape)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the last dims ``normalized_shape``, then scale by weight and add bias.

    Args:
        input: a Tensor whose shape ends with ``normalized_shape``.
        normalized_shape: an int or a tuple of ints.
        weight, bias: optional, of shape ``normalized_shape``.
        eps: added to the variance.

    Example:
        >>> F.layer_norm(dtrain.tensor([[1.0, 3.0]]), (2,))
        tensor([[-1.0000,  1.0000]])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(layer_norm, "layer_norm", **locals())
    if bfloat16_input(input):  # float32 math, the result rounded once (as torch's CPU kernel)
        return fp32_math(layer_norm, **locals())
    op = "layer_norm"
    shape, _ = trailing_axes(input, normalized_shape, op)
    weight, bias = _param(weight, shape, "weight", op, input), _param(bias, shape, "bias", op, input)
    return normalize_rows(input, shape, weight, bias, eps, center=True)


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
    if bfloat16_input(input):  # float32 math (eps None: float32's, torch's opmath type), rounded once
        return fp32_math(rms_norm, **locals())
    op = "rms_norm"
    shape, _ = trailing_axes(input, normalized_shape, op)
    weight = _param(weight, shape, "weight", op, input)
    if eps is None:
        eps = float(get_array_module(input.array).finfo(input.dtype).eps)
    return normalize_rows(input, shape, weight, None, eps, center=False)
