"""Attention: scaled dot-product attention as one Function, and multi-head attention on top.

``ScaledDotProductAttention`` runs the whole softmax(q k^T * scale + mask) v in one op with a
hand-written backward: batched GEMMs through ``xp.matmul`` (strided views go to BLAS as they
are, no transposed copies), the scores masked and exponentiated in place, and only q, k, v
and the softmax probabilities kept for backward.
"""
import math
import numbers

from .. import backend, dtypes
from ..backend import broadcast_shapes, get_array_module
from ..function import Function, unbroadcast
from ..random import uniform_array
from ..tensor import Tensor
from .linalg import linear, matmul
from .nn import dropout, softmax
from .shape import cat

_causal_blocks = {}


def _causal_block(rows, cols, groups, device, xp):
    """The (cols, groups * rows) bool array, True where a query (column) may NOT look at a
    key (row): the transposed complement of torch's top-left aligned tril. Cached, so that a
    causal call allocates no mask."""
    key = (rows, cols, groups, device)
    block = _causal_blocks.get(key)
    if block is None:
        if len(_causal_blocks) > 64:
            _causal_blocks.clear()
        block = xp.tril(xp.ones((cols, rows), dtype=bool), -1)
        if groups > 1:
            block = xp.tile(block, (1, groups))
        _causal_blocks[key] = block
    return block


