"""``dtrain.compile`` and ``dtrain.compiler``: torch.compile's surface without a compiler.

dtrain runs every op eagerly; ``compile`` checks its arguments as PyTorch does and returns the
model (or function) itself, so scripts that compile keep working. Unlike PyTorch it returns no
wrapper: ``state_dict`` keys carry no ``_orig_mod.`` prefix.
"""
MODES = ("default", "lite", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")


def compile(model=None, *, fullgraph=False, dynamic=None, backend="inductor", mode=None, options=None,
            disable=False, **kwargs):
    """Return ``model`` unchanged (as ``torch.compile`` would return its compiled form); also a
    decorator, with or without arguments.

    Args:
        model: a Module or a function; None to get a decorator.
        mode: None or one of "default", "lite", "reduce-overhead", "max-autotune-no-cudagraphs",
            "max-autotune" (checked, then ignored).
        options: a dict (not together with ``mode``, as in PyTorch).
        fullgraph, dynamic, backend, disable, kwargs: accepted and ignored.

    Example:
        >>> model = dtrain.compile(model)
        >>> @dtrain.compile(mode="max-autotune")
        ... def step(x): return x * 2
    """
    if mode is not None and mode not in MODES:
        raise RuntimeError(f"Unrecognized mode={mode}, should be one of: {', '.join(MODES)}")
    if mode is not None and options is not None:
        raise RuntimeError("Either mode or options can be specified, but both can't be specified at the same time.")
    if model is None:
        return lambda fn: compile(fn, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode,
                                  options=options, disable=disable, **kwargs)
    if not callable(model):
        raise TypeError(f"compile: a callable function is expected, but {type(model)} is provided.")
    return model


def is_compiling():
    """False: dtrain never traces."""
    return False


def disable(fn=None, recursive=True, *, reason=None):
    """Return ``fn`` unchanged (a decorator with or without arguments): nothing is compiled."""
    return (lambda f: f) if fn is None else fn


def reset():
    """Nothing to clear: dtrain keeps no compiled code."""
