"""``torch.distributed.algorithms.ddp_comm_hooks.default_hooks``: the built-in hooks of
:mod:`dtrain.parallel.comm_hooks` (the same objects), called as ``hook(process_group, bucket)``,
and the wrappers that run any hook on a low-precision copy of the bucket:
:func:`fp16_compress_wrapper` (float16) and :func:`bf16_compress_wrapper` (bfloat16's
precision, see its docstring for what is emulated).

Example:
    >>> from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks as default
    >>> ddp.register_comm_hook(None, default.fp16_compress_hook)
    >>> ddp.register_comm_hook(state, default.bf16_compress_wrapper(powerSGD_hook))
"""
from ....parallel.comm_hooks import allreduce_hook, bf16_compress_hook, fp16_compress_hook  # noqa: F401
from ....parallel.comm_hooks import to_bfloat16_precision
from ....tensor.backend import get_array_module
from ....tensor.creation import as_tensor

__all__ = ["allreduce_hook", "fp16_compress_hook", "bf16_compress_hook", "fp16_compress_wrapper",
           "bf16_compress_wrapper"]


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
    def to_float16(buf):
        return buf.astype(get_array_module(buf).float16)

    def write_back(buf, value):
        buf[...] = value
    return _compress_wrapper(hook, "fp16_compress_wrapper", to_float16, write_back)


def bf16_compress_wrapper(hook):
    """Wrap a comm hook so that it reduces a copy of each bucket at bfloat16's precision
    (8 exponent bits, 8 significant bits); the result, rounded to bfloat16, is cast back
    into the bucket's dtype, as PyTorch's ``bf16_compress_wrapper``.

    What is emulated. PyTorch hands the hook a ``torch.bfloat16`` bucket, so all the hook
    computes and keeps is bfloat16. dtrain's collectives take no bfloat16 array (MPI has no
    bfloat16 type, CuPy no bfloat16 dtype), so the hook gets a *float32* copy of the bucket
    rounded to the nearest bfloat16 values (ties to even), and its result is rounded to
    bfloat16 again before the cast back: the values going in and coming out are bfloat16
    values, as in PyTorch. In between the hook computes in float32, more precisely than
    PyTorch: its divisions, its sums across ranks (rounded once, at the end; gloo and NCCL
    round every partial sum in bfloat16) and, with PowerSGD, P, Q and the error feedback
    (kept as float32: twice PyTorch's memory). PowerSGD's random start is float32's
    ``torch.randn`` draw, which for a Q of 16 or more elements, not a multiple of 16, is not
    PyTorch's bfloat16 draw: another, equally random, projection for the same
    ``random_seed``. The bytes sent are the wrapped hook's float32 ones on every backend,
    NCCL included: the wrapper saves no bandwidth by itself (PowerSGD's saving is its own).

    For the plain average use :func:`bf16_compress_hook` (16-bit words under NCCL). On the
    MPI backend ``bf16_compress_wrapper(allreduce_hook)`` gives its numbers exactly when the
    world size is a power of two; at other sizes it rounds before dividing, as PyTorch,
    where the hook divides before rounding.

    Args:
        hook: a comm hook ``hook(state, bucket) -> Future``.

    Returns:
        the wrapped hook, with the same ``state``.

    Example:
        >>> state = PowerSGDState(None, matrix_approximation_rank=1, start_powerSGD_iter=10)
        >>> ddp.register_comm_hook(state, bf16_compress_wrapper(powerSGD_hook))
    """
    def to_bfloat16(buf):
        # astype copies: the hook works on the copy, the bucket is written only at the end
        return to_bfloat16_precision(buf.astype(get_array_module(buf).float32))

    def write_back(buf, value):
        xp = get_array_module(buf)
        if buf.dtype == xp.float32:  # round in the bucket itself: no temporary (PyTorch decompresses in place)
            buf[...] = value
            to_bfloat16_precision(buf)
        else:  # float64 (or float16) buckets: round a float32 copy (never the hook's own array), then cast
            buf[...] = to_bfloat16_precision(xp.array(value, dtype=xp.float32))
    return _compress_wrapper(hook, "bf16_compress_wrapper", to_bfloat16, write_back)


def _compress_wrapper(hook, name, compress, write_back):
    """``hook`` run on ``compress(bucket.buffer())`` (a copy in the compressed dtype, the
    bucket PyTorch's ``GradBucket.set_buffer`` would make); ``write_back(buffer, value)``
    puts the hook's result into the original buffer, which the returned Future gives."""
    if not callable(hook):
        raise TypeError(f"{name}: hook must be a comm hook, callable as hook(state, bucket), got {hook!r}")
    hook_name = getattr(hook, "__qualname__", repr(hook))

    def compress_wrapper_hook(hook_state, bucket):
        buf = bucket.buffer()
        fut = hook(hook_state, _CastBucket(bucket, compress(buf)))
        if not callable(getattr(fut, "then", None)):
            # PyTorch fails here on None.then; a hook that reduces in place and returns
            # nothing is the usual slip
            raise TypeError(f"{name}: the wrapped hook {hook_name} returned {type(fut).__name__}, not a Future: a "
                            f"comm hook must return the Future of its reduction (e.g. return allreduce_hook(state, "
                            f"bucket))")

        def decompress(fut):
            value = fut.value()
            if getattr(value, "size", None) != buf.size:
                raise RuntimeError(f"{name}: the wrapped hook {hook_name} gave {_describe(value)} for a bucket of "
                                   f"{buf.size} elements: its Future must give the bucket's averaged flat buffer")
            write_back(buf, value.reshape(buf.shape))
            return buf
        return fut.then(decompress)
    compress_wrapper_hook.__name__ = compress_wrapper_hook.__qualname__ = f"{name}_hook"  # PyTorch's names
    return compress_wrapper_hook


def _describe(value):
    if getattr(value, "size", None) is None:
        return f"a {type(value).__name__}"
    return f"{value.size} elements"


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
