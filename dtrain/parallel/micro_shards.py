"""Micro-shards: DDP's forward and backward in fixed-size pieces, summed the same way at any world size.

``DistributedDataParallel(module, micro_shard_size=m)`` cuts every rank's batch into
micro-shards of m rows and runs the module once per micro-shard. The global batch of G rows
is then always the same G/m micro-shards, computed with the same shapes (m rows) whatever
the world size: micro-shard j gives the same gradient bits on 1, 2 or 4 ranks. The micro-shard
gradients are then summed in one fixed binary tree (:mod:`.tree_sum`; a power of two of them
spread evenly) or exactly in fixed point (:mod:`.exact_sum`; any other count), either way with
a result that does not depend on which rank holds which micro-shard, so the averaged gradient
is the same bits at every world size (see docs/reproducibility.md for the conditions).

How the user's ordinary ``loss.backward()`` gives one gradient per micro-shard: the forward
of micro-shard c runs with *alias leaves* in place of the parameters (new leaf Parameters
sharing the parameters' arrays, swapped into the modules for that call only), so backward
accumulates micro-shard c's gradient on its own aliases. A post-accumulate-grad hook on each
alias collects its gradient; at the last one of a synchronized backward the collected
gradients (with those of the ``no_sync`` passes before it) are summed, divided by the world
size as DDP averages, and written to the parameters' ``.grad``.

The outputs of the micro-shards are put back together as the module's output for the
rank's batch: tensors with a batch dimension are concatenated along dim 0, 0-dim tensors
(a loss computed inside the module) are averaged, anything else is the first micro-shard's.
Buffers a training forward updates (BatchNorm's running statistics) are updated from the
same starting values by every micro-shard and then set to the exact mean over all the
global batch's micro-shards; integer buffers (counters) take the last micro-shard's value.
That happens once per step, in the synchronized forward, over the micro-shards of every pass
since the last one: a ``no_sync`` accumulation pass leaves the buffers as they were, so how
the global batch is split into ranks and passes does not change them (one update of the
running statistics per optimizer step, where plain DDP makes one per forward).

DDP's ``nonfinite`` ("skip" by default, "raise", "ignore"; :mod:`.nonfinite`) applies here
too, decided alike on every rank: the exact sum's MAX all-reduce of magnitudes already says
which tensors held an inf or NaN on some rank (free); the tree sum checks its result with one
dot (read with its "has a gradient" flags: no extra synchronization). Only then (the rare
path) each rank looks at its own micro-shard gradients, still held, and the ranks all-gather
what they found, so the message names the first such parameter (registration order) of the
lowest such rank.
"""
import warnings

import numpy

from .. import comm as dist
from ..nn.parameter import Parameter
from ..tensor import Tensor, cat, no_grad, reachable_leaves, stack
from ..tensor.backend import Device, get_array_module
from ..tensor.deterministic import are_deterministic_algorithms_enabled, per_sample_random
from ..tensor.random import integers_array
from ..tensor.replay import replayable
from .comm_hooks import allreduce_hook
from .exact_sum import ExactSum
from .nonfinite import act, clear_mark, culprit_message, ensure_step_hook
from .tree_sum import TreeSum, is_power_of_two

_CPU = Device("cpu")


def micro_shards_for(ddp, size, params, names):
    """The :class:`MicroShards` of a DistributedDataParallel built with ``micro_shard_size=size``
    (None without one; in deterministic mode that is warned about: the gradients then depend on
    the world size)."""
    if size is None:
        if are_deterministic_algorithms_enabled():
            warnings.warn("DistributedDataParallel: deterministic mode is on but micro_shard_size is not set, so "
                          "each rank's gradient is summed over its own batch and the result depends on the world "
                          "size; pass micro_shard_size=m (rows per micro-shard) for the same bits at any world "
                          "size", UserWarning, stacklevel=3)
        return None
    if ddp.gradient_sharding:
        raise ValueError("DistributedDataParallel: micro_shard_size cannot be combined with gradient_sharding=True "
                         "(micro-shard gradients are summed exactly with an all-reduce, not reduce-scattered); "
                         "drop one of the two")
    check = ddp.reducer.nonfinite  # the mode DDP was given (None: "ignore")
    return MicroShards(ddp.module, params, names, size, ddp.process_group, ddp.find_unused_parameters,
                       nonfinite="ignore" if check is None else check.mode)


