"""One fully_shard group: the parameters one ``fully_shard`` call owns, kept as this rank's
1/N of one flat buffer, all-gathered into full tensors for forward and backward, and their
gradients reduce-scattered back into the shards.

Layout: the group's parameters (each once, however many modules register it) are laid end
to end in one flat array of their one dtype, padded with zeros to a multiple of the world
size N; rank r keeps elements ``r*s .. (r+1)*s`` (``s`` = padded size / N). Each original
parameter is replaced, in every module that registers it, by a *shard parameter*: a 1-D
Parameter viewing the part of this rank's shard that falls inside it (maybe no element).
So ``model.parameters()`` yields the shards and any optimizer built over them steps 1/N of
the model; elementwise optimizers (SGD, Adam, AdamW ...) then do exactly what they do on
full tensors.

For compute, every original parameter has one persistent *full parameter* (a leaf, so the
autograd graph and the post-accumulate-grad hooks see one object per parameter across
steps); ``unshard`` fills them with views of a freshly all-gathered flat buffer and
registers them on the modules, ``reshard`` puts the shard parameters back and points the
full ones at an empty array. Trap: NumPy has no storage resize, and the arrays an op saved
for its backward (linear's weight) are views of the gathered buffer, alive in the graph
until that backward runs. So on the host each group gathers, per dtype, into one buffer
over anonymous memory kept for the group's life: ``reshard`` releases its pages
(``madvise(MADV_DONTNEED)``: the graph's views then hold no memory and read zeros) and the
all-gather before backward fills the same buffer again, so the saved views read the gathered
values when backward runs, as PyTorch's FSDP2 frees and refills the storage
(``untyped_storage().resize_``). Whatever must outlive a reshard (``state_dict()``'s values)
is copied. On CuPy each gather makes a new array (the graph keeps the forward's).
"""
import contextlib
import mmap

import numpy

from ... import comm as dist
from ...nn import Parameter
from ...tensor import Tensor, backend, memory
from ...tensor.backend import get_array_module
from ..sharded_grad import mark_partial
from .nonfinite import squared_norms

SHARDED, UNSHARDED = "sharded", "unsharded"
_RELEASABLE = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap, "MAP_PRIVATE")  # Linux, macOS


