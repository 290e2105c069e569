"""The collectives of :mod:`dtrain.comm` as module-level functions, named and behaving as
``torch.distributed``'s: they run on the default group (:mod:`.lifecycle`) or the given one.

Ranks given to these functions (``src``, ``dst``) are global ranks, as in PyTorch; a
function called with a ``group`` this rank is not a member of warns and returns None. In
debug mode (``DTRAIN_DEBUG=1``) each first checks that every rank calls the same one; with
it off, MPI groups check a sample of the calls (:mod:`.call_check`).
"""
import warnings

from .call_check import check_call
from .errors import DistBackendError
from .lifecycle import _state, group_or_default
from .process_group import ReduceOp
from .watchdog import describe

def _member(group, what):
    """The group to run ``what`` on, or None (with a warning) if this rank is not in it."""
    g = group_or_default(group, what)
    if g.rank() < 0:
        warnings.warn(f"{what}: this rank is not a member of the group of ranks {g.ranks}; nothing is done",
                      stacklevel=3)
        return None
    return g


def _collective(group, what, tensor=None, async_op=False, **args):
    """_member, plus (in debug mode, or when the sampled check is due) a check that every
    rank of the group calls the same collective on the same shape and dtype (and root:
    ``args``; a callable value is called only then)."""
    g = _member(group, what)
    if g is not None and (_state.debug or g.check_due()):
        args = {k: v() if callable(v) else v for k, v in args.items()}
        check_call(g, describe(what, None if tensor is None else _array(tensor), **args), _state.debug, async_op)
    return g


def _op_name(op):
    """A ReduceOp as debug mode shows it: omitted when it is the default SUM."""
    return None if op is ReduceOp.SUM else getattr(op, "name", op)


def _array(tensor):
    """What debug mode describes: the tensor itself, or anything with a shape and a dtype."""
    return tensor if hasattr(tensor, "shape") and hasattr(tensor, "dtype") else None


def _group_rank(g, what, arg, global_rank):
    """The rank within ``g`` of the global rank ``global_rank`` given as argument ``arg``."""
    if global_rank not in g.ranks:
        raise ValueError(f"{what}: {arg}={global_rank} is not a member of the group of ranks {g.ranks} "
                         f"({arg} is a global rank)")
    return g.ranks.index(global_rank)


