"""Transformer, TransformerEncoder/Decoder and their layers (as torch.nn), with PyTorch's
submodule names so that state dicts load both ways."""
import copy
import math
import warnings

from ...tensor import full, is_grad_enabled
from ...tensor.ops.attention import canonical_mask
from .. import functional as F
from .. import init
from ..containers import ModuleList
from ..module import Module
from ._checks import check_int
from .activation import GELU, ReLU
from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear
from .normalization import LayerNorm


def _generate_square_subsequent_mask(sz, device=None, dtype=None):
    return full((sz, sz), -math.inf, dtype=dtype, device=device).triu(1)


def _get_seq_len(src, batch_first):
    return src.shape[0] if src.ndim == 2 else src.shape[1 if batch_first else 0]


def _detect_is_causal_mask(mask, is_causal=None, size=None):
    """is_causal when given; else whether ``mask`` is the square subsequent mask (as torch:
    a detected causal mask lets attention mask by position instead of by adding the mask)."""
    if is_causal is not None or mask is None:
        return bool(is_causal)
    sz = size if size is not None else mask.shape[-2]
    if tuple(mask.shape) != (sz, sz):
        return False
    return bool((mask == _generate_square_subsequent_mask(sz, device=mask.device, dtype=mask.dtype)).all())


def _get_activation_fn(activation):
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise RuntimeError(f"activation should be relu/gelu, not {activation}")


def _why_no_nested_tensor(layer):
    """torch's reason not to use nested tensors with this encoder layer ('' when it would)."""
    name = "encoder_layer"
    if not isinstance(layer, TransformerEncoderLayer):
        return f"{name} was not TransformerEncoderLayer"
    checks = ((layer.norm_first, f"{name}.norm_first was True"),
              (not layer.self_attn.batch_first,
               f"{name}.self_attn.batch_first was not True(use batch_first for better inference performance)"),
              (not layer.self_attn._qkv_same_embed_dim, f"{name}.self_attn._qkv_same_embed_dim was not True"),
              (layer.self_attn.in_proj_bias is None, f"{name}.self_attn was passed bias=False"),
              (not layer.activation_relu_or_gelu, f"{name}.activation_relu_or_gelu was not True"),
              (layer.norm1.eps != layer.norm2.eps, f"{name}.norm1.eps was not equal to {name}.norm2.eps"),
              (layer.self_attn.num_heads % 2 == 1, f"{name}.self_attn.num_heads is odd"))
    return next((why for failed, why in checks if failed), "")


def _get_clones(module, n):
    return ModuleList([copy.deepcopy(module) for _ in range(n)])


class _TransformerLayer(Module):
    """What the encoder and decoder layers share: an attention module per name in
    ``attentions`` (the first, ``self_attn``, attends over the layer's input), the feed-forward
    block (``linear1``, ``dropout``, ``linear2``), and a LayerNorm and a Dropout per block
    (``norm1``..., ``dropout1``...), created in PyTorch's order (the same initial weights for
    one seed, state dict keys in the same order)."""

    def __init__(self, attentions, d_model, nhead, dim_feedforward, dropout, layer_norm_eps, batch_first, norm_first,
                 bias, device, dtype):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        check_int(type(self).__name__, "dim_feedforward", dim_feedforward, minimum=1)
        for name in attentions:
            setattr(self, name, MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                   batch_first=batch_first, **kw))
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        blocks = range(1, len(attentions) + 2)
        for i in blocks:
            setattr(self, f"norm{i}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
        for i in blocks:
            setattr(self, f"dropout{i}", Dropout(dropout))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)