class ParamGroup:
    """The parameters of one fully_shard call. ``registrations`` lists ``(module, name)``
    for every place a parameter is registered; ``shapes``, ``shards`` and ``full`` are per
    distinct parameter, in order of first registration; ``group`` is the process group
    (None: the world)."""

    def __init__(self, registrations, group, mp_policy):
        self.group, self.mp_policy = group, mp_policy
        self.world_size, self.rank = dist.get_world_size(group), dist.get_rank(group)
        originals = {}  # id -> the parameter, in order of first registration
        for module, name in registrations:
            originals.setdefault(id(module._parameters[name]), module._parameters[name])
        originals = list(originals.values())
        self.slots = [(module, name, [id(p) for p in originals].index(id(module._parameters[name])))
                      for module, name in registrations]
        # only the originals' shapes are kept: holding the Parameters would keep every full
        # array alive next to the shards (the memory fully_shard is there to save)
        self.shapes = [tuple(p.shape) for p in originals]
        self.dtype = originals[0].dtype if originals else None
        self._template = self._zeros_like(originals[0].array) if originals else None  # device + array module
        self.sizes = [p.numel() for p in originals]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(originals))]
        total = sum(self.sizes)
        self.shard_size = -(-total // self.world_size) if total else 0  # ceil: the padding is in the last shards
        self.padded_size = self.shard_size * self.world_size
        self.shard_flat = self._fill_shard(originals) if originals else None  # a root whose blocks hold everything
        self.shards = [self._shard_parameter(i, p.requires_grad) for i, p in enumerate(originals)]
        mark_partial(self.shards, group)  # clip_grad_norm_ sums the ranks' parts of the norm
        self.full = [Parameter(Tensor._wrap(self._empty(0, p.dtype)), p.requires_grad) for p in originals]
        self.hooks = [f.register_post_accumulate_grad_hook(self._grad_ready) for f in self.full if f.requires_grad]
        self.state = None
        self.pending = set()  # ids of the full parameters whose gradients this backward still brings
        self.forward_with_grad = False  # this step's forward ran with grad enabled (set by fully_shard's hook)
        self.check = None  # fully_shard's TreeCheck (its reduced() is called after each reduce-scatter), or None
        self._gathering = None  # (work, flat) of an all-gather in flight
        self._buffers = {}  # dtype -> (its anonymous memory, the flat array over it): the host's gather buffers
        self.installed = None  # the flat array the installed full parameters view
        self._swap(self.shards)
        self.state = SHARDED

    # ---- the shards --------------------------------------------------------------------
    @staticmethod
    def _zeros_like(array, size=0, dtype=None):
        with backend.switch_to((array,)) or contextlib.nullcontext():
            return get_array_module(array).zeros(size, dtype or array.dtype)

    def _empty(self, size, dtype):
        return self._zeros_like(self._template, size, dtype)

    def _fill_shard(self, originals):
        """This rank's piece of the padded flat layout, copied from the original parameters."""
        shard = self._empty(self.shard_size, self.dtype)
        begin = self.rank * self.shard_size
        for p, offset, size in zip(originals, self.offsets, self.sizes):
            lo, hi = max(offset, begin), min(offset + size, begin + self.shard_size)
            if lo < hi:
                shard[lo - begin:hi - begin] = p.array.reshape(-1)[lo - offset:hi - offset]
        return shard

    def local_range(self, i):
        """Parameter ``i``'s elements in this rank's shard: ``(lo, hi)`` in the shard, and
        where they start inside the parameter."""
        begin = self.rank * self.shard_size
        lo = max(self.offsets[i], begin)
        hi = max(lo, min(self.offsets[i] + self.sizes[i], begin + self.shard_size))
        return lo - begin, hi - begin, lo - self.offsets[i]

    def _shard_parameter(self, i, requires_grad):
        lo, hi, _ = self.local_range(i)
        shard = Parameter(Tensor._wrap(self.shard_flat[lo:hi]), requires_grad)
        shard._fsdp_shard = True  # fully_shard refuses a module that holds one: apply it bottom-up
        return shard

    def _swap(self, tensors):
        for module, name, i in self.slots:
            module._parameters[name] = tensors[i]

    # ---- all-gather ----------------------------------------------------------------------
    def start_unshard(self, dtype=None):
        """Launch the all-gather of the full parameters in ``dtype`` (default: the policy's
        param_dtype, else the parameters' own); ``finish_unshard`` waits for it and installs
        them. Nothing happens if they are installed already or on their way."""
        if self.state == UNSHARDED or self._gathering is not None or not self.shapes:
            return
        dtype = dtype or self.mp_policy.param_dtype or self.dtype
        source = self.shard_flat if dtype == self.dtype else self.shard_flat.astype(dtype)
        flat = self._gather_buffer(dtype)
        work = dist.all_gather_into_tensor(flat, source, group=self.group, async_op=True) \
            if self.world_size > 1 else None
        if work is None:
            flat[:] = source
        self._gathering = (work, flat)

    def _gather_buffer(self, dtype):
        """The array the full parameters are gathered into: on the host, the group's buffer of
        ``dtype`` (its pages counted again from now on), else a new one."""
        if not (_RELEASABLE and isinstance(self._template, numpy.ndarray) and self.padded_size):
            return self._empty(self.padded_size, dtype)
        dtype = numpy.dtype(dtype)
        if dtype not in self._buffers:
            region = mmap.mmap(-1, self.padded_size * dtype.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            self._buffers[dtype] = (region, numpy.frombuffer(region, dtype))
        flat = self._buffers[dtype][1]
        memory.storage_resized(flat, flat.nbytes)
        return flat

    def _release(self, flat):
        """Give back the pages of one of the group's host buffers (views of it read zeros
        until the next gather into it fills them)."""
        for region, buffer in self._buffers.values():
            if buffer is flat:
                region.madvise(mmap.MADV_DONTNEED)
                memory.storage_resized(flat, 0)

    def finish_unshard(self):
        if self._gathering is None:
            return
        work, flat = self._gathering
        self._gathering = None
        if work is not None:
            work.wait()
        self.installed = flat
        for f, shape, offset, size in zip(self.full, self.shapes, self.offsets, self.sizes):
            f.array = flat[offset:offset + size].reshape(shape)
        self._swap(self.full)
        self.state = UNSHARDED

    def drop_gathering(self):
        """Wait for an all-gather in flight (every rank launched it) and forget its result."""
        if self._gathering is not None:
            work, flat = self._gathering
            self._gathering = None
            if work is not None:
                work.wait()
            self._release(flat)

    def unshard(self, dtype=None):
        self.start_unshard(dtype)
        self.finish_unshard()

    def reshard(self):
        """Put the shard parameters back on the modules and drop the full arrays."""
        if self.state == SHARDED:
            return
        self._swap(self.shards)
        for f in self.full:
            f.array = self._empty(0, f.dtype)
        if self.installed is not None:
            self._release(self.installed)
            self.installed = None
        self.state = SHARDED

    def write_back(self):
        """The installed full parameters' values (e.g. just loaded) into this rank's shard."""
        begin = self.rank * self.shard_size
        for f, offset, size in zip(self.full, self.offsets, self.sizes):
            lo, hi = max(offset, begin), min(offset + size, begin + self.shard_size)
            if lo < hi:
                self.shard_flat[lo - begin:hi - begin] = f.array.reshape(-1)[lo - offset:hi - offset]

    # ---- gradients -------------------------------------------------------------------------
    def expect(self, reachable_ids):
        """The full parameters this backward brings a gradient to: those the output reaches;
        all of them if the group's forward ran with grad enabled yet the output reaches none
        (the whole forward inside activation checkpointing: the recomputation in backward
        brings their gradients; a group whose parameters went unused then keeps waiting, and
        its .grad stay None, as when they are unreached)."""
        self.pending = {id(f) for f in self.full if f.requires_grad and id(f) in reachable_ids}
        if not self.pending and self.forward_with_grad:
            self.pending = {id(f) for f in self.full if f.requires_grad}
        self.forward_with_grad = False

    def _grad_ready(self, full):
        if id(full) not in self.pending:
            raise RuntimeError("fully_shard: a parameter's gradient arrived after its group's gradients were "
                               "reduce-scattered (or the forward's outputs did not reach it, e.g. activation "
                               "checkpointing around part of a fully_shard module's forward, or a second backward "
                               "through one forward: neither is supported). To checkpoint, wrap the whole module "
                               "(a module whose forward is checkpoint(block, x)) and apply fully_shard to the wrapper")
        self.pending.discard(id(full))
        if not self.pending:
            self.reduce_scatter_grads()

    def reduce_scatter_grads(self):
        """Average the full gradients over the ranks into this rank's shard parameters' ``.grad``
        (added to a gradient already there, as accumulation), then reshard. A parameter the
        forward did not use keeps ``.grad`` None; like FSDP2, this expects every rank to use
        the same parameters."""
        dtype = self.mp_policy.reduce_dtype or self.mp_policy.param_dtype or self.dtype
        flat = self._empty(self.padded_size, dtype)
        got = [f.grad is not None for f in self.full]
        for f, offset, size in zip(self.full, self.offsets, self.sizes):
            if f.grad is not None:
                flat[offset:offset + size] = f.grad.array.reshape(-1)
            f.grad = None
        check = self.check
        if check is not None:  # this rank's own gradients, just copied (in cache)
            local = squared_norms([flat[o:o + n] if g else None for o, n, g in zip(self.offsets, self.sizes, got)])
        if self.world_size > 1:
            out = self._empty(self.shard_size, dtype)
            dist.reduce_scatter_tensor(out, flat, op=dist.ReduceOp.AVG, group=self.group)
        else:
            out = flat
        for i, shard in enumerate(self.shards):
            if not got[i]:  # unused in this forward: .grad stays None, as FSDP2 (the same on every rank)
                continue
            lo, hi, _ = self.local_range(i)
            piece = out[lo:hi].astype(self.dtype)  # a copy: .grad owns its array
            if shard.grad is None:
                shard.grad = Tensor._wrap(piece)
            else:
                shard.grad.array += piece
        self.reshard()
        if check is not None:  # the reduced (and accumulated) values this rank's optimizer will step on
            after = squared_norms([s.grad.array if got[i] and s.grad is not None else None
                                   for i, s in enumerate(self.shards)])
            check.reduced(self, local, after)
