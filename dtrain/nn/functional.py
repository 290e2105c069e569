"""dtrain.nn.functional: stateless layers, activations and losses, as torch.nn.functional.

The ops live in dtrain/tensor/ops (activation.py, conv.py, ...), each with PyTorch's signature,
defaults and a docstring; this module is their public face. The few core ops whose argument
names differ from torch.nn.functional's get a thin wrapper here.
"""
from ..tensor.ops import elementwise, index, linalg
from ..tensor.ops.conv import conv1d, conv2d, conv_transpose2d  # noqa: F401
from ..tensor.ops.fold import fold, unfold  # noqa: F401
from ..tensor.ops.pooling import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_max_pool1d,  # noqa: F401
                                  adaptive_max_pool2d, avg_pool1d, avg_pool2d, max_pool1d, max_pool2d)
from ..tensor.ops.upsample import interpolate, pixel_shuffle, pixel_unshuffle  # noqa: F401
from ..tensor.ops.attention import multi_head_attention_forward, scaled_dot_product_attention  # noqa: F401
from ..tensor.ops.activation import (celu, elu, gelu, hardsigmoid, hardswish, hardtanh, leaky_relu,  # noqa: F401
                                     log_softmax, mish, prelu, relu, relu6, selu, silu, softmax, softplus)
from ..tensor.ops.dropout import dropout, dropout1d, dropout2d, dropout3d  # noqa: F401
from ..tensor.ops.normalization import batch_norm, group_norm, layer_norm, rms_norm  # noqa: F401
from ..tensor.ops.loss import (binary_cross_entropy, binary_cross_entropy_with_logits,  # noqa: F401
                               cosine_embedding_loss, cross_entropy, huber_loss, kl_div, l1_loss,
                               margin_ranking_loss, mse_loss, nll_loss, smooth_l1_loss, triplet_margin_loss)
from ..tensor.ops.sparse import embedding  # noqa: F401
from ..tensor.ops.padding import pad  # noqa: F401
from ..tensor.ops.distance import cosine_similarity, normalize, pairwise_distance  # noqa: F401


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``, one fused op.

    Args:
        input: (..., in_features).
        weight: (out_features, in_features).
        bias: optional (out_features,).

    Example:
        >>> F.linear(dtrain.ones(2, 3), dtrain.ones(4, 3)).shape
        dtrain.Size([2, 4])
    """
    return linalg.linear(input, weight, bias)


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding of class indices, with a new last dim of size num_classes
    (-1: the largest index + 1).

    Example:
        >>> F.one_hot(dtrain.tensor([0, 2]), 3)
        tensor([[1, 0, 0],
                [0, 0, 1]])
    """
    return index.one_hot(tensor, num_classes)


def tanh(input):
    """Hyperbolic tangent, elementwise."""
    return elementwise.tanh(input)


def sigmoid(input):
    """1 / (1 + exp(-x)), elementwise (computed without overflow)."""
    return elementwise.sigmoid(input)