class TransformerEncoderLayer(_TransformerLayer):
    """Self-attention and a feed-forward block, each with a residual connection and LayerNorm,
    as ``torch.nn.TransformerEncoderLayer``.

    Args:
        d_model: the model dimension E.
        nhead: attention heads (must divide d_model).
        dim_feedforward: the feed-forward block's hidden size (default 2048).
        dropout: dropout after attention, inside and after the feed-forward block (default 0.1).
        activation: ``"relu"``, ``"gelu"`` or a callable (default F.relu).
        layer_norm_eps: LayerNorm's eps (default 1e-5).
        batch_first: (N, S, E) instead of (S, N, E).
        norm_first: pre-norm (LayerNorm before each block) instead of post-norm.
        bias: biases in the Linear and LayerNorm layers.

    forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False).

    Example:
        >>> layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, batch_first=True)
        >>> layer(dtrain.randn(2, 10, 32)).shape
        dtrain.Size([2, 10, 32])
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__(("self_attn",), d_model, nhead, dim_feedforward, dropout, layer_norm_eps, batch_first,
                         norm_first, bias, device, dtype)
        if isinstance(activation, str):
            activation = _get_activation_fn(activation)
        self.activation_relu_or_gelu = 1 if activation is F.relu or isinstance(activation, ReLU) else \
            2 if activation is F.gelu or isinstance(activation, GELU) else 0
        self.activation = activation

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        name = type(self).__name__
        src_key_padding_mask = canonical_mask(src_key_padding_mask, "src_key_padding_mask", src.dtype, name,
                                              src_mask, "src_mask")
        src_mask = canonical_mask(src_mask, "src_mask", src.dtype, name)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(_TransformerLayer):
    """Self-attention, attention over the encoder's output (``memory``) and a feed-forward block,
    each with a residual connection and LayerNorm, as ``torch.nn.TransformerDecoderLayer``
    (arguments as TransformerEncoderLayer).

    forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False).

    Example:
        >>> layer = nn.TransformerDecoderLayer(d_model=32, nhead=4)
        >>> layer(dtrain.randn(7, 2, 32), dtrain.randn(10, 2, 32)).shape
        dtrain.Size([7, 2, 32])
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__(("self_attn", "multihead_attn"), d_model, nhead, dim_feedforward, dropout, layer_norm_eps,
                         batch_first, norm_first, bias, device, dtype)
        self.activation = _get_activation_fn(activation) if isinstance(activation, str) else activation

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal=False):
        x = self.multihead_attn(x, mem, mem, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                is_causal=is_causal, need_weights=False)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoder(Module):
    """``num_layers`` deep copies of ``encoder_layer`` (``layers.0``, ``layers.1``, ...), then
    ``norm`` if given, as ``torch.nn.TransformerEncoder``.

    Args:
        encoder_layer: the layer to copy (a TransformerEncoderLayer).
        num_layers: how many copies.
        norm: an optional module applied to the last layer's output.
        enable_nested_tensor: dtrain has no nested tensors, but it gives what torch's
            nested-tensor path gives: where torch would take it (eval mode, no gradient, a
            right-padded src_key_padding_mask, no mask, a layer it supports, see the warning),
            the padded positions of the last layer's output are zeros.
        mask_check: accepted; a padding mask that is not right-padded always takes the plain path.

    forward(src, mask=None, src_key_padding_mask=None, is_causal=None): ``is_causal=None``
    detects a square subsequent ``mask``.

    Example:
        >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4), num_layers=2)
        >>> enc(dtrain.randn(10, 2, 32)).shape
        dtrain.Size([10, 2, 32])
    """

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        super().__init__()
        check_int(type(self).__name__, "num_layers", num_layers)
        self.layers = _get_clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        why_not = _why_no_nested_tensor(encoder_layer)
        if enable_nested_tensor and why_not:
            warnings.warn(f"enable_nested_tensor is True, but self.use_nested_tensor is False because {why_not}",
                          stacklevel=2)
        self.use_nested_tensor = enable_nested_tensor and not why_not
        self.mask_check = mask_check

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        name = type(self).__name__
        src_key_padding_mask = canonical_mask(src_key_padding_mask, "src_key_padding_mask", src.dtype, name, mask,
                                              "mask")
        mask = canonical_mask(mask, "mask", src.dtype, name)
        batch_first = self.layers[0].self_attn.batch_first if len(self.layers) else False
        is_causal = _detect_is_causal_mask(mask, is_causal, _get_seq_len(src, batch_first))
        padded = self._nested_padding(src, mask, src_key_padding_mask)
        output = src
        for mod in self.layers:
            output = mod(output, src_mask=mask, is_causal=is_causal, src_key_padding_mask=src_key_padding_mask)
        if padded is not None:  # torch's nested tensor is padded back with zeros
            output = output.masked_fill(padded.unsqueeze(-1), 0.0)
        if self.norm is not None:
            output = self.norm(output)
        return output


    def _nested_padding(self, src, mask, key_padding_mask):
        """The padded positions (N, S) where torch would run its nested-tensor path, else None."""
        if not self.use_nested_tensor or not len(self.layers) or self.layers[0].training or src.ndim != 3 \
                or key_padding_mask is None or mask is not None:
            return None
        first = self.layers[0]
        if is_grad_enabled() and (src.requires_grad or any(p.requires_grad for p in first.parameters())):
            return None
        padded = key_padding_mask != 0
        if (padded[:, :-1] & ~padded[:, 1:]).any():  # a pad before a token: not right-padded
            return None
        return padded


