"""Argument helpers shared by the layers' constructors."""
import operator


def check_int(layer, name, value, minimum=0):
    """``value`` as an int >= ``minimum`` (any int if None), or a ValueError naming the layer,
    argument and value."""
    try:
        v = operator.index(value)
    except TypeError:
        v = None
    if v is None or isinstance(value, bool) or (minimum is not None and v < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{layer}: {name} must be an integer{bound}, got {value!r}")
    return v


def int_tuple(layer, name, value, n, minimum=0):
    """``value``, an int or n of them, as an n-tuple of ints >= ``minimum`` (``3 -> (3, 3)``),
    or a ValueError naming the layer, argument and value.

    The layers check their arguments with their own messages ("Conv1d: kernel_size must be an
    int or 1 ints"); the functional ops (tensor/ops/conv.py's ``_tuple``) name the op instead.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{layer}: {name} must be an int or {n} ints, got {value!r}")
        return tuple(check_int(layer, name, v, minimum) for v in value)
    return (check_int(layer, name, value, minimum),) * n
