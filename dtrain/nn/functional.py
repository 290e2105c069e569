"""dtrain.nn.functional: stateless layers, activations and losses, as torch.nn.functional.

The ops live in dtrain/tensor/ops (nn.py, conv.py, linalg.py, index.py, elementwise.py), each
with PyTorch's signature, defaults and a docstring; this module is their public face.
"""
from ..tensor.ops.conv import adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d  # noqa: F401
from ..tensor.ops.elementwise import sigmoid, tanh  # noqa: F401
from ..tensor.ops.index import one_hot  # noqa: F401
from ..tensor.ops.linalg import linear  # noqa: F401
from ..tensor.ops.nn import (batch_norm, binary_cross_entropy_with_logits, cross_entropy, dropout,  # noqa: F401
                             embedding, gelu, l1_loss, layer_norm, leaky_relu, log_softmax, mse_loss, nll_loss,
                             pad, relu, silu, softmax, softplus)
