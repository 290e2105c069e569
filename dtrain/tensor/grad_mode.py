"""Whether operations record the graph: no_grad, enable_grad, set_grad_enabled.

The mode is per thread, as in PyTorch, so DataParallel's replica threads do not
interfere with one another.
"""
import functools
import threading

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "enabled", True)


def _set(mode):
    _state.enabled = bool(mode)


class _GradMode:
    """Base of the mode context managers; each also works as a decorator."""

    mode = True

    def __new__(cls, *args):
        self = super().__new__(cls)
        if len(args) == 1 and callable(args[0]):  # bare ``@no_grad``, without parentheses (as PyTorch)
            return self(args[0])
        return self

    def __enter__(self):
        self.prev = is_grad_enabled()
        _set(self.mode)

    def __exit__(self, *exc):
        _set(self.prev)

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prev = is_grad_enabled()
            _set(self.mode)
            try:
                return fn(*args, **kwargs)
            finally:
                _set(prev)
        return wrapper


class no_grad(_GradMode):
    """Context manager / decorator: operations inside record no graph.

    Example:
        >>> with no_grad():
        ...     y = x * 2        # y.requires_grad is False
    """

    mode = False


class enable_grad(_GradMode):
    """Context manager / decorator: turn recording back on inside a ``no_grad`` block."""

    mode = True


class set_grad_enabled(_GradMode):
    """``set_grad_enabled(False)`` acts like ``no_grad()``; usable as a function too.

    Called plainly (``set_grad_enabled(False)``) it switches the mode at once, as in PyTorch.
    """

    def __init__(self, mode):
        self.prev = is_grad_enabled()
        self.mode = bool(mode)
        _set(self.mode)

    def __enter__(self):
        pass

    def __exit__(self, *exc):
        _set(self.prev)

    def __call__(self, fn):
        _set(self.prev)  # as a decorator it switches the mode only while fn runs (as PyTorch)
        return super().__call__(fn)


class inference_mode(_GradMode):
    """Context manager / decorator for inference, as torch.inference_mode: no graph is
    recorded inside (dtrain has no separate inference tensors, so it acts as ``no_grad``).
    ``inference_mode(False)`` leaves the grad mode as it is.

    Example:
        >>> with inference_mode():
        ...     y = model(x)     # y.requires_grad is False
    """

    def __init__(self, mode=True):
        self.mode = False if mode else None

    def __enter__(self):
        self.prev = is_grad_enabled()
        self.prev_inference = is_inference_mode_enabled()
        if self.mode is not None:
            _set(self.mode)
            _state.inference = True

    def __exit__(self, *exc):
        _set(self.prev)
        _state.inference = self.prev_inference

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.clone():
                return fn(*args, **kwargs)
        return wrapper

    def clone(self):
        return inference_mode(self.mode is not None)


def is_inference_mode_enabled():
    """True inside an ``inference_mode()`` block."""
    return getattr(_state, "inference", False)