# ---- collectives -------------------------------------------------------------------------
def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` over all ranks, in place: every rank ends with the result.

    Args:
        tensor: a dtrain Tensor, NumPy or CuPy array; the same shape and dtype on every rank.
        op: a :class:`ReduceOp` (SUM, AVG, PRODUCT, MIN, MAX; AVG needs a floating dtype).
        group: the process group (default: the world).
        async_op: return a :class:`Work` at once instead of blocking.

    Returns:
        a Work if ``async_op`` else None.

    NaN: SUM, AVG and PRODUCT propagate a NaN of any rank to every rank (IEEE arithmetic).
    MAX and MIN leave it to the MPI library: MPICH ignores NaNs as ``numpy.fmax``/``fmin``
    do (max(NaN, 1) = 1), unlike ``torch.maximum``. To detect a NaN on any rank,
    all_reduce a flag (``isnan(x).any()``) with MAX, or the values with SUM.

    bfloat16 (host tensors) is reduced in float32 and rounded back once, to nearest even:
    PyTorch's gloo bits at 2 ranks, closer to the exact sum than its per-addition rounding at
    more (:mod:`dtrain.comm.bfloat16`).

    Example:
        >>> t = dtrain.ones(3) * (dist.get_rank() + 1)
        >>> dist.all_reduce(t)   # with 2 ranks: t == [3., 3., 3.]
    """
    # the hot path: no membership or debug check for the world group, and no sampled check unless
    # due (measured: benchmarks/RESULTS.md, "Measurements moved from docstrings")
    world = _state.world
    if group is None and world is not None and not _state.debug and not world.check_due():
        return world.all_reduce(tensor, op, async_op)
    g = _collective(group, "all_reduce", tensor, op=_op_name(op), async_op=async_op)
    return g and g.all_reduce(tensor, op, async_op)


def reduces_bfloat16(array, group=None):
    """(dtrain) Whether ``group`` (default: the world) reduces ``array``'s device memory as
    bfloat16 itself (NCCL does; CuPy has no bfloat16 dtype, so the values travel as the
    uint16 upper halves of float32s: see :func:`all_reduce_bfloat16`).

    Example:
        >>> dist.reduces_bfloat16(grads_on_gpu)  # True under backend "nccl"
    """
    g = group_or_default(group, "reduces_bfloat16")
    return g.rank() >= 0 and hasattr(g._group_for(array), "all_reduce_bfloat16")


def all_reduce_bfloat16(bits, group=None, async_op=False):
    """(dtrain) SUM over all ranks, in place, of ``bits``: a contiguous uint16 CuPy array of
    bfloat16 values (each the upper 16 bits of a float32), reduced by NCCL in bfloat16 (half
    the bytes of float32). Needs a group for which :func:`reduces_bfloat16` is True.

    Returns:
        a Work if ``async_op`` else None.

    Example:
        >>> bits = (x.view(cupy.uint32) >> 16).astype(cupy.uint16)   # x: float32, rounded to bfloat16
        >>> dist.all_reduce_bfloat16(bits)
    """
    g = _collective(group, "all_reduce_bfloat16", bits, async_op=async_op)
    if g is None:
        return None
    impl = g._group_for(bits)
    if not hasattr(impl, "all_reduce_bfloat16"):
        raise DistBackendError(f"all_reduce_bfloat16: the {g.backend!r} backend has no bfloat16 type for "
                               f"{type(bits).__name__} buffers; use the NCCL backend with CuPy arrays, or "
                               f"all_reduce float32 values")
    return impl.all_reduce_bfloat16(bits, async_op)


def all_reduce_coalesced(tensors, op=ReduceOp.SUM, group=None, async_op=False, scale=None, finite_check=None):
    """``all_reduce`` of a list of tensors of one dtype and device, in place, as one message.

    Args:
        tensors: dtrain Tensors, NumPy or CuPy arrays; the same shapes and dtype on every rank.
        op: a :class:`ReduceOp`; AVG divides every rank's values by the group size, then sums.
        group: the process group (default: the world).
        async_op: return a :class:`Work` at once instead of blocking.
        scale: (dtrain) with SUM, this rank's values are multiplied by ``scale`` first.
        finite_check: (dtrain) a ``dtrain.comm.finite_flags.FiniteCheck``: this rank's squared
            norm of each tensor, and whether any rank's were non-finite (DDP's non-finite check).

    Returns:
        a Work if ``async_op`` else None.

    Example:
        >>> dist.all_reduce_coalesced([w.grad, b.grad], op=dist.ReduceOp.AVG)
    """
    def shapes():  # the checks compare them across ranks; not built unless one runs
        if isinstance(tensors, (list, tuple)):
            return " ".join(describe("", _array(t))[1:-1] for t in tensors)
        return None
    g = _collective(group, "all_reduce_coalesced", None, op=_op_name(op), tensors=shapes, async_op=async_op)
    return g and g.all_reduce_coalesced(tensors, op, async_op, scale, finite_check)


def broadcast(tensor, src=0, group=None, async_op=False):
    """Copy ``tensor`` of rank ``src`` into ``tensor`` on every rank.

    Example:
        >>> dist.broadcast(weights, src=0)
    """
    g = _collective(group, "broadcast", tensor, src=src, async_op=async_op)
    return g and g.broadcast(tensor, _group_rank(g, "broadcast", "src", src), async_op)


def reduce(tensor, dst=0, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` over all ranks into ``tensor`` of rank ``dst`` (others keep theirs).

    Example:
        >>> dist.reduce(loss_sum, dst=0)
    """
    g = _collective(group, "reduce", tensor, dst=dst, op=_op_name(op), async_op=async_op)
    return g and g.reduce(tensor, _group_rank(g, "reduce", "dst", dst), op, async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list[i]`` with ``tensor`` of group rank i, on every rank.

    Example:
        >>> out = [dtrain.zeros(2) for _ in range(dist.get_world_size())]
        >>> dist.all_gather(out, dtrain.ones(2) * dist.get_rank())
    """
    g = _collective(group, "all_gather", tensor, async_op=async_op)
    return g and g.all_gather(tensor_list, tensor, async_op)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """Concatenate every rank's ``input_tensor`` (in rank order) into ``output_tensor``,
    which holds world size times its elements (shape ``(n * d0, ...)`` or ``(n, d0, ...)``).

    Example:
        >>> out = dtrain.zeros(2 * dist.get_world_size())
        >>> dist.all_gather_into_tensor(out, dtrain.ones(2))
    """
    g = _collective(group, "all_gather_into_tensor", input_tensor, async_op=async_op)
    return g and g.all_gather_into_tensor(output_tensor, input_tensor, async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``input_list[i]`` over all ranks into ``output`` of group rank i.

    Example:
        >>> dist.reduce_scatter(out, [dtrain.ones(2) for _ in range(dist.get_world_size())])
    """
    g = _collective(group, "reduce_scatter", output, async_op=async_op)
    return g and g.reduce_scatter(output, input_list, op, async_op)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``input`` (world size times ``output``'s elements) over all ranks; group rank
    i receives the i-th piece in ``output``.

    Example:
        >>> dist.reduce_scatter_tensor(shard, full_gradient)
    """
    g = _collective(group, "reduce_scatter_tensor", output, async_op=async_op)
    return g and g.reduce_scatter_tensor(output, input, op, async_op)


def gather(tensor, gather_list=None, dst=0, group=None, async_op=False):
    """Collect every rank's ``tensor`` into ``gather_list`` (given on ``dst`` only).

    Example:
        >>> out = [dtrain.zeros(2) for _ in range(n)] if dist.get_rank() == 0 else None
        >>> dist.gather(t, out, dst=0)
    """
    g = _collective(group, "gather", tensor, dst=dst, async_op=async_op)
    return g and g.gather(tensor, gather_list, _group_rank(g, "gather", "dst", dst), async_op)


def scatter(tensor, scatter_list=None, src=0, group=None, async_op=False):
    """Copy ``scatter_list[i]`` of rank ``src`` into ``tensor`` of group rank i.

    Example:
        >>> dist.scatter(t, [dtrain.ones(2) * i for i in range(n)] if dist.get_rank() == 0 else None)
    """
    g = _collective(group, "scatter", tensor, src=src, async_op=async_op)
    return g and g.scatter(tensor, scatter_list, _group_rank(g, "scatter", "src", src), async_op)


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False):
    """Send ``input_tensor_list[i]`` to group rank i and receive rank i's into
    ``output_tensor_list[i]`` (sizes may differ per pair).

    Example:
        >>> dist.all_to_all(outs, ins)
    """
    g = _collective(group, "all_to_all", async_op=async_op)
    return g and g.all_to_all(output_tensor_list, input_tensor_list, async_op)


