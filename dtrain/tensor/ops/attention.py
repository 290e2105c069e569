"""Attention: scaled dot-product attention as one Function, and multi-head attention on top.

``ScaledDotProductAttention`` runs the whole softmax(q k^T * scale + mask) v in one op with a
hand-written backward: batched GEMMs through ``xp.matmul`` (the heads' strided views go to
BLAS as they are), the scores masked and exponentiated in place, and only q, k, v and the
softmax probabilities kept for backward. ``multi_head_attention_forward`` composes it with
the projections.
"""
import math
import numbers
import warnings

from .. import backend, dtypes
from ..backend import broadcast_shapes, get_array_module
from ..function import Function, unbroadcast
from ..tensor import Tensor
from .autocast import autocast_call, open_regions, thread_state
from .linalg import linear, matmul
from .activation import softmax
from .dropout import dropout, keep_mask
from .padding import pad
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
        # q^T scaled in its contiguous copy (a transposed-B GEMM is slower than the copy): one
        # pass over q instead of one over the scores, 2 * S / E times q's size
        qt = xp.multiply(q.swapaxes(-1, -2), scale, out=xp.empty(q.shape[:-2] + q.shape[:-3:-1], dtype=q.dtype))
        st = xp.matmul(k, qt)
        masked = causal or mask is not None
        if mask is not None:
            if mask.dtype == dtypes.bool_:
                xp.copyto(st, -math.inf, where=~mask.swapaxes(-1, -2))
            else:
                st += mask.swapaxes(-1, -2)
        if causal:
            xp.copyto(st, -math.inf, where=_causal_block(rows, cols, groups, backend.device_of(st), xp))
        m = st.max(axis=-2, keepdims=True) if cols else 0  # no keys (S = 0): the output is zeros, as torch
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
            keep = keep_mask(st.shape, dropout_p, st.dtype, backend.device_of(st))
            self.factor = keep.astype(st.dtype)
            self.factor *= 1 / (1 - dropout_p) if dropout_p < 1 else 0
        pt = st if self.factor is None else st * self.factor
        out = xp.matmul(pt.swapaxes(-1, -2), v)
        self.q, self.k, self.v, self.pt, self.scale = q, k, v, st, scale
        if out.dtype != v.dtype:  # bfloat16: ml_dtypes' @ gives float32 (the softmax ran in it); rounded once, as torch
            out = out.astype(v.dtype)
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
    if open_regions[0] and not thread_state.running:
        return autocast_call(scaled_dot_product_attention, "scaled_dot_product_attention", **locals())
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"scaled_dot_product_attention: {name} must be a Tensor, got {type(t).__name__}")
    if min(query.ndim, key.ndim, value.ndim) < 2:
        raise RuntimeError(f"scaled_dot_product_attention: expected query, key and value to be at least 2-D, got "
                           f"query.dim {query.ndim}, key.dim {key.ndim} and value.dim {value.ndim}")
    if not query.dtype == key.dtype == value.dtype or not dtypes.is_floating(query.dtype):
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


# ---- multi-head attention -----------------------------------------------------------------------

def canonical_mask(mask, name, dtype, op, other=None, other_name=""):
    """A bool mask (True = masked out) as a float mask of ``dtype`` (-inf where True), as torch's
    ``_canonical_mask``; a float mask is returned as it is."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or (mask.dtype != dtypes.bool_ and not dtypes.is_floating(mask.dtype)):
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise AssertionError(f"{op}: only bool and floating types of {name} are supported, got {got}")
    if other is not None and other.dtype != mask.dtype:
        warnings.warn(f"Support for mismatched {name} and {other_name} is deprecated. Use same type for both "
                      f"instead.", stacklevel=3)
    if dtypes.is_floating(mask.dtype):
        return mask
    xp = get_array_module(mask.array)
    return Tensor._wrap(xp.where(mask.array, xp.asarray(-math.inf, dtype=dtype), xp.asarray(0, dtype=dtype)))


def _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads, op):
    """Whether the input is batched; PyTorch's rules on the dims of inputs and masks."""
    if query.ndim not in (2, 3):
        raise AssertionError(f"{op}: query should be unbatched 2D or batched 3D tensor but received "
                             f"{query.ndim}-D query tensor (shape {list(query.shape)})")
    batched = query.ndim == 3
    kind = "batched (3-D)" if batched else "unbatched (2-D)"
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise AssertionError(f"{op}: for {kind} `query`, expected `key` and `value` to be {query.ndim}-D but found "
                             f"{key.ndim}-D and {value.ndim}-D tensors respectively")
    if key_padding_mask is not None and key_padding_mask.ndim != query.ndim - 1:
        raise AssertionError(f"{op}: for {kind} `query`, expected `key_padding_mask` to be `None` or "
                             f"{query.ndim - 1}-D but found {key_padding_mask.ndim}-D tensor instead")
    if attn_mask is not None:
        if attn_mask.ndim not in (2, 3):
            raise AssertionError(f"{op}: for {kind} `query`, expected `attn_mask` to be `None`, 2-D or 3-D but "
                                 f"found {attn_mask.ndim}-D tensor instead")
        expected = (num_heads, query.shape[0], key.shape[0])
        if not batched and attn_mask.ndim == 3 and tuple(attn_mask.shape) != expected:
            raise AssertionError(f"{op}: expected `attn_mask` shape to be {list(expected)} but got "
                                 f"{list(attn_mask.shape)}")
    return batched


