"""Tensor methods and operators, bound to the op functions (one table, no wrappers twice)."""
from . import ops
from .ops import elementwise as ew
from .ops.index import index
from .ops import index as _index
from .tensor import Tensor


def _r(fn):
    """The reflected operator: ``2 - x`` is ``sub(2, x)``."""
    return lambda self, other: fn(other, self)


def _format(self, spec):
    """``f"{loss:.4f}"`` formats a 0-d tensor's value, as PyTorch does."""
    return format(self.item(), spec) if self.ndim == 0 else object.__format__(self, spec)


def _dims(fn):
    """Methods take dims as varargs too: ``x.permute(1, 0)`` and ``x.reshape(2, 3)``."""
    return lambda self, *dims: fn(self, *dims)


_methods = {
    "__add__": ops.add, "__radd__": _r(ops.add), "__sub__": ops.sub, "__rsub__": _r(ops.sub),
    "__mul__": ops.mul, "__rmul__": _r(ops.mul), "__truediv__": ops.div, "__rtruediv__": _r(ops.div),
    "__pow__": ops.pow, "__rpow__": _r(ops.pow), "__matmul__": ops.matmul, "__rmatmul__": _r(ops.matmul),
    "__neg__": ops.neg, "__abs__": ops.abs, "__getitem__": index,
    "__floordiv__": ops.floor_divide, "__rfloordiv__": _r(ops.floor_divide),
    "__mod__": ops.remainder, "__rmod__": _r(ops.remainder),
    "__eq__": ops.eq, "__ne__": ops.ne, "__lt__": ops.lt, "__le__": ops.le, "__gt__": ops.gt, "__ge__": ops.ge,
    "__and__": ops.bitwise_and, "__or__": ops.bitwise_or, "__xor__": ops.bitwise_xor,
    "__rand__": _r(ops.bitwise_and), "__ror__": _r(ops.bitwise_or), "__rxor__": _r(ops.bitwise_xor),
    "__invert__": ops.bitwise_not, "__pos__": lambda self: self, "__format__": _format,
    "reshape": _dims(ops.reshape), "view": _dims(ops.view), "permute": _dims(ops.permute),
    "expand": _dims(ops.expand), "repeat": _dims(ops.repeat),
}

for name in ("add sub mul div pow neg abs exp log log1p sqrt rsqrt sin cos tanh sigmoid clamp clip "
             "maximum minimum eq ne lt le gt ge logical_and logical_or logical_xor logical_not bitwise_and bitwise_or "
             "bitwise_xor bitwise_not sign floor "
             "ceil round trunc isnan isinf isfinite equal allclose isclose remainder floor_divide "
             "sum mean var std prod amax amin logsumexp argmax argmin max min all any count_nonzero cumsum "
             "flatten unflatten squeeze unsqueeze transpose t expand_as broadcast_to clone contiguous "
             "split chunk unbind flip matmul mm bmm dot outer gather index_select masked_fill nonzero "
             "tril triu diag diagonal trace erf sinh cosh lerp scatter scatter_add addmm baddbmm kron cumprod "
             "norm multinomial narrow repeat_interleave roll argsort sort topk unique "
             "take_along_dim").split():
    _methods.setdefault(name, getattr(ops, name))

for name, fn in _methods.items():
    setattr(Tensor, name, fn)

Tensor.absolute = Tensor.abs
Tensor.multiply = Tensor.mul
Tensor.divide = Tensor.div
Tensor.subtract = Tensor.sub
Tensor.true_divide = Tensor.div
Tensor.square = lambda self: ew.mul(self, self)
Tensor.masked_fill_ = _index.masked_fill_
Tensor.scatter_ = _index.scatter_
Tensor.scatter_add_ = _index.scatter_add_

from .ops import activation as _nn  # noqa: E402  (the nn ops import Tensor, bound above)

Tensor.relu = _nn.relu
Tensor.softmax = _nn.softmax
Tensor.log_softmax = _nn.log_softmax
