"""ProcessGroup: the collectives of one group of ranks, written once over a backend's primitives.

The public methods (named after ``torch.distributed``'s functions, with ranks local to the
group) check their arguments, turn Tensors and arrays into flat contiguous buffers, and
call the backend's primitives (``_allreduce``, ``_allgather``, ...), which a backend
(:mod:`.local`, :mod:`.mpi`, :mod:`.nccl`) implements on buffers of one dtype. The
backend's ``_run`` decides how an operation runs: inline, on the comm thread, or on a
CUDA stream, and returns its :class:`~.work.Work` handle when ``async_op=True``.

The primitives are the backend contract: each is declared here (:func:`backend_primitive`),
and a backend implements it or refuses it explicitly (:func:`refused`); a call that reaches
one a backend lacks raises ``NotImplementedError`` naming the backend and the primitive.
"""
import enum
import functools
import pickle

import numpy

from ..tensor.backend import device_of, get_array_module, is_cuda_array
from ..tensor.tensor import Tensor
from . import forensics
from .bfloat16 import float32_concatenation, kind_of, widened


NUMERIC_KINDS = "biufc"  # the dtype kinds collectives move: bool, int, uint, float, complex


class ReduceOp(enum.Enum):
    """How ``all_reduce``, ``reduce`` and ``reduce_scatter`` combine the ranks' values.

    AVG is the SUM divided by the group size; as in PyTorch it is only defined for
    floating-point (and complex) tensors.
    """
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"

    def __repr__(self):
        return f"ReduceOp.{self.name}"


def reduce_view(name, buf, op):
    """The buffer and the op a backend reduces for a user's ReduceOp, as PyTorch defines them.

    Returns ``(buffer, op)`` with op one of SUM, PRODUCT, MIN, MAX (AVG becomes SUM; the
    caller divides). Bool tensors are reduced as bytes: SUM is logical or (MAX) and PRODUCT
    logical and (MIN), as PyTorch does.
    """
    if not isinstance(op, ReduceOp):
        raise TypeError(f"{name}: op must be a ReduceOp ({', '.join(f'ReduceOp.{o.name}' for o in ReduceOp)}), "
                        f"got {op!r}")
    kind = buf.dtype.kind
    if kind == "V":  # bfloat16 (all_reduce_coalesced checks op before it widens): a float
        kind = "f"
    if op is ReduceOp.AVG and kind not in "fc":
        raise TypeError(f"{name}: ReduceOp.AVG is only defined for floating-point tensors (as in PyTorch), "
                        f"got dtype {buf.dtype}: reduce with ReduceOp.SUM and divide instead")
    if kind == "c" and op in (ReduceOp.MIN, ReduceOp.MAX):
        raise TypeError(f"{name}: {op!r} is not defined for complex dtype {buf.dtype}")
    if kind == "b":
        return buf.view(numpy.uint8), {ReduceOp.SUM: ReduceOp.MAX, ReduceOp.PRODUCT: ReduceOp.MIN}.get(op, op)
    return buf, ReduceOp.SUM if op is ReduceOp.AVG else op


def as_array(x, name, arg):
    """The raw array of a Tensor, NumPy array or CuPy array of numbers; TypeError for anything
    else (an object or string array would reach MPI as a datatype it cannot map)."""
    if isinstance(x, Tensor):
        array = x.array
    elif isinstance(x, numpy.ndarray) or is_cuda_array(x):
        array = x
    else:
        raise TypeError(f"{name}: {arg} must be a dtrain Tensor, a NumPy array or a CuPy array, "
                        f"got {type(x).__name__}")
    # bfloat16 (ml_dtypes' kind "V") moves as its bits and is reduced in float32 (see .bfloat16);
    # ml_dtypes' other kind-"V" types (float8s, int4) would move as bits but not reduce: refused
    if array.dtype.kind not in NUMERIC_KINDS and array.dtype.name != "bfloat16":
        raise TypeError(f"{name}: {arg} has dtype {array.dtype}, which collectives cannot move: they take "
                        f"bool, integer, floating-point or complex tensors; send Python objects with "
                        f"broadcast_object_list / all_gather_object")
    return array


