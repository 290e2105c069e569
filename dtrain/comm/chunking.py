"""Messages longer than a C int: MPI and NCCL take element counts as C ints in their classic
calls, so a longer message is sent in pieces of at most :data:`MAX_COUNT` elements.

The backends read ``chunking.MAX_COUNT`` when they send (not a copy of it taken at import):
tests lower it to exercise the splitting.
"""
from ..tensor.backend import get_array_module

MAX_COUNT = 2**31 - 1


def chunks(n):
    """Slices of ``[0, n)`` of at most :data:`MAX_COUNT` elements (one empty slice for n = 0)."""
    step = MAX_COUNT
    return [slice(i, min(i + step, n)) for i in range(0, n, step)] or [slice(0, 0)]


def in_rounds(fn, send, recv, k, n, send_blocks, recv_blocks):
    """Run a block collective ``fn(send, recv)`` in rounds when a block exceeds MAX_COUNT.

    The buffers hold ``n`` blocks of ``k`` elements (``send_blocks``/``recv_blocks``) or one
    block; each round sends one column slice of every block. ``send``/``recv`` may be None
    (a non-root rank of gather/scatter).
    """
    if k <= MAX_COUNT:
        return fn(send, recv)
    xp = get_array_module(send if send is not None else recv)
    dtype = (send if send is not None else recv).dtype
    for s in chunks(k):
        part = None if send is None else (
            xp.ascontiguousarray(send.reshape(n, k)[:, s]).reshape(-1) if send_blocks else send[s])
        out = None if recv is None else xp.empty((n if recv_blocks else 1) * (s.stop - s.start), dtype)
        fn(part, out)
        if recv is not None:
            if recv_blocks:
                recv.reshape(n, k)[:, s] = out.reshape(n, -1)
            else:
                recv[s] = out
