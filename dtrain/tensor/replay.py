"""Contexts that a recomputation of a forward must re-enter.

Activation checkpointing (``dtrain.utils.checkpoint``) runs part of a forward again during
backward, when the contexts the forward ran in have been left. Some of them change what the
forward computes: DDP's micro-shards swap alias leaves in for the parameters and open a
per-sample random scope. Such a context registers itself here for its duration with
:func:`replayable`; the checkpoint captures the open ones with :func:`capture` and runs the
recomputation inside :func:`reenter`.
"""
import contextlib
import threading

_local = threading.local()  # .open: the registered entries of this thread, outermost first


@contextlib.contextmanager
def replayable(snapshot):
    """Register, for the block, a context a recomputation must re-enter.

    Args:
        snapshot: called at capture time; returns a context manager that re-enters the
            context as it is at that moment.

    Example:
        >>> with replayable(lambda: swapped(aliases)):   # a checkpoint inside sees the aliases again
        ...     out = module(x)
    """
    entries = _entries()
    entries.append(snapshot)
    try:
        yield
    finally:
        entries.pop()


def capture():
    """The open replayable contexts, each as a context manager that re-enters it as it is now."""
    return [snapshot() for snapshot in _entries()]


@contextlib.contextmanager
def reenter(captured):
    """Re-enter what :func:`capture` returned, outermost first, for the block."""
    with contextlib.ExitStack() as stack:
        for context in captured:
            stack.enter_context(context)
        yield


def _entries():
    entries = getattr(_local, "open", None)
    if entries is None:
        entries = _local.open = []
    return entries