def _split_heads(x, num_heads, batch_first):
    """(S, N, E) or (N, S, E) -> the strided view (N, H, S, E / H); nothing is copied."""
    n_axis = 0 if batch_first else 1
    x = x.reshape(*x.shape[:2], num_heads, x.shape[2] // num_heads)
    return x.permute(n_axis, 2, 1 - n_axis, 3)


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
                                 training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
                                 v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                                 is_causal=False):
    """Multi-head attention on (L, N, E) inputs, as ``torch.nn.functional.multi_head_attention_forward``
    (the math of ``nn.MultiheadAttention``; see there for the arguments).

    Returns:
        (output (L, N, E), weights (N, L, S), (N, H, L, S) or None); without the batch dim
        for unbatched (L, E) input.

    Example:
        >>> m = nn.MultiheadAttention(8, 2)
        >>> x = dtrain.randn(5, 3, 8)
        >>> out, w = F.multi_head_attention_forward(x, x, x, 8, 2, m.in_proj_weight, m.in_proj_bias, None,
        ...     None, False, 0.0, m.out_proj.weight, m.out_proj.bias)
        >>> out.shape, w.shape
        (dtrain.Size([5, 3, 8]), dtrain.Size([3, 5, 5]))
    """
    return mha_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k,
                       bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training, key_padding_mask,
                       need_weights, attn_mask, use_separate_proj_weight, q_proj_weight, k_proj_weight,
                       v_proj_weight, static_k, static_v, average_attn_weights, is_causal)


