"""Anomaly detection: name the op whose forward or backward first produced NaN/inf."""
import traceback

from . import dtypes
from .backend import get_array_module

_enabled = [False]


def is_anomaly_enabled():
    return _enabled[0]


class detect_anomaly:
    """Context manager / decorator: every op checks its output, and every backward its
    gradients, for NaN/inf, and raises naming the op (with where it was created). Slow: use
    it to debug, not to train.

    Example:
        >>> with dtrain.autograd.detect_anomaly():
        ...     loss = model(x).log().sum()   # RuntimeError: Function 'Log' returned nan ...
    """

    def __init__(self, check_nan=True):
        self.mode = bool(check_nan)

    def __enter__(self):
        self.prev = _enabled[0]
        _enabled[0] = self.mode

    def __exit__(self, *exc):
        _enabled[0] = self.prev

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.mode):
                return fn(*args, **kwargs)
        return wrapper


class set_detect_anomaly(detect_anomaly):
    """``set_detect_anomaly(True)`` switches anomaly mode on at once (or for a with-block)."""

    def __init__(self, mode):
        super().__init__(mode)
        self.prev = _enabled[0]
        _enabled[0] = self.mode

    def __enter__(self):
        pass


def _bad(array):
    return array is not None and dtypes.is_differentiable(array.dtype) and not bool(get_array_module(array).isfinite(array).all())


def check_forward(fn, inputs, out):
    """Raise if ``out`` has NaN/inf that the op's inputs did not."""
    if _bad(out) and not any(_bad(getattr(t, "array", None)) for t in inputs):
        raise RuntimeError(f"Function '{fn.name}' returned nan or inf values in its forward output "
                           f"(shape {list(out.shape)}); its inputs were finite")
    fn.__dict__["_anomaly_stack"] = "".join(traceback.format_stack()[:-2])


def check_backward(fn, grads):
    for i, g in enumerate(grads):
        if _bad(g):
            where = fn.__dict__.get("_anomaly_stack")
            trace = f"\nThe forward call that created it:\n{where}" if where else ""
            raise RuntimeError(f"Function '{fn.name}Backward' returned nan or inf values in its {i}th output "
                               f"(the gradient of input {i}, shape {list(g.shape)}){trace}")