class TransformerDecoder(Module):
    """``num_layers`` deep copies of ``decoder_layer``, then ``norm`` if given, as
    ``torch.nn.TransformerDecoder``.

    forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False).

    Example:
        >>> dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(32, 4), num_layers=2)
        >>> dec(dtrain.randn(7, 2, 32), dtrain.randn(10, 2, 32)).shape
        dtrain.Size([7, 2, 32])
    """

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        check_int(type(self).__name__, "num_layers", num_layers)
        self.layers = _get_clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        batch_first = self.layers[0].self_attn.batch_first if len(self.layers) else False
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal, _get_seq_len(tgt, batch_first))
        output = tgt
        for mod in self.layers:
            output = mod(output, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                         tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                         tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        if self.norm is not None:
            output = self.norm(output)
        return output


class Transformer(Module):
    """The encoder-decoder model of "Attention Is All You Need", as ``torch.nn.Transformer``:
    ``encoder`` (TransformerEncoder with a final LayerNorm) and ``decoder`` (likewise); every
    parameter with more than one dim is re-initialized with xavier_uniform_.

    Args:
        d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
            norm_first, bias: as TransformerEncoderLayer (defaults 512, 8, 2048, 0.1, relu).
        num_encoder_layers, num_decoder_layers: depth of each stack (default 6).
        custom_encoder, custom_decoder: modules to use instead.

    forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None,
    tgt_is_causal=None, memory_is_causal=False).

    Example:
        >>> model = nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2)
        >>> tgt_mask = nn.Transformer.generate_square_subsequent_mask(7)
        >>> model(dtrain.randn(10, 2, 32), dtrain.randn(7, 2, 32), tgt_mask=tgt_mask).shape
        dtrain.Size([7, 2, 32])
    """

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 dropout=0.1, activation=F.relu, custom_encoder=None, custom_decoder=None, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}

        def stack(stack_cls, layer_cls, num_layers):  # num_layers copies of one layer, then a LayerNorm
            layer = layer_cls(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
                              norm_first, bias, **kw)
            return stack_cls(layer, num_layers, LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
        self.encoder = custom_encoder if custom_encoder is not None else \
            stack(TransformerEncoder, TransformerEncoderLayer, num_encoder_layers)
        self.decoder = custom_decoder if custom_decoder is not None else \
            stack(TransformerDecoder, TransformerDecoderLayer, num_decoder_layers)
        self._reset_parameters()
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        batched = src.ndim == 3
        n_axis = 0 if self.batch_first else 1
        if batched and src.shape[n_axis] != tgt.shape[n_axis]:
            raise RuntimeError(f"Transformer: the batch number of src and tgt must be equal, got src of shape "
                               f"{list(src.shape)} and tgt of shape {list(tgt.shape)} (batch_first="
                               f"{self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise RuntimeError(f"Transformer: the feature number of src and tgt must be equal to d_model "
                               f"({self.d_model}), got src of shape {list(src.shape)} and tgt of shape "
                               f"{list(tgt.shape)}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """The (sz, sz) float mask with -inf above the diagonal and 0 elsewhere (a query sees
        itself and earlier positions).

        Example:
            >>> nn.Transformer.generate_square_subsequent_mask(3)
            tensor([[0., -inf, -inf],
                    [0., 0., -inf],
                    [0., 0., 0.]])
        """
        return _generate_square_subsequent_mask(sz, device=device, dtype=dtype)

    def _reset_parameters(self):
        for p in self.parameters():
            if p.dim() > 1:
                init.xavier_uniform_(p)