def mha_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
                add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
                need_weights=True, attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                is_causal=False, batch_first=False, op="multi_head_attention_forward"):
    """multi_head_attention_forward with ``batch_first`` inputs (N, L, E) taken as they are
    (nn.MultiheadAttention's path: no transposed copies either way)."""
    batched = _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads, op)
    if not batched:  # batch_first is ignored for unbatched input, as in torch
        batch_first = False
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    n_axis, s_axis = (0, 1) if batch_first else (1, 0)
    tgt_len, bsz, embed_dim = query.shape[s_axis], query.shape[n_axis], query.shape[2]
    key_padding_mask = canonical_mask(key_padding_mask, "key_padding_mask", query.dtype, op, attn_mask, "attn_mask")
    if is_causal and attn_mask is None:
        raise RuntimeError(f"{op}: need attn_mask if specifying the is_causal hint. You may use the Transformer "
                           f"module method `generate_square_subsequent_mask` to create this mask.")
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None  # SDPA's own causal masking replaces the (hinted) causal mask
    else:
        attn_mask = canonical_mask(attn_mask, "attn_mask", query.dtype, op)
        if key_padding_mask is not None:
            is_causal = False
    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"{op}: was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim} "
                             f"(query of shape {list(query.shape)})")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"{op}: embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if use_separate_proj_weight:
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"{op}: key's sequence and batch dims {list(key.shape[:2])} do not match value's "
                                 f"{list(value.shape[:2])}")
        weights = (q_proj_weight, k_proj_weight, v_proj_weight)
        if any(w is None for w in weights):
            raise AssertionError(f"{op}: use_separate_proj_weight is True but q_proj_weight, k_proj_weight or "
                                 f"v_proj_weight is None")
    else:
        if key.shape != value.shape:
            raise AssertionError(f"{op}: key shape {list(key.shape)} does not match value shape "
                                 f"{list(value.shape)}")
        if in_proj_weight is None:
            raise AssertionError(f"{op}: use_separate_proj_weight is False but in_proj_weight is None")
        # three products with slices of the packed weight: the activations are never sliced,
        # so backward allocates no (L, N, 3E) zeros to scatter into
        weights = in_proj_weight.split(embed_dim)
    biases = (None,) * 3 if in_proj_bias is None else in_proj_bias.split(embed_dim)
    q, k, v = (linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))

    src_len = key.shape[s_axis]
    if attn_mask is not None:
        if attn_mask.ndim == 2:
            if tuple(attn_mask.shape) != (tgt_len, src_len):
                raise RuntimeError(f"{op}: the shape of the 2D attn_mask is {list(attn_mask.shape)}, but should be "
                                   f"{[tgt_len, src_len]}")
            attn_mask = attn_mask.unsqueeze(0)
        elif tuple(attn_mask.shape) != (bsz * num_heads, tgt_len, src_len):
            raise RuntimeError(f"{op}: the shape of the 3D attn_mask is {list(attn_mask.shape)}, but should be "
                               f"{[bsz * num_heads, tgt_len, src_len]}")
    if bias_k is not None and bias_v is not None:
        if static_k is not None or static_v is not None:
            raise AssertionError(f"{op}: bias cannot be added to static key or value")
        size = (bsz, 1, embed_dim) if batch_first else (1, bsz, embed_dim)
        k = cat([k, bias_k.reshape(1, 1, embed_dim).expand(*size)], dim=s_axis)
        v = cat([v, bias_v.reshape(1, 1, embed_dim).expand(*size)], dim=s_axis)
        attn_mask = None if attn_mask is None else pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else pad(key_padding_mask, (0, 1))
    elif bias_k is not None or bias_v is not None:
        raise AssertionError(f"{op}: bias_k and bias_v must be given together, got only "
                             f"{'bias_k' if bias_k is not None else 'bias_v'}")

    q = _split_heads(q, num_heads, batch_first)
    k, v = (_split_heads(x, num_heads, batch_first) if static is None else
            _static_heads(static, name, bsz, num_heads, head_dim, op)
            for x, static, name in ((k, static_k, "static_k"), (v, static_v, "static_v")))
    if add_zero_attn:
        xp = get_array_module(k.array)
        zeros = Tensor._wrap(xp.zeros((bsz, num_heads, 1, head_dim), dtype=k.dtype))
        k, v = cat([k, zeros], dim=2), cat([v, zeros], dim=2)
        attn_mask = None if attn_mask is None else pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else pad(key_padding_mask, (0, 1))
    src_len = k.shape[2]

    if attn_mask is not None:  # (1 or N * H, L, S) -> (1 or N, H or 1, L, S)
        attn_mask = attn_mask.unsqueeze(0) if attn_mask.shape[0] == 1 else \
            attn_mask.reshape(bsz, num_heads, tgt_len, src_len)
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (bsz, src_len):
            raise AssertionError(f"{op}: expected key_padding_mask of shape {[bsz, src_len]} (batch size, source "
                                 f"length), but got {list(key_padding_mask.shape)}")
        key_padding_mask = key_padding_mask.reshape(bsz, 1, 1, src_len)
        attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask
    if not training:
        dropout_p = 0.0

    weights = None
    if need_weights:
        # written out (not the fused op) because the weights are returned; a fully masked row
        # gives nan here, as in torch
        scores = matmul(q * math.sqrt(1.0 / head_dim), k.transpose(-2, -1))  # torch scales q by this spelling
        if attn_mask is not None:
            scores = scores + attn_mask
        weights = softmax(scores, dim=-1)
        if dropout_p > 0.0:
            weights = dropout(weights, p=dropout_p)
        out = matmul(weights, v)
        if average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            weights = weights.squeeze(0)
    else:
        out = scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
    # (N, H, L, hd) -> (L, N, E) or (N, L, E): the one copy of the output
    out = out.permute(*((0, 2, 1, 3) if batch_first else (2, 0, 1, 3))).reshape(*query.shape[:2], embed_dim)
    out = linear(out, out_proj_weight, out_proj_bias)
    return (out if batched else out.squeeze(1)), weights


def _static_heads(static, name, bsz, num_heads, head_dim, op):
    if static.ndim != 3 or (static.shape[0], static.shape[2]) != (bsz * num_heads, head_dim):
        raise AssertionError(f"{op}: expecting {name} of shape (batch * num_heads, S, head_dim) = "
                             f"({bsz * num_heads}, S, {head_dim}), but got {list(static.shape)}")
    return static.reshape(bsz, num_heads, static.shape[1], head_dim)