def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None, group=None,
                      async_op=False):
    """all_to_all over rows (dim 0) of one input and one output tensor; equal splits by default.

    Example:
        >>> dist.all_to_all_single(out, inp)  # inp and out have n * k rows
    """
    g = _collective(group, "all_to_all_single", async_op=async_op)
    return g and g.all_to_all_single(output, input, output_split_sizes, input_split_sizes, async_op)


def barrier(group=None, async_op=False):
    """Wait until every rank of ``group`` has reached the barrier.

    Example:
        >>> dist.barrier()
    """
    g = _collective(group, "barrier", async_op=async_op)
    return g and g.barrier(async_op)


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False):
    """:func:`barrier`; the group's timeout watchdog names the ranks that did not arrive
    (``timeout`` and ``wait_all_ranks`` are accepted for PyTorch's signature).

    Example:
        >>> dist.monitored_barrier()
    """
    return barrier(group)


def send(tensor, dst, group=None, tag=0):
    """Send ``tensor`` to global rank ``dst`` (blocks until it may be reused).

    Example:
        >>> dist.send(t, dst=1)
    """
    g = _member(group, "send")
    return g and g.send(tensor, _group_rank(g, "send", "dst", dst), tag)


def recv(tensor, src=None, group=None, tag=0):
    """Receive into ``tensor`` from global rank ``src`` (None: any rank); returns the sender's global rank.

    Example:
        >>> sender = dist.recv(t)
    """
    g = _member(group, "recv")
    if g is None:
        return -1
    sender = g.recv(tensor, None if src is None else _group_rank(g, "recv", "src", src), tag)
    return g.ranks[sender]