class MicroShards:
    """Runs DDP's forward per micro-shard and reduces the micro-shard gradients exactly.

    Args:
        module: the wrapped module.
        params: the parameters to reduce (those that require grad), in DDP's order.
        names: their names, for messages.
        size: the micro-shard size m (rows of dim 0).
        process_group: the group (None: the default group).
        find_unused_parameters: expect gradients only for the aliases forward's output
            reaches (else every parameter must get one, as DDP).
        nonfinite: "skip", "raise" or "ignore", as DDP's (see the module docstring).
    """

    def __init__(self, module, params, names, size, process_group=None, find_unused_parameters=False,
                 nonfinite="skip"):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"DistributedDataParallel: micro_shard_size must be a positive int (rows per "
                             f"micro-shard), got {size!r}")
        self.module, self.params, self.names, self.size = module, params, names, size
        self.group, self.find_unused = process_group, find_unused_parameters
        self.world_size, self.rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        index = {id(p): i for i, p in enumerate(params)}
        # where each parameter sits: (a module's _parameters dict, key); a tied weight sits twice
        self.slots = [(m._parameters, k, index[id(p)]) for m in module.modules()
                      for k, p in m._parameters.items() if p is not None and id(p) in index]
        self.sum_grads, self.sum_buffers = ExactSum(process_group), ExactSum(process_group)
        self.grads = []  # per micro-shard run since the last reduction: per parameter, its gradient array
        self.passes = []  # per forward since the last reduction (no_sync accumulation passes): its micro-shards
        # the buffers' values before the step's first training forward, and per micro-shard run since
        # then, its buffers' values after it: combined by the synchronized forward
        self.buffers_before, self.buffers_after = None, []
        self.tree = None  # the TreeSum, made at the first reduction that can use it
        self.stream = 0  # the per-sample random stream of the current step
        self.expected = None  # (run indices of the synchronized pass, aliases that must report) or None
        self.reported = 0
        self.reductions = 0  # how many reductions ran: a hook of an earlier one's aliases is a second backward
        self.nonfinite = nonfinite
        self.synchronized = 0  # synchronized backward passes reduced: the step a non-finite one is named by
        if nonfinite != "ignore":
            ensure_step_hook()

    # ---- forward ------------------------------------------------------------------------
    def run(self, ddp, inputs, kwargs, sync):
        """DDP's forward with grad enabled: the micro-shards reduce the gradients, not ``ddp``'s
        buckets (its reducer is told to let this backward pass)."""
        if ddp._join is not None:
            raise RuntimeError("DistributedDataParallel.join() cannot be combined with micro_shard_size: every rank "
                               "must hold the same number of micro-shards in each step")
        if ddp.reducer.hook is not allreduce_hook:
            raise RuntimeError("DistributedDataParallel(micro_shard_size=...) sums gradients exactly and cannot use a "
                               "comm hook; register none, or drop micro_shard_size")
        ddp.reducer.prepare_for_backward((), False)
        return self.forward(inputs, kwargs, sync)

    def forward(self, inputs, kwargs, sync):
        """The module's output for this rank's batch, computed micro-shard by micro-shard."""
        self._check_finished()
        rows = _batch_rows(inputs, kwargs)
        if rows % self.size:
            raise ValueError(f"DistributedDataParallel(micro_shard_size={self.size}): this rank's batch has {rows} "
                             f"rows (dim 0 of the first tensor argument), not a multiple of {self.size}; give "
                             f"every rank a whole number of micro-shards (an epoch's last, partial batch: "
                             f"DataLoader(..., drop_last=True) leaves it out)")
        if not self.passes and are_deterministic_algorithms_enabled():
            # one draw of the seeded default generator per step, alike on every rank (a
            # checkpoint's RNG state restores it): the step's key for per-sample dropout
            self.stream = int(integers_array(0, 2 ** 62, (), "int64", _CPU))
        first_row = (len(self.passes) * self.world_size + self.rank) * rows  # this batch's place in the global batch
        buffers = [b for b in self.module.buffers()] if self.module.training else []
        if buffers and (self.buffers_before is None or len(self.buffers_before) != len(buffers)):
            self.buffers_before, self.buffers_after = [b.array.copy() for b in buffers], []
        start = self.buffers_before if buffers else []  # the buffers hold these now: a no_sync pass put them back
        outputs, runs = [], []
        for c in range(rows // self.size):
            lo = c * self.size
            if c:
                _put_back(buffers, start)
            aliases = [Parameter(p.detach()) for p in self.params]
            run = len(self.grads)
            self.grads.append([None] * len(self.params))
            for i, alias in enumerate(aliases):
                alias.register_post_accumulate_grad_hook(self._make_hook(run, i))
            runs.append((run, aliases))
            with per_sample_random(range(first_row + lo, first_row + lo + self.size), self.stream), \
                    _swapped(self.slots, aliases, self.params):
                outputs.append(self.module(*_rows(inputs, lo, self.size, rows),
                                           **_rows(kwargs, lo, self.size, rows)))
            if buffers:
                self.buffers_after.append([b.array.copy() for b in buffers])
        self.passes.append(rows // self.size)
        if buffers and sync:
            self._combine_buffers(buffers, start, self.buffers_after)
            self.buffers_before, self.buffers_after = None, []
        elif buffers:
            _put_back(buffers, start)
        output = _combine(outputs)
        if sync:
            self._expect(runs, output)
        return output

    def _combine_buffers(self, buffers, start, after):
        """Set ``buffers`` to the mean over every rank's micro-shard runs of the step (``after``:
        this rank's, each its buffers' values after it; as many on every rank)."""
        floating = [k for k, b in enumerate(buffers) if b.is_floating_point()]
        means = self.sum_buffers([[values[k] for values in after] for k in floating], [start[k] for k in floating],
                                 divisor=len(after) * self.world_size)
        with no_grad():
            for k, b in enumerate(buffers):
                b.array[...] = after[-1][k]
            for k, mean in zip(floating, means):
                buffers[k].array[...] = mean

    # ---- backward -----------------------------------------------------------------------
    def _expect(self, runs, output):
        if self.find_unused:
            reached = {id(t) for t in reachable_leaves(list(_tensors(output)))}
            count = sum(id(a) in reached for _, aliases in runs for a in aliases)
        else:
            count = sum(len(aliases) for _, aliases in runs)
        self.expected, self.reported = (runs, count), 0
        if count == 0:
            self._reduce()

    def _make_hook(self, run, i):
        made_at = self.reductions

        def hook(alias):
            if made_at != self.reductions:
                raise RuntimeError(
                    f"DistributedDataParallel(micro_shard_size={self.size}): parameter {self.names[i]} got a "
                    f"gradient for a forward whose reduction is over: two backward passes ran for one forward, or "
                    f"a backward ran after the next forward. Sum the losses and call backward once, or run "
                    f"forward again before each backward")
            earlier = self.grads[run][i]  # a second backward through a no_sync forward adds to the first
            self.grads[run][i] = alias.grad.array if earlier is None else earlier + alias.grad.array
            alias.grad = None  # the array is kept above; the alias itself dies with the graph
            if self.expected is not None:
                self.reported += 1
                if self.reported == self.expected[1]:
                    self._reduce()
        return hook

    def _reduce(self):
        """Sum every collected micro-shard gradient over the ranks in a way that does not depend
        on the world size (:mod:`.tree_sum` when the micro-shards per step are a power of two
        spread evenly, else :mod:`.exact_sum`), average as DDP does (divide by the world
        size), and add the result to ``.grad``."""
        like = [p.array for p in self.params]
        check = self.nonfinite != "ignore"
        if check:
            clear_mark(self)
        if self._tree_applies(like):
            if self.tree is None:
                self.tree = TreeSum(like, self.group, check=check)
            runs = iter(self.grads)
            sums = self.tree([[next(runs) for _ in range(chunks)] for chunks in self.passes], self.world_size)
            suspect = check and not self.tree.finite
            found = self.tree.found  # None: the micro-shard gradients are still intact, look at them
        else:
            summands = [[g[i] for g in self.grads if g[i] is not None] for i in range(len(self.params))]
            sums = self.sum_grads(summands, like, divisor=self.world_size)
            suspect = check and bool(self.sum_grads.nonfinite)
            found = None
        # the rare path (a collective, entered alike by every rank: the sums are the same bits)
        verdict = self._verdict(sums, found) if suspect else None
        with no_grad():
            for p, total in zip(self.params, sums):
                if total is None:
                    continue  # no rank computed a gradient for it: .grad stays as it was (as DDP)
                if p.grad is None:
                    p.grad = Tensor._wrap(total)
                else:
                    p.grad.array[...] += total
        self.grads, self.passes, self.expected, self.reported = [], [], None, 0
        self.reductions += 1
        self.synchronized += 1
        if verdict is not None:
            act(self.nonfinite, verdict, self, self.group)

    def _verdict(self, sums, found=None):
        """The message naming the step, the rank and the parameter of a non-finite sum, or None
        when every sum is finite after all (the tree's dot alone passed the dtype's range).
        ``found``: what this rank knows to be non-finite (None: look at its micro-shard gradients)."""
        bad = [i for i, total in enumerate(sums) if total is not None and not _all_finite(total)]
        if not bad:
            return None
        if found is None:
            found = {}
            for i in range(len(self.params)):
                grads = [g[i] for g in self.grads if g[i] is not None]
                if any(not _all_finite(g) for g in grads):
                    found[(self.rank, i)] = 1 if any(bool(get_array_module(g).isnan(g).any()) for g in grads) else 2
        return culprit_message(self.synchronized, found, self.group, self.names, range(len(self.params)),
                               lambda: self._overflowed(bad))

    def _overflowed(self, bad):
        return (f"step {self.synchronized}: non-finite averaged gradient in '{self.names[bad[0]]}' though "
                f"every rank's own gradients were finite: their sum overflowed")

    def _tree_applies(self, like):
        """Whether the fixed tree can sum this step's micro-shards: as many on every rank and
        pass, a power of two in all, one dtype. Decided from the world size, the dtypes and one
        small all-reduce, so every rank decides alike (the tree and the integer sum give
        different last bits, so the choice must not depend on the world size either: a power
        of two micro-shards per step split evenly is one at every world size)."""
        # kind "f" leaves bfloat16 (kind "V") to the exact sum, on purpose: the tree would round every
        # one of its additions to bfloat16's 8 bits, the exact sum rounds the mean once
        if len({a.dtype for a in like}) != 1 or like[0].dtype.kind != "f":
            return False
        counts = numpy.array([max(self.passes), -min(self.passes), len(self.passes)], numpy.int64)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX, group=self.group)
        most, fewest = int(counts[0]), -int(counts[1])
        return most == fewest and is_power_of_two(most * int(counts[2]) * self.world_size)

    def _check_finished(self):
        """Refuse a forward while the last synchronized backward is half done (some parameter
        got no gradient), as DDP does; a synchronized forward with no backward is dropped."""
        if self.expected is None:
            return
        runs, _ = self.expected
        if self.reported == 0:  # no backward ran for it: forget its runs
            first = runs[0][0]
            del self.grads[first:]
            self.passes.pop()
            self.expected = None
            self.reductions += 1  # its aliases' hooks must not write into the runs that come next
            return
        missing = sorted({self.names[i] for run, _ in runs for i, g in enumerate(self.grads[run]) if g is None})
        self.grads, self.passes, self.expected, self.reported = [], [], None, 0
        raise RuntimeError(
            f"DistributedDataParallel(micro_shard_size={self.size}): expected to have finished reduction in the "
            f"prior iteration before starting a new one: on rank {self.rank}, these parameters received no "
            f"gradient in some micro-shard: {', '.join(missing)}. Make sure all forward outputs take part in the "
            f"loss, or pass find_unused_parameters=True to DistributedDataParallel.")


def _put_back(buffers, values):
    with no_grad():
        for b, a in zip(buffers, values):
            b.array[...] = a


class _swapped:
    """Put ``aliases`` in the parameters' places in the modules for the block."""

    def __init__(self, slots, aliases, params):
        self.slots, self.aliases, self.params = slots, aliases, params

    def __enter__(self):
        for registry, key, i in self.slots:
            registry[key] = self.aliases[i]
        # an activation checkpoint inside recomputes during backward: with these aliases again
        self.registered = replayable(lambda: _swapped(self.slots, self.aliases, self.params))
        self.registered.__enter__()

    def __exit__(self, *exc):
        self.registered.__exit__(None, None, None)
        for registry, key, i in self.slots:
            registry[key] = self.params[i]
        return False


def _all_finite(array):
    return bool(get_array_module(array).isfinite(array).all())


def _tensors(obj):
    # DDP's walk over an output's nested tensors (imported here: distributed.py imports this module)
    from .distributed import _tensors as tensors_of
    return tensors_of(obj)


def _batch_rows(inputs, kwargs):
    for t in _tensors((inputs, kwargs)):
        if t.dim() >= 1:
            return t.shape[0]
    raise ValueError("DistributedDataParallel(micro_shard_size=...): the forward got no tensor with a batch "
                     "dimension to cut into micro-shards")


def _rows(obj, lo, n, rows):
    """``obj`` with every tensor of ``rows`` rows cut to rows lo .. lo + n (copied: a micro-shard's
    arrays are then laid out alike at every world size)."""
    if isinstance(obj, Tensor):
        if obj.dim() == 0 or obj.shape[0] != rows:
            return obj
        return obj[lo:lo + n] if obj.requires_grad else obj.detach()[lo:lo + n].clone()
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_rows(o, lo, n, rows) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rows(o, lo, n, rows) for o in obj)
    if isinstance(obj, dict):
        return {k: _rows(v, lo, n, rows) for k, v in obj.items()}
    return obj


def _combine(outputs):
    """The micro-shards' outputs as one: tensors concatenated along dim 0, 0-dim tensors
    averaged, containers element by element, anything else the first micro-shard's."""
    first = outputs[0]
    if isinstance(first, Tensor):
        if len(outputs) == 1:
            return first
        return stack(outputs).mean() if first.dim() == 0 else cat(outputs, dim=0)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(_combine(list(parts)) for parts in zip(*outputs)))
    if isinstance(first, (list, tuple)):
        return type(first)(_combine(list(parts)) for parts in zip(*outputs))
    if isinstance(first, dict):
        return {k: _combine([o[k] for o in outputs]) for k in first}
    return first
