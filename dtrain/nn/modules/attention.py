"""MultiheadAttention (as torch.nn.MultiheadAttention)."""
import numbers

from ...tensor import empty
from ...tensor.ops.attention import mha_forward
from .. import init
from ..module import Module
from ..parameter import Parameter
from ._checks import check_int
from .linear import Linear


class MultiheadAttention(Module):
    """Attention over ``num_heads`` subspaces of the embedding, as ``torch.nn.MultiheadAttention``.

    Args:
        embed_dim: E, the model dimension (query's last dim); must divide by num_heads.
        num_heads: H; each head works on E / H dims.
        dropout: dropout on the attention weights, in training mode (default 0.0).
        bias: biases in the input and output projections.
        add_bias_kv: learn one more key and value (``bias_k``, ``bias_v``) appended to the sequence.
        add_zero_attn: append a zero key and value to the sequence.
        kdim, vdim: key's and value's feature dims (default E); when either differs from E the
            projections are ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``, else one
            packed ``in_proj_weight`` (3E, E).
        batch_first: inputs and output are (N, L, E) instead of (L, N, E).
        device, dtype: where and in which dtype to create the parameters.

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) returns ``(output, weights or None)``.
    Masks: bool (True = NOT allowed to attend) or float (added to the scores);
    ``key_padding_mask`` (N, S); ``attn_mask`` (L, S) or (N * H, L, S). Weights are
    averaged over heads, (N, L, S), unless ``average_attn_weights=False`` (N, H, L, S).

    Example:
        >>> mha = nn.MultiheadAttention(16, 4, batch_first=True)
        >>> x = dtrain.randn(2, 5, 16)
        >>> out, w = mha(x, x, x)
        >>> out.shape, w.shape
        (dtrain.Size([2, 5, 16]), dtrain.Size([2, 5, 5]))
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        name = "MultiheadAttention"
        self.embed_dim = check_int(name, "embed_dim", embed_dim, minimum=1)
        self.num_heads = check_int(name, "num_heads", num_heads, minimum=1)
        self.kdim = embed_dim if kdim is None else check_int(name, "kdim", kdim, minimum=1)
        self.vdim = embed_dim if vdim is None else check_int(name, "vdim", vdim, minimum=1)
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        if embed_dim % num_heads:
            raise ValueError(f"{name}: embed_dim must be divisible by num_heads, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout probability has to be between 0 and 1, but got {dropout}")
        self.dropout, self.batch_first, self.head_dim = dropout, batch_first, embed_dim // num_heads
        kw = {"dtype": dtype, "device": device}
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, **kw))
            for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(p, None)
        else:
            self.q_proj_weight = Parameter(empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = Parameter(empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = Parameter(empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, **kw)
        if add_bias_kv:
            self.bias_k = Parameter(empty(1, 1, embed_dim, **kw))
            self.bias_v = Parameter(empty(1, 1, embed_dim, **kw))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self):
        """PyTorch's init: xavier_uniform_ projections, zero biases, xavier_normal_ bias_k/v
        (out_proj keeps Linear's weight init)."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        separate = not self._qkv_same_embed_dim
        return mha_forward(query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias,
                           self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight,
                           self.out_proj.bias, training=self.training, key_padding_mask=key_padding_mask,
                           need_weights=need_weights, attn_mask=attn_mask, use_separate_proj_weight=separate,
                           q_proj_weight=self.q_proj_weight, k_proj_weight=self.k_proj_weight,
                           v_proj_weight=self.v_proj_weight, average_attn_weights=average_attn_weights,
                           is_causal=is_causal, batch_first=self.batch_first, op="MultiheadAttention")
