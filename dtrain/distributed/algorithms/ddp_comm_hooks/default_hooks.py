"""``torch.distributed.algorithms.ddp_comm_hooks.default_hooks``: the built-in hooks of
:mod:`dtrain.parallel.comm_hooks` (the same objects), called as ``hook(process_group, bucket)``,
and :func:`fp16_compress_wrapper`, which runs any hook on a float16 copy of the bucket.

Example:
    >>> from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks as default
    >>> ddp.register_comm_hook(None, default.fp16_compress_hook)
"""
from ....parallel.comm_hooks import allreduce_hook, bf16_compress_hook, fp16_compress_hook  # noqa: F401
from ....tensor.backend import get_array_module
from ....tensor.creation import as_tensor

__all__ = ["allreduce_hook", "fp16_compress_hook", "bf16_compress_hook", "fp16_compress_wrapper"]


def fp16_compress_wrapper(hook):
    """Wrap a comm hook so that it reduces a float16 copy of each bucket; the result is cast
    back into the bucket's dtype. ``fp16_compress_wrapper(allreduce_hook)`` is
    ``fp16_compress_hook``; with PowerSGD, P and Q are sent (and computed) in float16, and the
    state's error feedback is kept in float16, as in PyTorch.

    Args:
        hook: a comm hook ``hook(state, bucket) -> Future``.

    Returns:
        the wrapped hook, with the same ``state``.

    Example:
        >>> state = PowerSGDState(None, matrix_approximation_rank=1, start_powerSGD_iter=10)
        >>> ddp.register_comm_hook(state, fp16_compress_wrapper(powerSGD_hook))
    """
    def fp16_compress_wrapper_hook(hook_state, bucket):
        buf = bucket.buffer()
        fut = hook(hook_state, _CastBucket(bucket, buf.astype(get_array_module(buf).float16)))

        def decompress(fut):
            buf[...] = fut.value()
            return buf
        return fut.then(decompress)
    return fp16_compress_wrapper_hook


class _CastBucket:
    """A bucket whose buffer is a cast copy of another's (PyTorch's ``GradBucket.set_buffer``);
    ``gradients()`` are views of the copy, everything else is the original bucket's."""

    def __init__(self, bucket, buffer):
        self._bucket, self._buffer = bucket, buffer

    def buffer(self):
        return self._buffer

    def gradients(self):
        views, start = [], 0
        for g in self._bucket.gradients():
            views.append(as_tensor(self._buffer[start:start + g.numel()].reshape(tuple(g.shape))))
            start += g.numel()
        return views

    def __getattr__(self, name):  # index(), is_last(), parameters(), the divisor allreduce_hook reads
        return getattr(self._bucket, name)
