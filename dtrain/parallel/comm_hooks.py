"""DDP communication hooks: how a bucket of gradients is reduced across ranks.

A hook has PyTorch's signature ``hook(state, bucket) -> Future``: ``bucket`` is a
:class:`~dtrain.parallel.bucket_reduction.GradBucket` (``buffer()``, ``index()``, ``parameters()``,
``gradients()``, ``is_last()``), the hook starts an asynchronous reduction of
``bucket.buffer()`` and returns a :class:`Future` whose ``wait()`` gives the *averaged*
flat array (the buffer itself, or an array of its size and dtype). ``state`` is what was
given to ``register_comm_hook`` (here: the process group, or None for the default group).

Built-in hooks, as ``torch.distributed.algorithms.ddp_comm_hooks.default_hooks``:

* :func:`allreduce_hook`: average in the gradients' dtype (the default).
* :func:`fp16_compress_hook`: send float16, restore the bucket's dtype after.
* :func:`bf16_compress_hook`: round to bfloat16's precision (see its docstring).
"""
from .. import comm as dist
from ..tensor.backend import get_array_module


class Future:
    """The result of a comm hook, shaped like ``torch.futures.Future``.

    Args:
        work: the Work of the collective that produces the value (None: already done).
        value: the value ``wait()`` returns once ``work`` has finished.

    Example:
        >>> fut = Future(dist.all_reduce(buf, async_op=True), buf)
        >>> fut.then(lambda f: f.value() / 2).wait()
    """

    def __init__(self, work=None, value=None):
        self._work, self._value = work, value
        self._parent = self._callback = None
        self._done = work is None

    def then(self, callback):
        """A Future whose value is ``callback(self)``, run when it is waited for."""
        child = Future()
        child._parent, child._callback, child._done = self, callback, False
        return child

    def wait(self):
        """Block until the value is ready; return it (re-raises the collective's error)."""
        if not self._done:
            if self._parent is not None:
                self._parent.wait()
                self._value = self._callback(self._parent)
            else:
                self._work.wait()
            self._done = True
        return self._value

    def value(self):
        """The value of a finished Future."""
        if not self._done:
            raise RuntimeError("Future.value(): the future is not finished; call wait() first")
        return self._value

    def done(self):
        if self._parent is not None:
            return self._done or self._parent.done()
        return self._done or self._work.is_completed()


def _divisor(bucket):
    # the world size, or under join(divide_by_initial_world_size=False) the ranks that contributed
    return bucket._div_factor


def allreduce_hook(process_group, bucket):
    """Average the bucket over the ranks: divide by the world size, all-reduce SUM (the default).

    Dividing before the sum, as PyTorch does, keeps low-precision buckets from overflowing.

    Example:
        >>> ddp.register_comm_hook(None, allreduce_hook)
    """
    buf = bucket.buffer()
    buf /= _divisor(bucket)
    return Future(dist.all_reduce(buf, group=process_group, async_op=True), buf)


def fp16_compress_hook(process_group, bucket):
    """Send the bucket as float16 (half the bytes of float32), then cast the average back.

    The average is exact to float16's precision (~3 decimal digits); values beyond
    float16's range (65504) overflow to inf, as in PyTorch.

    Example:
        >>> ddp.register_comm_hook(None, fp16_compress_hook)
    """
    xp = get_array_module(bucket.buffer())
    buf = bucket.buffer()
    compressed = (buf / _divisor(bucket)).astype(xp.float16)
    work = dist.all_reduce(compressed, group=process_group, async_op=True)

    def decompress(fut):
        buf[...] = compressed
        return buf
    return Future(work, compressed).then(decompress)


def bf16_compress_hook(process_group, bucket):
    """Reduce the bucket at bfloat16's precision (8 exponent bits, 8 significant bits).

    The values divided by the world size are rounded to the nearest bfloat16 (round half
    to even on the upper 16 bits of their float32). Under the NCCL backend those 16 bits
    are sent, as ``NCCL_BFLOAT16`` (half of float32's bytes), and NCCL sums in bfloat16, as
    in PyTorch. NumPy and CuPy have no bfloat16 dtype and MPI no bfloat16 type, so on the
    other backends this hook *emulates* it: the rounded values are summed in float32 and the
    sum is rounded again; the numbers equal a bfloat16 reduction's up to the summation's own
    rounding, but the bytes sent are float32's (use :func:`fp16_compress_hook` to save
    bandwidth there). Float64 buckets are cast to float32 first.

    Example:
        >>> ddp.register_comm_hook(None, bf16_compress_hook)
    """
    xp = get_array_module(bucket.buffer())
    buf = bucket.buffer()
    compressed = to_bfloat16_precision((buf / _divisor(bucket)).astype(xp.float32))
    if dist.reduces_bfloat16(compressed, process_group):
        bits = (compressed.view(xp.uint32) >> 16).astype(xp.uint16)
        work = dist.all_reduce_bfloat16(bits, group=process_group, async_op=True)

        def widen(fut):
            buf[...] = (bits.astype(xp.uint32) << 16).view(xp.float32)
            return buf
        return Future(work, bits).then(widen)
    work = dist.all_reduce(compressed, group=process_group, async_op=True)

    def decompress(fut):
        buf[...] = to_bfloat16_precision(compressed)
        return buf
    return Future(work, compressed).then(decompress)


def to_bfloat16_precision(a):
    """Round a float32 array, in place, to the nearest bfloat16 value (ties to even); returns it.

    Example:
        >>> to_bfloat16_precision(numpy.array([1.00390625], numpy.float32))  # 1 + 2**-8
        array([1.], dtype=float32)
    """
    xp = get_array_module(a)
    bits = a.view(xp.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000  # inf and nan keep their bits
    # adding 0x7FFF plus the lowest kept bit rounds half to even when the low 16 bits are cut
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
    bits[...] = xp.where(finite, rounded, bits)
    return a
