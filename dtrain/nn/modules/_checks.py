"""Argument helpers shared by the layers' constructors."""
import operator


def check_int(layer, name, value, minimum=0):
    """``value`` as an int >= ``minimum``, or a ValueError naming the layer, argument and value."""
    try:
        v = operator.index(value)
    except TypeError:
        v = None
    if v is None or isinstance(value, bool) or v < minimum:
        raise ValueError(f"{layer}: {name} must be an integer >= {minimum}, got {value!r}")
    return v


def pair(x):
    """``x`` as a 2-tuple: ``3 -> (3, 3)``, ``(1, 2) -> (1, 2)``."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {x!r}")
        return tuple(x)
    return (x, x)
