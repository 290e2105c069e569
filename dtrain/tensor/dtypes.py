"""dtypes (NumPy dtype objects, shared by NumPy and CuPy) and PyTorch's promotion rules."""
import builtins as _b

import numpy

float16 = half = numpy.dtype("float16")
float32 = float = numpy.dtype("float32")
float64 = double = numpy.dtype("float64")
int32 = int = numpy.dtype("int32")
int64 = long = numpy.dtype("int64")
int8 = numpy.dtype("int8")
uint8 = numpy.dtype("uint8")
int16 = short = numpy.dtype("int16")
bool_ = numpy.dtype("bool")

_default = [float32]


def get_default_dtype():
    return _default[0]


def set_default_dtype(d):
    d = numpy.dtype(d)
    if not is_floating(d):
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _default[0] = d


def as_dtype(d):
    """Normalize a dtype given as dtrain/NumPy dtype, a Python type, or a name."""
    if d is None:
        return None
    if d is _b.bool:
        return bool_
    if d is _b.float:
        return get_default_dtype()
    if d is _b.int:
        return int64
    try:
        return numpy.dtype(d)
    except TypeError:
        raise TypeError(f"not a dtype: {d!r}") from None


def is_floating(d):
    """A floating dtype, bfloat16 included (ml_dtypes' bfloat16 has NumPy's kind "V", not "f")."""
    return d.kind == "f" or d.name == "bfloat16"


def is_differentiable(d):
    """A dtype a gradient can flow through: floating (bfloat16 included) or complex."""
    return d.kind in "fc" or d.name == "bfloat16"


def promote(a, b):
    """Result dtype of a binary op on two tensors, following PyTorch: a floating
    dtype wins over any integer/bool dtype (NumPy would give float64 for int64+float32)."""
    if a == b:
        return a
    fa, fb = is_floating(a), is_floating(b)
    if fa != fb:
        return a if fa else b
    return numpy.result_type(a, b)


def promote_scalar(d, value):
    """Result dtype of ``tensor(d) op python_scalar``: the tensor's dtype unless the
    scalar is of a higher category (float over int/bool, int over bool)."""
    if isinstance(value, _b.bool):
        return d
    if isinstance(value, _b.int):
        return int64 if d == bool_ else d
    if isinstance(value, _b.float):
        return d if is_floating(d) else get_default_dtype()
    raise TypeError(f"unsupported scalar operand of type {type(value).__name__}")
