"""Non-finite gradients under fully_shard: one decision per backward on every rank, the culprit named.

``fully_shard(module, nonfinite="skip" | "raise" | "ignore")``, as
``DistributedDataParallel(nonfinite=...)`` (:mod:`dtrain.parallel.nonfinite`, whose message,
error, skip mark and optimizer step pre-hook this reuses). A keyword, not a module-level or
environment setting: it is DDP's own spelling, it is visible where the model is built, and
two models in one process may want different modes; an extra keyword-only argument with a
default leaves every PyTorch call of ``fully_shard`` valid. ``None`` (the default) takes the
value given to the other calls of the same tree (usually only the root's), else "skip";
two different explicit values in one tree are a ValueError at its first forward, since one
backward takes one decision.

How: each group, as it reduce-scatters (:meth:`ParamGroup.reduce_scatter_grads`), takes
this rank's squared norm of each full gradient (one BLAS dot, while in cache: NaN and inf
propagate) and of each shard's ``.grad`` after the reduction (1/N of the values: a sum that
overflowed, or a non-finite gradient accumulated from an earlier backward); when the last
group of the tree that expects gradients has reduced, the end of backward, the ranks
all-reduce one two-element flag (one tiny collective per backward; fully_shard runs three
per group already). The reduced flag is the same on every rank, so every rank takes the
same decision. Only when it is set (the rare path) do the ranks all-gather what each found
(:func:`~dtrain.parallel.nonfinite.culprit_message`): the lowest rank with a non-finite
gradient and its first such parameter (in the order the groups reduced, then registration
order), by its qualified name in the root module, e.g.
``step 7: non-finite gradient (nan) on rank 1 in 'mid.weight'; all ranks skip this step``.
``step`` counts the root's backward passes before this one.

* "skip": rank 0 of the root's mesh logs that line (logger ``dtrain.parallel``, WARNING) and
  the next ``step()`` of every optimizer holding a shard of the tree updates nothing (every
  ``.grad`` set to None first: no parameter, moment or step count changes). The mark lasts
  until the tree's next backward begins.
* "raise": every rank raises :class:`~dtrain.parallel.nonfinite.NonFiniteGradientError` from
  ``backward()`` with that message.
* "ignore": nothing is checked or communicated.
"""
import numpy

from ... import comm as dist
from ...comm.finite_flags import norm_dtype, squared_norm
from ...parallel.nonfinite import MODES, act, check_mode, clear_mark, culprit_message, ensure_step_hook
from ...tensor import Tensor
from ...tensor.backend import asnumpy, get_array_module


def validate(nonfinite):
    """ValueError unless ``nonfinite`` is None or one of the modes."""
    if nonfinite is not None:
        check_mode(nonfinite, who="fully_shard")


def resolve(choices):
    """The mode of a tree from its calls' ``(nonfinite, where)`` (where: the module's name in the root)."""
    chosen = {}
    for nonfinite, where in choices:
        if nonfinite is not None:
            chosen.setdefault(nonfinite, where)
    if len(chosen) > 1:
        found = " and ".join(f"nonfinite={mode!r} (on {where})" for mode, where in chosen.items())
        raise ValueError(f"fully_shard: one tree's calls ask {found}: one backward takes one decision; pass the "
                         f"same value to every call, or only to the root's")
    return next(iter(chosen), "skip")


def squared_norms(arrays):
    """This rank's squared norm of each array (None where the array is None), in one array."""
    present = [a for a in arrays if a is not None]
    if not present:
        return None
    xp = get_array_module(present[0])
    norms = xp.zeros(len(arrays), norm_dtype(xp, present[0].dtype))
    for k, a in enumerate(arrays):
        if a is not None:
            norms[k] = squared_norm(xp, a)
    return norms