def as_output(x, name, arg):
    """The raw array a collective writes into; bumps a Tensor's version as in-place ops do."""
    array = as_array(x, name, arg)
    if isinstance(array, numpy.ndarray) and not array.flags.writeable:
        raise ValueError(f"{name}: {arg} is a read-only array; the result is written into it")
    if isinstance(x, Tensor):
        x._version += 1
    return array


def flat_in(array):
    """A 1-D C-contiguous view of ``array`` (a copy only if it is not contiguous)."""
    return get_array_module(array).ascontiguousarray(array).reshape(-1)


def flat_out(array):
    """``(buffer, writeback)``: a 1-D contiguous view of an output, or a copy plus the
    function that writes it back (None when the view is the array itself)."""
    if array.flags.c_contiguous:
        return array.reshape(-1), None
    copy = flat_in(array)
    return copy, lambda: array.__setitem__(Ellipsis, copy.reshape(array.shape))


def _list_of_arrays(xs, name, arg, n, like=None, output=False):
    """The arrays of a list argument of length ``n`` (written into when ``output``); with
    ``like``, each must match its shape and dtype."""
    if not isinstance(xs, (list, tuple)) or len(xs) != n:
        got = f"length {len(xs)}" if isinstance(xs, (list, tuple)) else type(xs).__name__
        raise ValueError(f"{name}: {arg} must be a list of {n} tensors (one per rank of the group), got {got}")
    arrays = [(as_output if output else as_array)(x, name, f"{arg}[{i}]") for i, x in enumerate(xs)]
    for i, a in enumerate(arrays):
        if like is not None and (a.shape != like.shape or a.dtype != like.dtype):
            raise ValueError(f"{name}: {arg}[{i}] has shape {tuple(a.shape)} and dtype {a.dtype}, expected "
                             f"shape {tuple(like.shape)} and dtype {like.dtype} like the tensor")
    return arrays


def _same_kind(name, arrays):
    devices = {str(device_of(a)) for a in arrays}
    if len(devices) > 1:
        raise ValueError(f"{name}: all tensors must be on one device, got {sorted(devices)}")
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        raise TypeError(f"{name}: all tensors must have one dtype, got {sorted(map(str, dtypes))}")


def _sizes_match(name, out, inp, n, out_arg, in_arg):
    _same_kind(name, [out, inp])
    if out.size != n * inp.size:
        raise ValueError(f"{name}: {out_arg} of shape {tuple(out.shape)} ({out.size} elements) must hold "
                         f"world size {n} x {in_arg} of shape {tuple(inp.shape)} ({inp.size} elements)")


def _in_sequence(*steps):
    """One function that runs the given steps (None entries are skipped) in order."""
    steps = [s for s in steps if s is not None]
    return lambda: [s() for s in steps]


def invalid_ranks(ranks, n):
    """The entries of ``ranks`` that are not ranks of a group of ``n``: integers in [0, n - 1]."""
    return [r for r in ranks if not isinstance(r, (int, numpy.integer)) or not 0 <= r < n]


def check_rank(name, arg, rank, n):
    """Raise ValueError, quoting ``rank`` and the interval, unless it is a rank of a group of ``n``.

    Example:
        >>> check_rank("broadcast", "src", 5, 4)
        ValueError: broadcast: invalid src rank 5: it should be in the interval [0, 3]
    """
    if invalid_ranks([rank], n):
        raise ValueError(f"{name}: invalid {arg} rank {rank!r}: it should be in the interval [0, {n - 1}]")


def backend_primitive(declaration):
    """Declare a backend primitive on :class:`ProcessGroup`: its signature and docstring are
    the contract; called on a backend that does not implement it, it raises NotImplementedError
    naming the backend class and the primitive."""
    name = declaration.__name__

    @functools.wraps(declaration)
    def missing(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement the backend primitive "
                                  f"{name}: {declaration.__doc__}")
    missing.backend_primitive = True
    return missing