def isend(tensor, dst, group=None, tag=0):
    """Start sending ``tensor`` to global rank ``dst``; returns a :class:`Work`.

    Example:
        >>> work = dist.isend(t, dst=1); ...; work.wait()
    """
    g = _member(group, "isend")
    return g and g.isend(tensor, _group_rank(g, "isend", "dst", dst), tag)


def irecv(tensor, src=None, group=None, tag=0):
    """Start receiving into ``tensor`` from global rank ``src``; returns a :class:`Work`.

    Example:
        >>> work = dist.irecv(t, src=0); work.wait()
    """
    g = _member(group, "irecv")
    return g and g.irecv(tensor, None if src is None else _group_rank(g, "irecv", "src", src), tag)


# ---- object collectives: pickle, so only with peers you trust ------------------------------------
# Unpickling runs arbitrary code chosen by the sender: never use these with untrusted ranks.

def broadcast_object_list(object_list, src=0, group=None):
    """Replace ``object_list``'s items on every rank with those of rank ``src`` (pickled:
    use only with trusted peers). The list must have the same length everywhere.

    Example:
        >>> cfg = [config] if dist.get_rank() == 0 else [None]
        >>> dist.broadcast_object_list(cfg, src=0)
    """
    g = _collective(group, "broadcast_object_list")
    return g and g.broadcast_object_list(object_list, _group_rank(g, "broadcast_object_list", "src", src))


def all_gather_object(object_list, obj, group=None):
    """Set ``object_list[i]`` to ``obj`` of group rank i, on every rank (pickled: trusted peers only).

    Example:
        >>> names = [None] * dist.get_world_size()
        >>> dist.all_gather_object(names, socket.gethostname())
    """
    g = _collective(group, "all_gather_object")
    return g and g.all_gather_object(object_list, obj)


def gather_object(obj, object_gather_list=None, dst=0, group=None):
    """Collect every rank's ``obj`` into ``object_gather_list`` on ``dst`` (pickled: trusted peers only).

    Example:
        >>> out = [None] * n if dist.get_rank() == 0 else None
        >>> dist.gather_object(stats, out, dst=0)
    """
    g = _collective(group, "gather_object")
    return g and g.gather_object(obj, object_gather_list, _group_rank(g, "gather_object", "dst", dst))


def scatter_object_list(scatter_object_output_list, scatter_object_input_list=None, src=0, group=None):
    """Set ``scatter_object_output_list[0]`` on group rank i to ``scatter_object_input_list[i]``
    of rank ``src`` (pickled: trusted peers only).

    Example:
        >>> out = [None]
        >>> dist.scatter_object_list(out, shards if dist.get_rank() == 0 else None, src=0)
    """
    g = _collective(group, "scatter_object_list")
    return g and g.scatter_object_list(scatter_object_output_list, scatter_object_input_list,
                                       _group_rank(g, "scatter_object_list", "src", src))