class TreeCheck:
    """The non-finite check of one fully_shard root (mode "skip" or "raise"): its groups call
    :meth:`reduced` as each reduce-scatters; the root's first output gradient calls :meth:`begin`."""

    def __init__(self, mode, groups, names, mesh):
        self.mode, self.groups, self.names, self.mesh = mode, groups, names, mesh
        self.base, count = {}, 0  # id(group) -> its first parameter's index in names
        for g in groups:
            self.base[id(g)], count = count, count + len(g.shapes)
        self.params = [s for g in groups for s in g.shards]  # what the skip mark covers (act's owner.params)
        self.step = 0
        self.awaiting = set()
        self.norms = []  # (base, local, after) per group reduced in this backward (see reduced)
        self.order = []  # parameter indices, in the order their groups reduced
        ensure_step_hook()

    def begin(self):
        """A backward of the tree begins: the groups expecting gradients are awaited."""
        clear_mark(self)
        self.awaiting = {id(g) for g in self.groups if g.pending}
        self.norms.clear()
        self.order.clear()

    def reduced(self, group, local, after):
        """``group`` reduce-scattered: ``local`` and ``after`` are this rank's squared norms of
        its full gradients (before) and of its shards' .grad (after), per parameter (or None).
        Kept where they are (on a GPU: no host read until the end of backward)."""
        if id(group) not in self.awaiting:  # a backward this tree's root did not begin (no output of it)
            return
        base = self.base[id(group)]
        self.order.extend(range(base, base + len(group.shapes)))
        self.norms.append((base, local, after))
        self.awaiting.discard(id(group))
        if not self.awaiting:
            self.finish()

    def _bad(self, which):
        """``parameter index -> kind`` (1 NaN, 2 inf) where this rank's ``which`` norms (1:
        its own gradients, 2: its reduced shards) are non-finite (the rare path: host reads)."""
        bad = {}
        for entry in self.norms:
            norms = entry[which]
            if norms is not None:
                norms = asnumpy(norms)
                for k in numpy.flatnonzero(~numpy.isfinite(norms)):
                    bad[entry[0] + k] = 1 if numpy.isnan(norms[k]) else 2
        return bad

    def finish(self):
        """The end of backward: one tiny all-reduce decides, the same on every rank."""
        step, self.step = self.step, self.step + 1
        # on the groups' device (NCCL reduces device arrays only); reading it (a few bytes)
        # is the one host synchronization of the check, as GradScaler's found_inf
        flag = next(g for g in self.groups if g.shapes)._empty(2, numpy.float64)
        xp = get_array_module(flag)
        for k in (0, 1):
            norms = [entry[k + 1].sum() for entry in self.norms if entry[k + 1] is not None]
            flag[k] = ~xp.isfinite(sum(norms)) if norms else 0  # NaN and inf propagate through the sums
        if dist.get_world_size(self.mesh) > 1:
            dist.all_reduce(Tensor._wrap(flag), group=self.mesh)
        if not asnumpy(flag).any():
            return
        local, after = self._bad(1), self._bad(2)
        rank = dist.get_rank(self.mesh)
        found = {(rank, i): kind for i, kind in local.items()}

        def after_reduction():  # no rank's own gradients of this backward were non-finite
            everyone = [after] * dist.get_world_size(self.mesh)
            if len(everyone) > 1:
                dist.all_gather_object(everyone, after)
            bad = sorted({i for seen in everyone for i in seen}, key=self.order.index)
            return (f"step {step}: non-finite gradient in '{self.names[bad[0]]}' after the reduce-scatter though "
                    f"every rank's own gradients of this backward were finite: their sum overflowed, or a "
                    f"non-finite gradient accumulated from an earlier backward is still in .grad")
        message = culprit_message(step, found, self.mesh, self.names, self.order, after_reduction)
        act(self.mode, message, self, self.mesh, who="fully_shard")


def build(root_module, states):
    """The TreeCheck of the fully_shard tree rooted at ``root_module`` (``states``: its calls'
    ``_State``s, in module order, the root's first), or None under "ignore"."""
    prefix = {id(m): name for name, m in root_module.named_modules(remove_duplicate=False)}
    where = [repr(prefix[id(s.module)]) if prefix.get(id(s.module)) else "the root" for s in states]
    mode = resolve(zip((s.nonfinite for s in states), where))
    if mode == "ignore":
        return None
    assert mode in MODES
    groups = [s.group for s in states]
    names = []
    for g in groups:
        first = {}
        for module, pname, i in g.slots:  # the first registration names a shared parameter
            first.setdefault(i, f"{prefix[id(module)]}.{pname}" if prefix.get(id(module)) else pname)
        names.extend(first[i] for i in range(len(g.shapes)))
    return TreeCheck(mode, groups, names, states[0].group.group)