def refused(name, reason):
    """A backend's explicit refusal of the primitive ``name``: calling it raises
    NotImplementedError naming the backend class, the primitive and ``reason``."""
    def refuse(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} refuses the backend primitive {name}: {reason}")
    refuse.__name__ = refuse.__qualname__ = name
    refuse.refused = True
    return refuse


class ProcessGroup:
    """The ranks that run collectives together, and the collectives themselves.

    Ranks given to and returned by these methods are ranks *within the group*; the
    module-level functions of :mod:`dtrain.comm` take global ranks, as torch.distributed's do.

    Args:
        backend: the backend's name ("mpi", "nccl").
        rank: this process's rank in the group.
        ranks: the global ranks of the group's members, in group-rank order.
        timeout: seconds an async operation's ``wait()`` waits by default.
    """

    def __init__(self, backend, rank, ranks, timeout=None):
        self.backend, self._rank, self.ranks, self.timeout = backend, rank, list(ranks), timeout

    def rank(self):
        return self._rank

    def size(self):
        return len(self.ranks)

    def __repr__(self):
        return f"{type(self).__name__}(backend={self.backend!r}, rank={self._rank}, ranks={self.ranks})"

    # ---- the collectives -----------------------------------------------------------
    def all_reduce(self, tensor, op=ReduceOp.SUM, async_op=False):
        array = as_output(tensor, "all_reduce", "tensor")
        buf, writeback = flat_out(array)
        if buf.dtype.kind == "V":  # bfloat16: reduced as a float32 copy, rounded back once (see .bfloat16)
            buf, writeback = widened(buf, writeback)
        rbuf, rop = reduce_view("all_reduce", buf, op)
        impl = self._group_for(array)
        before, after, rop = impl._averaging(buf, op, rop, before_ok=True)
        return impl._run("all_reduce", _in_sequence(before, lambda: impl._allreduce(rbuf, rop), after, writeback),
                         [array], async_op)

    def all_reduce_coalesced(self, tensors, op=ReduceOp.SUM, async_op=False, scale=None, finite_check=None):
        """``all_reduce`` of several tensors of one dtype, in place, as one message (their flat
        concatenation). ``scale``: with SUM, this rank's values are multiplied by it first
        (AVG is SUM with ``scale`` = 1 / group size: divide, then sum, as DDP does).
        ``finite_check``: a :class:`.finite_flags.FiniteCheck` (SUM of floats) that receives
        this rank's squared norms and whether any rank's were non-finite."""
        name = "all_reduce_coalesced"
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise ValueError(f"{name}: tensors must be a non-empty list of tensors, got {tensors!r}")
        arrays = [as_output(t, name, "tensors") for t in tensors]
        _same_kind(name, arrays)
        if arrays[0].dtype.kind == "b":
            raise TypeError(f"{name}: bool tensors are not supported; use all_reduce")
        reduce_view(name, arrays[0], op)  # checks op against the dtype
        if op is ReduceOp.AVG:
            op, scale = ReduceOp.SUM, (1.0 if scale is None else scale) / self.size()
        if scale is not None and op is not ReduceOp.SUM:
            raise ValueError(f"{name}: scale goes with ReduceOp.SUM or AVG, got {op!r}")
        if scale is not None and kind_of(arrays[0].dtype) not in "fc":
            raise TypeError(f"{name}: scale needs floating-point tensors, got dtype {arrays[0].dtype}")
        impl = self._group_for(arrays[0])
        if finite_check is not None:
            if op is not ReduceOp.SUM or kind_of(arrays[0].dtype) not in "fc":
                raise ValueError(f"{name}: finite_check goes with ReduceOp.SUM or AVG of floating-point tensors")
            arrays.append(finite_check.flag)  # the caller's finite_check.flag is not its to touch until done
        return impl._run(name, impl._coalesced(arrays, op, scale, finite_check), arrays, async_op)

    def _coalesced(self, arrays, op, scale, finite_check=None):
        """The function that all-reduces ``arrays`` as one flat message (copied here, on the
        caller's thread). With ``finite_check``, the last array is its flag: the norms of the
        others are taken first and the flag travels in the message (see :mod:`.finite_flags`)."""
        xp = get_array_module(arrays[0])
        if finite_check is not None:
            finite_check.take(arrays[:-1], scale)  # scaled with the message: 1 -> 1/N, still non-zero
        if arrays[0].dtype.kind == "V":  # bfloat16: the message in float32; _split_into rounds each piece back once
            flat = float32_concatenation(arrays)
        else:
            flat = xp.concatenate([a.reshape(-1) for a in arrays])
        if scale is not None:
            flat *= scale

        return _in_sequence(lambda: self._allreduce(flat, op), self._split_into(flat, arrays))

    def broadcast(self, tensor, src=0, async_op=False):
        self._check_rank("broadcast", "src", src)
        array = as_output(tensor, "broadcast", "tensor")
        buf, writeback = flat_out(array)
        impl = self._group_for(array)
        return impl._run("broadcast", _in_sequence(lambda: impl._broadcast(buf, src), writeback), [array], async_op)

    def reduce(self, tensor, dst=0, op=ReduceOp.SUM, async_op=False):
        self._check_rank("reduce", "dst", dst)
        array = as_output(tensor, "reduce", "tensor")
        buf, writeback = flat_out(array)
        if buf.dtype.kind == "V":  # bfloat16 (see .bfloat16): only dst gets the rounded result
            buf, writeback = widened(buf, writeback, narrow=self._rank == dst)
        rbuf, rop = reduce_view("reduce", buf, op)
        impl = self._group_for(array)
        _, average, rop = impl._averaging(buf, op, rop)
        average = average if self._rank == dst else None
        run = _in_sequence(lambda: impl._reduce(rbuf, rop, dst), average, writeback)
        return impl._run("reduce", run, [array], async_op)

    def all_gather(self, tensor_list, tensor, async_op=False):
        n, send = self.size(), as_array(tensor, "all_gather", "tensor")
        outs = _list_of_arrays(tensor_list, "all_gather", "tensor_list", n, like=send, output=True)
        _same_kind("all_gather", outs + [send])
        recv = get_array_module(send).empty(n * send.size, send.dtype)
        impl = self._group_for(send)
        return impl._run("all_gather", _in_sequence(lambda: impl._allgather(flat_in(send), recv),
                                             self._split_into(recv, outs)), outs + [send], async_op)

    def all_gather_into_tensor(self, output_tensor, input_tensor, async_op=False):
        name = "all_gather_into_tensor"
        out, send = as_output(output_tensor, name, "output_tensor"), as_array(input_tensor, name, "input_tensor")
        _sizes_match(name, out, send, self.size(), "output_tensor", "input_tensor")
        recv, writeback = flat_out(out)
        impl = self._group_for(send)
        run = _in_sequence(lambda: impl._allgather(flat_in(send), recv), writeback)
        return impl._run(name, run, [out, send], async_op)

    def reduce_scatter(self, output, input_list, op=ReduceOp.SUM, async_op=False):
        out = as_output(output, "reduce_scatter", "output")
        ins = _list_of_arrays(input_list, "reduce_scatter", "input_list", self.size(), like=out)
        _same_kind("reduce_scatter", ins + [out])
        send = get_array_module(out).concatenate([flat_in(a) for a in ins])
        return self._reduce_scatter_flat("reduce_scatter", out, send, op, async_op)

    def reduce_scatter_tensor(self, output, input, op=ReduceOp.SUM, async_op=False):
        name = "reduce_scatter_tensor"
        out, send = as_output(output, name, "output"), as_array(input, name, "input")
        _sizes_match(name, send, out, self.size(), "input", "output")
        return self._reduce_scatter_flat(name, out, flat_in(send), op, async_op)

    def gather(self, tensor, gather_list=None, dst=0, async_op=False):
        self._check_rank("gather", "dst", dst)
        send = as_array(tensor, "gather", "tensor")
        outs, recv = self._root_list("gather", "gather_list", gather_list, dst, send, output=True)
        impl = self._group_for(send)
        fill = self._split_into(recv, outs) if recv is not None else None
        run = _in_sequence(lambda: impl._gather(flat_in(send), recv, dst), fill)
        return impl._run("gather", run, outs + [send], async_op)

    def scatter(self, tensor, scatter_list=None, src=0, async_op=False):
        self._check_rank("scatter", "src", src)
        out = as_output(tensor, "scatter", "tensor")
        ins, _ = self._root_list("scatter", "scatter_list", scatter_list, src, out, output=False)
        send = get_array_module(out).concatenate([flat_in(a) for a in ins]) if ins else None
        recv, writeback = flat_out(out)
        impl = self._group_for(out)
        run = _in_sequence(lambda: impl._scatter(send, recv, src), writeback)
        return impl._run("scatter", run, ins + [out], async_op)

    def all_to_all(self, output_tensor_list, input_tensor_list, async_op=False):
        n = self.size()
        ins = _list_of_arrays(input_tensor_list, "all_to_all", "input_tensor_list", n)
        outs = _list_of_arrays(output_tensor_list, "all_to_all", "output_tensor_list", n, output=True)
        _same_kind("all_to_all", ins + outs)
        xp = get_array_module(ins[0])
        send = xp.concatenate([flat_in(a) for a in ins])
        recv = xp.empty(sum(o.size for o in outs), ins[0].dtype)
        impl = self._group_for(ins[0])
        run = _in_sequence(lambda: impl._alltoallv(send, [a.size for a in ins], recv, [o.size for o in outs]),
                    self._split_into(recv, outs))
        return impl._run("all_to_all", run, ins + outs, async_op)

    def all_to_all_single(self, output, input, output_split_sizes=None, input_split_sizes=None, async_op=False):
        name = "all_to_all_single"
        out, send = as_output(output, name, "output"), as_array(input, name, "input")
        _same_kind(name, [out, send])
        send_counts = self._split_counts(name, "input", send, input_split_sizes)
        recv_counts = self._split_counts(name, "output", out, output_split_sizes)
        recv, writeback = flat_out(out)
        impl = self._group_for(send)
        run = _in_sequence(lambda: impl._alltoallv(flat_in(send), send_counts, recv, recv_counts), writeback)
        return impl._run(name, run, [out, send], async_op)

    def barrier(self, async_op=False):
        return self._run("barrier", self._barrier, [], async_op)

    # ---- point to point --------------------------------------------------------------
    def send(self, tensor, dst, tag=0):
        self._check_peer("send", "dst", dst)
        array = as_array(tensor, "send", "tensor")
        self._group_for(array)._send(flat_in(array), dst, tag)

    def recv(self, tensor, src=None, tag=0):
        """Receive into ``tensor`` from group rank ``src`` (None: any); returns the sender's group rank."""
        if src is not None:
            self._check_peer("recv", "src", src)
        array = as_output(tensor, "recv", "tensor")
        buf, writeback = flat_out(array)
        sender = self._group_for(array)._recv(buf, src, tag)
        if writeback is not None:
            writeback()
        return sender

    def isend(self, tensor, dst, tag=0):
        self._check_peer("isend", "dst", dst)
        array = as_array(tensor, "isend", "tensor")
        return self._group_for(array)._isend(flat_in(array), dst, tag)

    def irecv(self, tensor, src=None, tag=0):
        if src is not None:
            self._check_peer("irecv", "src", src)
        array = as_output(tensor, "irecv", "tensor")
        buf, writeback = flat_out(array)
        return self._group_for(array)._irecv(buf, src, tag, writeback)

    # ---- objects (pickled: only between trusted peers) -----------------------------------
    def broadcast_object_list(self, object_list, src=0):
        self._check_rank("broadcast_object_list", "src", src)
        if not isinstance(object_list, list):
            raise TypeError(f"broadcast_object_list: object_list must be a list (its items are replaced by "
                            f"those of rank {src}, the same length on every rank), got "
                            f"{type(object_list).__name__} {object_list!r:.80}")
        host = self._group_for_host()
        is_src = self._rank == src
        payloads = [pickle.dumps(o) for o in object_list] if is_src else []
        sizes = numpy.array([len(p) for p in payloads] if is_src else [0] * len(object_list), numpy.int64)
        host.broadcast(sizes, src)
        data = (numpy.frombuffer(b"".join(payloads), numpy.uint8).copy() if is_src
                else numpy.empty(sizes.sum(), numpy.uint8))
        host.broadcast(data, src)
        if not is_src:
            ends = numpy.cumsum(sizes)
            object_list[:] = [pickle.loads(data[e - s:e].tobytes()) for s, e in zip(sizes, ends)]

    def all_gather_object(self, object_list, obj):
        n = self.size()
        if not isinstance(object_list, list) or len(object_list) != n:
            raise ValueError(f"all_gather_object: object_list must be a list of {n} entries (one per rank), "
                             f"got {object_list!r:.80}")
        object_list[:] = self._gather_objects(obj, None)

    def gather_object(self, obj, object_gather_list=None, dst=0):
        self._check_rank("gather_object", "dst", dst)
        n = self.size()
        if self._rank == dst and (not isinstance(object_gather_list, list) or len(object_gather_list) != n):
            raise ValueError(f"gather_object: object_gather_list must be a list of {n} entries on the "
                             f"destination rank {dst}, got {object_gather_list!r:.80}")
        objects = self._gather_objects(obj, dst)
        if self._rank == dst:
            object_gather_list[:] = objects

    def scatter_object_list(self, scatter_object_output_list, scatter_object_input_list=None, src=0):
        self._check_rank("scatter_object_list", "src", src)
        n, host, is_src = self.size(), self._group_for_host(), self._rank == src
        if not isinstance(scatter_object_output_list, list) or len(scatter_object_output_list) < 1:
            raise ValueError("scatter_object_list: scatter_object_output_list must be a non-empty list; "
                             "element 0 receives this rank's object")
        if is_src and (not isinstance(scatter_object_input_list, list) or len(scatter_object_input_list) != n):
            raise ValueError(f"scatter_object_list: scatter_object_input_list must be a list of {n} objects on the "
                             f"source rank {src}, got {scatter_object_input_list!r:.80}")
        payloads = [pickle.dumps(o) for o in scatter_object_input_list] if is_src else []
        width = numpy.array([max(map(len, payloads)) if is_src else 0], numpy.int64)
        host.broadcast(width, src)
        sizes = numpy.array([len(p) for p in payloads], numpy.int64) if is_src else None
        size = numpy.zeros(1, numpy.int64)
        host.scatter(size, list(sizes.reshape(n, 1)) if is_src else None, src)
        padded = [numpy.frombuffer(p.ljust(int(width[0]), b"\0"), numpy.uint8) for p in payloads] if is_src else None
        data = numpy.empty(int(width[0]), numpy.uint8)
        host.scatter(data, padded, src)
        scatter_object_output_list[0] = pickle.loads(data[:int(size[0])].tobytes())

    # ---- helpers ----------------------------------------------------------------------
    def _gather_objects(self, obj, dst):
        """Every rank's ``obj`` on ``dst`` (None: on every rank); None elsewhere."""
        n, host = self.size(), self._group_for_host()
        payload = numpy.frombuffer(pickle.dumps(obj), numpy.uint8)
        sizes = numpy.zeros(n, numpy.int64)
        host.all_gather_into_tensor(sizes, numpy.array([payload.size], numpy.int64))
        width = int(sizes.max())
        padded = numpy.zeros(width, numpy.uint8)
        padded[:payload.size] = payload
        if dst is None:
            data = numpy.empty((n, width), numpy.uint8)
            host.all_gather_into_tensor(data, padded)
        else:
            data = numpy.empty((n, width), numpy.uint8) if self._rank == dst else None
            host.gather(padded, list(data) if data is not None else None, dst)
            if data is None:
                return None
        return [pickle.loads(row[:s].tobytes()) for row, s in zip(data, sizes)]

    def _reduce_scatter_flat(self, name, out, send, op, async_op):
        recv, writeback = flat_out(out)
        if recv.dtype.kind == "V":  # bfloat16: reduced in float32, rounded back once (see .bfloat16)
            recv, writeback = widened(recv, writeback)
            send, _ = widened(send)
        rsend, rop = reduce_view(name, send, op)
        rrecv, _ = reduce_view(name, recv, op)
        impl = self._group_for(out)
        _, average, rop = impl._averaging(recv, op, rop)
        return impl._run(name, _in_sequence(lambda: impl._reduce_scatter(rsend, rrecv, rop), average, writeback),
                         [out], async_op)

    def _root_list(self, name, arg, xs, root, like, output):
        """The list argument of gather/scatter: required on the root, refused elsewhere.
        Returns ``(arrays, receive buffer or None)``."""
        if self._rank != root:
            if xs:
                raise ValueError(f"{name}: {arg} must only be given on the root rank {root} "
                                 f"(this is rank {self._rank})")
            return [], None
        if xs is None:
            raise ValueError(f"{name}: {arg} must be given on the root rank {root}")
        arrays = _list_of_arrays(xs, name, arg, self.size(), like=like, output=output)
        _same_kind(name, arrays + [like])
        recv = get_array_module(like).empty(self.size() * like.size, like.dtype) if output else None
        return arrays, recv

    def _split_counts(self, name, arg, array, split_sizes):
        """Element counts per rank for all_to_all_single's split of ``array`` along dim 0."""
        n = self.size()
        rows = array.shape[0] if array.ndim else 1
        row = array.size // rows if rows else 0
        if split_sizes is None:
            if rows % n:
                raise ValueError(f"{name}: {arg} has {rows} rows, not divisible by world size {n}; "
                                 f"give {arg}_split_sizes")
            return [rows // n * row] * n
        split_sizes = list(split_sizes)
        if len(split_sizes) != n or sum(split_sizes) != rows or min(split_sizes) < 0:
            raise ValueError(f"{name}: {arg}_split_sizes {split_sizes} must be {n} non-negative sizes "
                             f"summing to the {rows} rows of {arg}")
        return [s * row for s in split_sizes]

    def _split_into(self, flat, arrays):
        """The function that copies consecutive pieces of ``flat`` into ``arrays``."""
        def run():
            start = 0
            for a in arrays:
                a[...] = flat[start:start + a.size].reshape(a.shape)
                start += a.size
        return run

    def _averaging(self, buf, op, rop, before_ok=False):
        """How ``op`` averages ``buf``: ``(before, after, backend_op)``. AVG is the backend's
        own where it has one (NCCL's ncclAvg); else a SUM (``rop``) and a division by the
        group size in the buffer's dtype, after the sum, or before it for 16-bit floats when
        ``before_ok`` (the buffer is this rank's to change): their sum may overflow."""
        if op is not ReduceOp.AVG:
            return None, None, rop
        if self._native_avg(buf):
            return None, None, ReduceOp.AVG
        n = self.size()
        divide = lambda: buf.__itruediv__(n)  # noqa: E731
        return (divide, None, rop) if before_ok and buf.dtype.itemsize == 2 else (None, divide, rop)

    def _native_avg(self, buf):
        """Whether the backend reduces ``buf`` with ReduceOp.AVG itself."""
        return False

    def _check_rank(self, name, arg, rank):
        check_rank(name, arg, rank, self.size())

    def _check_peer(self, name, arg, peer):
        self._check_rank(name, arg, peer)
        if peer == self._rank:
            raise ValueError(f"{name}: {arg} rank {peer} is this process's own rank; "
                             f"point-to-point operations need another rank")

    def _group_for(self, array):
        """The group whose primitives handle ``array`` (a backend may hand host arrays to another)."""
        return self

    def _group_for_host(self):
        """The group that moves host (NumPy) buffers: pickled objects travel through it."""
        return self

    # ---- what a backend provides ---------------------------------------------------------
    def _run(self, name, fn, arrays, async_op):
        """Run ``fn()`` (the whole operation); return a Work when ``async_op`` else None."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _run (how its operations run)")

    def new_subgroup(self, ranks, timeout):
        """A group of ``ranks`` (global, sorted); collective over this group. Non-members get None."""
        raise NotImplementedError(f"{type(self).__name__} does not implement new_subgroup")

    def destroy(self):
        """Free the backend's resources of this group."""

    def cross_check(self, label, site, every_call, async_op=False):
        """Every rank's ``(call, call site)`` (group-rank order) if some rank of the group is
        making another call than ``label`` now (called from ``site``, a forensics.call_site),
        else None (:mod:`.call_check`). Here the descriptions travel every time (debug mode's
        way), as calls of their own; MPI groups compare hashes first, number the check as the
        call it checks, and run an async call's check in its task (a mismatch fails the Work)."""
        if self.size() == 1:
            return None
        calls = self._gather_objects((label, forensics.site_text(site)), None)
        return None if len({call for call, _ in calls}) == 1 else calls

    def check_due(self):
        """Whether the sampled cross-rank check of the next call is due (:mod:`.call_check`);
        never for a backend that does not number its calls."""
        return False

    # ---- the primitives: flat contiguous buffers of one dtype, ranks within the group ---------
    # Reductions get SUM, PRODUCT, MIN or MAX (AVG only where _native_avg says so); the
    # caller has checked the arguments, so every rank reaches them with the same sizes.
    @backend_primitive
    def _allreduce(self, buf, op):
        """Reduce ``buf`` over the group with ``op``, in place, on every rank."""

    @backend_primitive
    def _broadcast(self, buf, root):
        """Copy ``buf`` of rank ``root`` into ``buf`` on every rank."""

    @backend_primitive
    def _reduce(self, buf, op, root):
        """Reduce ``buf`` over the group with ``op`` into ``buf`` of rank ``root``."""

    @backend_primitive
    def _allgather(self, send, recv):
        """Fill ``recv`` with every rank's ``send``, in rank order, on every rank."""

    @backend_primitive
    def _reduce_scatter(self, send, recv, op):
        """Reduce ``send`` (one block per rank) with ``op``; rank i receives block i in ``recv``."""

    @backend_primitive
    def _gather(self, send, recv, root):
        """Collect every rank's ``send`` in rank order into ``recv`` of ``root`` (None elsewhere)."""

    @backend_primitive
    def _scatter(self, send, recv, root):
        """Copy block i of ``send`` of ``root`` (None elsewhere) into ``recv`` of rank i."""

    @backend_primitive
    def _alltoallv(self, send, send_counts, recv, recv_counts):
        """Send ``send_counts[i]`` elements of ``send`` to rank i, receive ``recv_counts[i]`` from it."""

    @backend_primitive
    def _barrier(self):
        """Return once every rank of the group has called it."""

    @backend_primitive
    def _send(self, buf, dst, tag):
        """Send ``buf`` to rank ``dst``; return once ``buf`` may be reused."""

    @backend_primitive
    def _recv(self, buf, src, tag):
        """Receive into ``buf`` from rank ``src`` (None: any); return the sender's rank."""

    @backend_primitive
    def _isend(self, buf, dst, tag):
        """Start sending ``buf`` to rank ``dst``; return its Work."""

    @backend_primitive
    def _irecv(self, buf, src, tag, writeback):
        """Start receiving into ``buf`` from rank ``src``; return a Work that calls ``writeback`` when done."""
