"""Activation layers (as torch.nn): each is a thin Module over dtrain.nn.functional."""
import warnings

from ...tensor import empty
from ...tensor.ops import elementwise
from .. import functional as F
from .. import init as nn_init
from ..module import Module
from ..parameter import Parameter
from ._checks import check_int


class ReLU(Module):
    """max(0, x) elementwise.

    Example:
        >>> nn.ReLU()(dtrain.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """x if x >= 0 else negative_slope * x (default slope 0.01)."""

    def __init__(self, negative_slope=1e-2, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}{', inplace=True' if self.inplace else ''}"


class GELU(Module):
    """x * Phi(x) (Phi the standard normal CDF); ``approximate="tanh"`` for the tanh form."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """x * sigmoid(x) (swish)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return F.silu(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Softplus(Module):
    """log(1 + exp(beta * x)) / beta, linear above ``threshold``."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, input):
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Tanh(Module):
    """tanh(x) elementwise."""

    def forward(self, input):
        return elementwise.tanh(input)


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise."""

    def forward(self, input):
        return elementwise.sigmoid(input)


class _AlongDim(Module):
    """Softmax and LogSoftmax: ``_functional`` along ``dim``."""

    _functional = None

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return self._functional(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """exp(x) / sum(exp(x)) along ``dim``.

    Example:
        >>> nn.Softmax(dim=1)(dtrain.randn(2, 3)).sum(1)
        tensor([1., 1.])
    """

    _functional = staticmethod(F.softmax)


class LogSoftmax(_AlongDim):
    """log(softmax(x)) along ``dim``, computed stably."""

    _functional = staticmethod(F.log_softmax)


class Hardtanh(Module):
    """``input`` clipped to [min_val, max_val] (default [-1, 1]).

    Example:
        >>> nn.Hardtanh(-2.0, 2.0)(dtrain.tensor([-3.0, 1.0]))
        tensor([-2.,  1.])
    """

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False, min_value=None, max_value=None):
        super().__init__()
        if min_value is not None:
            warnings.warn("keyword argument `min_value` is deprecated and renamed to `min_val`", FutureWarning,
                          stacklevel=2)
            min_val = min_value
        if max_value is not None:
            warnings.warn("keyword argument `max_value` is deprecated and renamed to `max_val`", FutureWarning,
                          stacklevel=2)
            max_val = max_value
        if not max_val > min_val:
            raise ValueError(f"{type(self).__name__}: max_val ({max_val}) must be greater than min_val ({min_val})")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}{', inplace=True' if self.inplace else ''}"


class ReLU6(Hardtanh):
    """min(max(0, x), 6).

    Example:
        >>> nn.ReLU6()(dtrain.tensor([-1.0, 7.0]))
        tensor([0., 6.])
    """

    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def forward(self, input):
        return F.relu6(input, self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ELU(Module):
    """x where x > 0, else alpha * (exp(x) - 1).

    Example:
        >>> nn.ELU()(dtrain.tensor([-1.0, 2.0]))
        tensor([-0.6321,  2.0000])
    """

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input):
        return F.elu(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}{', inplace=True' if self.inplace else ''}"


class CELU(ELU):
    """x where x > 0, else alpha * (exp(x / alpha) - 1).

    Example:
        >>> nn.CELU(2.0)(dtrain.tensor([-1.0, 2.0]))
        tensor([-0.7869,  2.0000])
    """

    def forward(self, input):
        return F.celu(input, self.alpha, self.inplace)


class _InplaceActivation(Module):
    """An activation whose only setting is the (accepted, out-of-place) ``inplace`` flag."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class SELU(_InplaceActivation):
    """scale * elu(x, alpha) with the self-normalizing constants (alpha 1.6733, scale 1.0507).

    Example:
        >>> nn.SELU()(dtrain.tensor([1.0]))
        tensor([1.0507])
    """

    def forward(self, input):
        return F.selu(input, self.inplace)


class Mish(_InplaceActivation):
    """x * tanh(softplus(x)).

    Example:
        >>> nn.Mish()(dtrain.tensor([1.0]))
        tensor([0.8651])
    """

    def forward(self, input):
        return F.mish(input, self.inplace)


class Hardswish(_InplaceActivation):
    """x * relu6(x + 3) / 6.

    Example:
        >>> nn.Hardswish()(dtrain.tensor([1.0]))
        tensor([0.6667])
    """

    def forward(self, input):
        return F.hardswish(input, self.inplace)


class Hardsigmoid(_InplaceActivation):
    """relu6(x + 3) / 6.

    Example:
        >>> nn.Hardsigmoid()(dtrain.tensor([0.0]))
        tensor([0.5000])
    """

    def forward(self, input):
        return F.hardsigmoid(input, self.inplace)


class PReLU(Module):
    """x where x > 0, else weight * x, with a learned slope: one shared (``num_parameters=1``)
    or one per channel (dim 1 of the input).

    Args:
        num_parameters: 1 or the number of input channels.
        init: the slopes' initial value (default 0.25).

    Example:
        >>> nn.PReLU()(dtrain.tensor([-2.0, 1.0]))
        tensor([-0.5,  1. ], grad_fn=<PReLUBackward>)
    """

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = check_int("PReLU", "num_parameters", num_parameters, minimum=1)
        self.init = init
        self.weight = Parameter(empty(self.num_parameters, dtype=dtype, device=device))
        self.reset_parameters()

    def reset_parameters(self):
        nn_init.constant_(self.weight, self.init)

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"
