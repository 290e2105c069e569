"""``torch.distributed.algorithms.ddp_comm_hooks.default_hooks``: the built-in hooks of
:mod:`dtrain.parallel.comm_hooks` (the same objects), called as ``hook(process_group, bucket)``,
and the wrappers that run any hook on a low-precision copy of the bucket:
:func:`fp16_compress_wrapper` (float16) and :func:`bf16_compress_wrapper` (bfloat16; see its
docstring for what is emulated).

Example:
    >>> from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks as default
    >>> ddp.register_comm_hook(None, default.fp16_compress_hook)
    >>> ddp.register_comm_hook(state, default.bf16_compress_wrapper(powerSGD_hook))
"""
import numpy

from ....amp.bfloat16 import bfloat16_dtype
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
    """Wrap a comm hook so that it reduces a bfloat16 copy of each bucket (8 exponent bits,
    8 significant bits); the result is cast back into the bucket's dtype, as PyTorch's
    ``bf16_compress_wrapper``.

    On the CPU (NumPy buckets, with ml_dtypes installed) the hook gets a copy in
    ``dtrain.bfloat16`` and computes and keeps bfloat16, as in PyTorch: with PowerSGD, P, Q
    and the error feedback are bfloat16 and the random start is ``torch.randn``'s bfloat16
    draw for the same ``random_seed``. What is emulated there: MPI has no bfloat16 type, so
    the collectives reduce bfloat16 as a float32 copy rounded back once (float32's bytes on
    the wire, twice PyTorch's; gloo and NCCL round after every pairwise addition: the same
    bits at 2 ranks, within about n - 1 bfloat16 steps at n ranks); and NumPy's bfloat16
    arithmetic (ml_dtypes) rounds every operation as PyTorch's does, but its sums and norms
    add up in bfloat16 where PyTorch's kernels add up in float32 (PowerSGD, 5 steps at 2
    ranks: 1.8e-2 relative from PyTorch's; in float32 the two hooks agree to 1e-5).

    On a GPU (CuPy has no bfloat16 dtype) or without ml_dtypes the hook gets a *float32*
    copy of the bucket rounded to bfloat16 values (ties to even), and its result is rounded
    to bfloat16 again before the cast back: the values going in and coming out are
    bfloat16's, but in between the hook computes and keeps float32 (more precise than
    PyTorch; PowerSGD's error feedback takes twice the memory, and its random start is
    float32's draw: another, equally random, projection for the same ``random_seed``), and
    its collectives send float32, NCCL's included: this wrapper saves no bandwidth there by
    itself. For the plain average on a GPU use :func:`bf16_compress_hook`, which sends
    NCCL 16-bit words.

    Args:
        hook: a comm hook ``hook(state, bucket) -> Future``.

    Returns:
        the wrapped hook, with the same ``state``.

    Example:
        >>> ddp.register_comm_hook(PowerSGDState(None, start_powerSGD_iter=10),
        ...                        bf16_compress_wrapper(powerSGD_hook))  # P, Q, error feedback in bfloat16
    """
    def to_bfloat16(buf):  # a copy either way: the bucket itself is written only at the end
        xp, bfloat16 = get_array_module(buf), _host_bfloat16(buf)
        if bfloat16 is not None:
            # through float32, as torch's .to(torch.bfloat16) rounds a float64: ml_dtypes' direct
            # cast rounds once and differs from it in the last bit of ~1 value in 200,000
            return buf.astype(xp.float32, copy=False).astype(bfloat16)
        return to_bfloat16_precision(buf.astype(xp.float32))

    def write_back(buf, value):
        xp = get_array_module(buf)
        if value.dtype.name == "bfloat16":  # widening is exact
            buf[...] = value
        elif buf.dtype == xp.float32:  # round in the bucket itself: no temporary (PyTorch decompresses in place)
            buf[...] = value
            to_bfloat16_precision(buf)
        else:  # float64 (or float16) buckets: round a float32 copy (never the hook's own array), then cast
            buf[...] = to_bfloat16_precision(xp.array(value, dtype=xp.float32))
    return _compress_wrapper(hook, "bf16_compress_wrapper", to_bfloat16, write_back)


def _host_bfloat16(buf):
    """ml_dtypes' bfloat16 for a NumPy buffer; None for a CuPy one (CuPy has no bfloat16) or
    when ml_dtypes, an optional extra, is not installed: then bfloat16 is emulated in float32."""
    if not isinstance(buf, numpy.ndarray):
        return None
    try:
        return bfloat16_dtype()
    except ImportError:
        return None


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
