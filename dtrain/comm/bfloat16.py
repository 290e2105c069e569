"""bfloat16 (ml_dtypes' NumPy dtype) through the collectives, which MPI has no datatype for.

* Collectives that only move data carry a bfloat16 buffer as its uint16 bits (a view, no
  copy: the MPI backend's ``_mpi_view``, where it hands buffers to mpi4py), so every bit
  arrives as it was sent, NaN payloads and infinities included. The local group copies
  bfloat16 as it is; NCCL moves host arrays through the MPI group, and CuPy (so dtrain on
  a GPU) has no bfloat16 arrays: NCCL's bfloat16 is ``all_reduce_bfloat16`` of uint16 bits.
* Reductions (all_reduce, reduce, reduce_scatter, all_reduce_coalesced; every ReduceOp)
  widen the values to float32 (exact), reduce them in float32 (AVG: the float32 sum divided
  by the group size) and round the result back to bfloat16 once, to nearest even, as
  ml_dtypes' cast (and ``torch.Tensor.to(torch.bfloat16)``) does (:func:`widened`).

What that matches: PyTorch's gloo and NCCL reduce bfloat16 pairwise, each addition done in
float32 and rounded to bfloat16 (gloo's ``sum`` on c10::BFloat16, whose ``operator+`` adds
as floats; NCCL's bf16 kernels). At 2 ranks that is one float32 addition rounded once to
bfloat16: the same operations, so the same bits, as here (tests/comm/test_comm_bfloat16.py
compares them with torch's gloo: SUM, PRODUCT, MIN, MAX). At more ranks PyTorch rounds after
each of the n - 1 additions, in its ring's order; here the float32 sum is rounded once, so the
results agree up to that summation order and those intermediate roundings, and are the closer
to the exact sum (at 4 ranks most random sums have gloo's bits; where its intermediate
roundings moved a sum, they differ). MIN and MAX are exact either way; AVG is the float32 sum divided
by the group size in float32, then rounded once (gloo has no AVG).

The price is a float32 copy of a reduced buffer (twice the bytes on the wire of a bfloat16
reduction): NCCL's own bfloat16 reduction stays in :mod:`.nccl` (``all_reduce_bfloat16``).
"""
from ..tensor.backend import get_array_module


def kind_of(dtype):
    """NumPy's kind of ``dtype``, with bfloat16 a float ("f"): after
    :func:`.process_group.as_array` it is the only dtype of kind "V" (void) that reaches a
    collective (ml_dtypes' other types are refused)."""
    return "f" if dtype.kind == "V" else dtype.kind


def widened(buf, writeback=None, narrow=True):
    """The buffer a reduction of the bfloat16 buffer ``buf`` works on, and what runs after it:
    a float32 copy of ``buf``, and the function that rounds the reduced copy back into ``buf``
    once (when ``narrow``: False where this rank gets no result, e.g. reduce's non-destination
    ranks) and then runs ``writeback``. Callers check the dtype first (``dtype.kind == "V"``, inline
    on their float32 paths: a function call would cost more than the check).

    Example:
        >>> wide, done = widened(grads_bf16)   # float32 copy
        >>> group._allreduce(wide, ReduceOp.SUM); done()   # grads_bf16 holds the rounded sum
    """
    wide = buf.astype(get_array_module(buf).float32)

    def narrow_back():
        if narrow:
            buf[...] = wide  # ml_dtypes' cast: round to nearest, ties to even (NaN stays NaN)
        if writeback is not None:
            writeback()
    return wide, narrow_back


def float32_concatenation(arrays):
    """The flat float32 concatenation of bfloat16 ``arrays`` (all_reduce_coalesced's message)."""
    xp = get_array_module(arrays[0])
    flat = xp.empty(sum(a.size for a in arrays), xp.float32)
    start = 0
    for a in arrays:
        flat[start:start + a.size] = a.reshape(-1)
        start += a.size
    return flat