class ScaledDotProductAttention(Function):
    """softmax(q @ k^T * scale + mask) @ v over the last two dims, batch dims broadcast.

    ``mask``, when given, is the 4th positional input: a bool array (True = take part) or a
    float array or Tensor added to the scores (its gradient is the scores' gradient).
    ``groups`` > 1 (grouped-query attention): q has ``groups`` times k's heads (dim -3);
    query heads ``h * groups ... h * groups + groups - 1`` share key/value head h, done by
    folding the groups into q's rows, so k and v are never repeated.
    Fully masked rows give zeros (probabilities 0), as torch 2.13's CPU kernels do.

    The scores are held transposed, (..., S, L): NumPy reduces over a short last axis one
    row at a time (the max over S=64 costs 3x the whole exp), but over axis -2 it runs
    vectorized across rows. Every product below is then a plain or transposed-A GEMM; the
    two that contract E or Ev (k q^T, v g^T) take a contiguous copy of their (small) B.
    """

    def forward(self, q, k, v, mask=None, scale=1.0, dropout_p=0.0, causal=False, groups=1):
        xp = get_array_module(q, k, v)
        rows, cols = q.shape[-2], k.shape[-2]
        self.qshape, self.groups, self.mask_shape = q.shape, groups, None if mask is None else mask.shape
        if groups > 1:
            q = q.reshape(q.shape[:-3] + (q.shape[-3] // groups, groups * rows, q.shape[-1]))
            if mask is not None:
                full = broadcast_shapes(mask.shape, self.qshape[:-2] + (rows, cols))
                mask = xp.broadcast_to(mask, full).reshape(full[:-3] + q.shape[-3:-1] + (cols,))
        st = xp.matmul(k, xp.ascontiguousarray(q.swapaxes(-1, -2)))  # a transposed-B GEMM is slower than the copy
        st *= scale
        masked = causal or mask is not None
        if mask is not None:
            if mask.dtype == dtypes.bool_:
                xp.copyto(st, -math.inf, where=~mask.swapaxes(-1, -2))
            else:
                st += mask.swapaxes(-1, -2)
        if causal:
            xp.copyto(st, -math.inf, where=_causal_block(rows, cols, groups, backend.device_of(st), xp))
        m = st.max(axis=-2, keepdims=True)
        if masked:  # a fully masked row has max -inf: shift it by 0 instead (exp gives 0, not nan)
            m = xp.where(m == -math.inf, 0, m)
        st -= m
        xp.exp(st, out=st)
        total = st.sum(axis=-2, keepdims=True)
        if masked:
            total = xp.where(total == 0, 1, total)
        st /= total
        self.factor = None
        if dropout_p > 0:
            keep = uniform_array(st.shape, 0.0, 1.0, st.dtype, backend.device_of(st)) >= dropout_p
            self.factor = keep.astype(st.dtype)
            self.factor *= 1 / (1 - dropout_p) if dropout_p < 1 else 0
        pt = st if self.factor is None else st * self.factor
        out = xp.matmul(pt.swapaxes(-1, -2), v)
        self.q, self.k, self.v, self.pt, self.scale = q, k, v, st, scale
        return out.reshape(self.qshape[:-1] + (v.shape[-1],)) if groups > 1 else out

    def backward(self, g):
        xp = get_array_module(g)
        q, k, v, pt, factor = self.q, self.k, self.v, self.pt, self.factor
        nq, nk, nv = self.needs_input_grad[:3]
        if self.groups > 1:
            g = g.reshape(q.shape[:-1] + (g.shape[-1],))
        gv = None
        if nv:
            gv = unbroadcast(xp.matmul(pt if factor is None else pt * factor, g), v.shape)
        gst = xp.matmul(v, xp.ascontiguousarray(g.swapaxes(-1, -2)))  # d out / d (dropped) probabilities, transposed
        if factor is not None:
            gst *= factor
        # softmax backward, in place: gs <- p * (gs - sum over keys of gs * p)
        gst -= xp.einsum("...ij,...ij->...j", gst, pt)[..., None, :]
        gst *= pt
        gq = gk = gmask = None
        if nq:
            gq = xp.matmul(gst.swapaxes(-1, -2), k)
            gq *= self.scale
            gq = unbroadcast(gq, q.shape).reshape(self.qshape)
        if nk:
            gk = xp.matmul(gst, q)
            gk *= self.scale
            gk = unbroadcast(gk, k.shape)
        if len(self.needs_input_grad) == 3:
            return gq, gk, gv
        if self.needs_input_grad[3]:
            gs = gst.swapaxes(-1, -2)
            if self.groups > 1:
                gs = gs.reshape(gs.shape[:-3] + (gs.shape[-3] * self.groups, self.qshape[-2], gs.shape[-1]))
            gmask = xp.ascontiguousarray(unbroadcast(gs, self.mask_shape))
        return gq, gk, gv, gmask


def _attention_shape_error(msg, query, key, value):
    return RuntimeError(f"scaled_dot_product_attention: {msg}; got query {list(query.shape)}, key "
                        f"{list(key.shape)}, value {list(value.shape)}")


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """softmax(query @ key^T * scale + mask) @ value, as ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        query: (..., L, E).
        key: (..., S, E).
        value: (..., S, Ev). Batch dims (...) broadcast.
        attn_mask: optional, broadcastable to (..., L, S): bool (True = take part in attention)
            or a float mask of query's dtype added to the scores.
        dropout_p: probability of dropping an attention weight (always applied when > 0,
            drawn from dtrain's generator; pass 0.0 in eval mode).
        is_causal: mask out keys after each query (top-left aligned); no attn_mask then.
        scale: the scores' factor, default 1 / sqrt(E).
        enable_gqa: grouped-query attention: query's dim -3 (heads) may be a multiple of
            key's and value's.

    Returns:
        (..., L, Ev). Rows whose keys are all masked out are zero (as torch 2.13 on the CPU).

    Example:
        >>> q = dtrain.randn(2, 4, 8, 16)
        >>> F.scaled_dot_product_attention(q, q, q, is_causal=True).shape
        dtrain.Size([2, 4, 8, 16])
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"scaled_dot_product_attention: {name} must be a Tensor, got {type(t).__name__}")
    if min(query.ndim, key.ndim, value.ndim) < 2:
        raise RuntimeError(f"scaled_dot_product_attention: expected query, key and value to be at least 2-D, got "
                           f"query.dim {query.ndim}, key.dim {key.ndim} and value.dim {value.ndim}")
    if not query.dtype == key.dtype == value.dtype or query.dtype.kind != "f":
        raise RuntimeError(f"scaled_dot_product_attention: expected query, key and value of one floating dtype, got "
                           f"query.dtype {query.dtype}, key.dtype {key.dtype} and value.dtype {value.dtype}")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout probability has to be between 0 and 1, but got "
                         f"{dropout_p}")
    if query.shape[-1] != key.shape[-1]:
        raise _attention_shape_error(f"query's and key's last dims (E) must be equal, {query.shape[-1]} != "
                                     f"{key.shape[-1]}", query, key, value)
    if key.shape[-2] != value.shape[-2]:
        raise _attention_shape_error(f"key and value must have the same length S (dim -2), {key.shape[-2]} != "
                                     f"{value.shape[-2]}", query, key, value)
    groups = 1
    qbatch = tuple(query.shape[:-2])
    if enable_gqa and query.ndim >= 3 and key.ndim >= 3 and value.ndim >= 3:
        hq, hk, hv = query.shape[-3], key.shape[-3], value.shape[-3]
        if hk != hv or hq % hk:
            raise _attention_shape_error(f"with enable_gqa, key and value need the same number of heads (dim -3) "
                                         f"and it must divide query's ({hq}), got {hk} and {hv}", query, key, value)
        groups = hq // hk
        qbatch = qbatch[:-1] + (hk,)
    try:
        batch = broadcast_shapes(qbatch, tuple(key.shape[:-2]), tuple(value.shape[:-2]))
    except ValueError:
        raise _attention_shape_error("the batch dims (all but the last two) do not broadcast", query, key,
                                     value) from None
    if groups > 1:
        batch = batch[:-1] + (query.shape[-3],)
    scores = batch + (query.shape[-2], key.shape[-2])
    inputs = [query, key, value]
    if attn_mask is not None:
        if is_causal:
            raise RuntimeError("scaled_dot_product_attention: explicit attn_mask should not be set when "
                               "is_causal=True")
        if not isinstance(attn_mask, Tensor) or (attn_mask.dtype != dtypes.bool_ and attn_mask.dtype != query.dtype):
            got = attn_mask.dtype if isinstance(attn_mask, Tensor) else type(attn_mask).__name__
            raise RuntimeError(f"scaled_dot_product_attention: expected attn_mask to be a bool Tensor or a float "
                               f"Tensor of query's dtype {query.dtype}, got {got}")
        try:
            fits = broadcast_shapes(tuple(attn_mask.shape), scores) == scores
        except ValueError:
            fits = False
        if not fits:
            raise RuntimeError(f"scaled_dot_product_attention: attn_mask of shape {list(attn_mask.shape)} does not "
                               f"broadcast to the attention scores' shape {list(scores)} (batch..., L, S)")
        inputs.append(attn_mask.array if attn_mask.dtype == dtypes.bool_ else attn_mask)
    if scale is None:
        scale = 1 / math.sqrt(query.shape[-1]) if query.shape[-1] else 1.0
    elif not isinstance(scale, numbers.Real):
        raise TypeError(f"scaled_dot_product_attention: scale must be a float or None, got {type(scale).__name__}")
    return ScaledDotProductAttention.apply(*inputs, scale=float(scale), dropout_p=float(dropout_p),
                                           causal=bool(is_causal), groups=groups)
