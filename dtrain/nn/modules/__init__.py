"""The layers of dtrain.nn, one kind per file."""
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .conv import Conv2d
from .conv import Conv1d, ConvTranspose2d
from .fold import Fold, Unfold
from .padding import (CircularPad1d, CircularPad2d, ConstantPad1d, ConstantPad2d, ReflectionPad1d, ReflectionPad2d,
                      ReplicationPad1d, ReplicationPad2d, ZeroPad1d, ZeroPad2d)
from .pixelshuffle import PixelShuffle, PixelUnshuffle
from .pooling import AdaptiveAvgPool1d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AvgPool1d, MaxPool1d
from .upsampling import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase
from .sparse import Embedding
from .attention import MultiheadAttention
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)
from .activation import CELU, ELU, SELU, Hardsigmoid, Hardswish, Hardtanh, Mish, PReLU, ReLU6
from .distance import CosineSimilarity, PairwiseDistance
from .dropout import Dropout1d, Dropout2d, Dropout3d
from .flatten import Unflatten
from .loss import (BCELoss, CosineEmbeddingLoss, HuberLoss, KLDivLoss, MarginRankingLoss, SmoothL1Loss,
                   TripletMarginLoss)
from .normalization import GroupNorm, RMSNorm

__all__ = ["GELU", "LeakyReLU", "LogSoftmax", "ReLU", "Sigmoid", "SiLU", "Softmax", "Softplus", "Tanh", "Conv2d",
           "Dropout", "Flatten", "Identity", "Linear", "BCEWithLogitsLoss", "CrossEntropyLoss", "L1Loss", "MSELoss",
           "NLLLoss", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d",
           "Embedding"]
__all__ += ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]
__all__ += ["CELU", "ELU", "SELU", "Hardsigmoid", "Hardswish", "Hardtanh", "Mish", "PReLU", "ReLU6", "CosineSimilarity",
            "PairwiseDistance", "Dropout1d", "Dropout2d", "Dropout3d", "Unflatten", "BCELoss", "CosineEmbeddingLoss",
            "HuberLoss", "KLDivLoss", "MarginRankingLoss", "SmoothL1Loss", "TripletMarginLoss", "GroupNorm", "RMSNorm"]
__all__ += ["MultiheadAttention", "Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
            "TransformerDecoderLayer"]
__all__ += ["Conv1d", "ConvTranspose2d", "Fold", "Unfold", "CircularPad1d", "CircularPad2d", "ConstantPad1d",
            "ConstantPad2d", "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d", "ZeroPad1d",
            "ZeroPad2d", "PixelShuffle", "PixelUnshuffle", "AdaptiveAvgPool1d", "AdaptiveMaxPool1d",
            "AdaptiveMaxPool2d", "AvgPool1d", "MaxPool1d", "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d"]
