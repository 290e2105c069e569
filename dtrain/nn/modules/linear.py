"""Linear (y = x W^T + b) and Identity."""
import math

from ...tensor import empty
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ._checks import check_int


class Identity(Module):
    """Returns its input unchanged; any constructor arguments are ignored (as PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x @ weight.T + bias, as ``torch.nn.Linear``.

    Args:
        in_features: size of each input sample (the input's last dim).
        out_features: size of each output sample.
        bias: learn an additive bias (default True).
        device, dtype: where and in which dtype to create the parameters.

    Shapes: input ``(*, in_features)``, output ``(*, out_features)``; ``weight`` is
    ``(out_features, in_features)``, initialized from U(-1/sqrt(in_features), 1/sqrt(in_features))
    (kaiming_uniform_ with a=sqrt(5)), as is ``bias``.

    Example:
        >>> nn.Linear(20, 30)(dtrain.randn(128, 20)).shape
        dtrain.Size([128, 30])
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = check_int("Linear", "in_features", in_features)
        self.out_features = check_int("Linear", "out_features", out_features)
        self.weight = Parameter(empty(out_features, in_features, dtype=dtype, device=device))
        self.bias = Parameter(empty(out_features, dtype=dtype, device=device)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init_weight_and_bias(self.weight, self.bias)

    def forward(self, input):
        if input.ndim > 2 and input.shape[-1] == self.in_features:
            # one GEMM over all rows: NumPy's matmul of a 3-D input runs one small GEMM per
            # leading index and repacks the weight each time (3x slower for an LM decoder)
            lead = tuple(input.shape[:-1])
            out = F.linear(input.reshape(math.prod(lead), self.in_features), self.weight, self.bias)
            return out.view(lead + (self.out_features,))
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def init_weight_and_bias(weight, bias):
    """PyTorch's default for Linear and Conv: kaiming_uniform_(a=sqrt(5)) on the weight, which
    is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)
