"""Non-finite gradients under DDP: one flag per bucket, one decision on every rank, the culprit named.

``DistributedDataParallel(nonfinite="skip" | "raise" | "ignore")``:

* Through the default path (several ranks, the in-place coalesced all-reduce) the check is
  the all-reduce's own (``all_reduce_coalesced(finite_check=...)``,
  :mod:`dtrain.comm.finite_flags`), on the comm thread, nothing on the main thread: through
  the shared-memory all-reduce (one node) each rank takes one BLAS dot of every piece of the
  result it has just summed (in cache; NaN and inf pass through the sum, so the result is
  non-finite iff some rank's values were, or the sum overflowed) and the verdicts travel
  through the window's control slots; only for a non-finite piece (rare) does it look at the
  ranks' own values in it, still in place then, and note which ranks' were non-finite. On
  any other path each rank's squared norm of every gradient is taken just before the
  reduction and a one-element flag rides in the bucket's message. The other strategies (a
  bucket copy, ZeRO-2's reduce-scatter, one rank) take each gradient's squared norm as it is
  staged into its bucket (one BLAS dot, while in cache) and append the flag to the message
  (one per rank's piece of a reduce-scatter). Either way the reduced flag, the same on every
  rank, says whether any rank had a non-finite gradient: no extra collective on the common
  path. A squared norm past its dtype's range (float32: values of ~1.8e19) counts as
  non-finite too, as for ``clip_grad_norm_(error_if_nonfinite=True)``: such a step would
  overflow the optimizer's statistics anyway.
* Only when some flag is set (the rare path) the ranks all-gather what each found (per rank
  and parameter, NaN or inf), so every rank builds the same message naming the lowest such
  rank and its first such parameter in the order the gradients became ready, e.g.
  ``step 7: non-finite gradient (nan) on rank 1 in 'layers.0.weight'; all ranks skip this step``.
  ``step`` counts the synchronized backward passes before this one (0 for the first, as a
  loop's counter).
* ``"skip"`` (default): group rank 0 logs that line (logger ``dtrain.parallel``, WARNING) and
  the next ``optimizer.step()`` of every optimizer holding the wrapper's parameters updates
  nothing: a global step pre-hook sets all of that optimizer's ``.grad`` to None first, so no
  parameter, momentum buffer or Adam step count changes, exactly as if step() had not been
  called (``.grad`` is None afterwards). Until then ``.grad`` holds the reduced, non-finite
  averages, the same on every rank: a GradScaler sees them, skips the step itself and lowers
  its scale as usual. The mark lasts until the next synchronized backward.
* ``"raise"``: every rank raises :class:`NonFiniteGradientError` with that message from
  ``backward()`` (uncaught, it ends the job, non-zero exit).
* ``"ignore"``: no check at all (the optimizer then steps on the non-finite averages, as
  PyTorch's DDP does).

``DistributedDataParallel(micro_shard_size=...)`` feeds the same decision and message from its
exact or tree sum (:mod:`.micro_shards`).

On a GPU the norms, the flags and their reduction stay on the device; reading the reduced
flags at the end of backward (a few bytes) is the one host synchronization per step the check
costs, as GradScaler's ``found_inf`` read: an exact skip needs the host to know. "ignore"
leaves the step without any.

With a comm hook the flag cannot ride in the hook's message: the decision is taken on the
hook's averages instead (one more pass over them; identical on every rank), so a hook whose
own reduction overflows (e.g. float16 compression) is reported too.
"""
import logging
import weakref

import numpy

from .. import comm as dist
from ..comm.finite_flags import FiniteCheck, norm_dtype, squared_norm
from ..optim.step_hooks import register_optimizer_step_pre_hook
from ..tensor.backend import asnumpy, get_array_module

MODES = ("skip", "raise", "ignore")
log = logging.getLogger("dtrain.parallel")

_pending = weakref.WeakSet()  # reducers whose last synchronized backward was non-finite, under "skip"
_hook_handle = None
_KINDS = ("", "nan", "inf")


class NonFiniteGradientError(RuntimeError):
    """A gradient averaged by DistributedDataParallel(nonfinite="raise") held a NaN or an inf."""


def check_mode(nonfinite, who="DistributedDataParallel"):
    """ValueError unless ``nonfinite`` is one of MODES (``who``: the API named in the message)."""
    if not isinstance(nonfinite, str) or nonfinite not in MODES:
        raise ValueError(f"{who}: nonfinite must be one of 'skip', 'raise' or 'ignore', "
                         f"got {nonfinite!r}")


_squared_norm, _norm_dtype = squared_norm, norm_dtype


class NonFiniteCheck:
    """The non-finite check of one :class:`~.reducer.Reducer` (mode "skip" or "raise").

    The strategies of :mod:`.bucket_reduction` call :meth:`stage` for each gradient staged,
    :meth:`local` when a bucket is launched and :meth:`reduced` (or :meth:`reduced_averages`
    for a comm hook) when its reduction is in; the in-place strategy instead hands
    :meth:`probe` to its all-reduce and calls :meth:`probed` when it is done. The reducer
    calls :meth:`begin` at the start of each synchronized backward and :meth:`verdict` /
    :meth:`act` after the last bucket.
    """

    def __init__(self, reducer, mode):
        self.reducer, self.mode = reducer, mode
        self.norms = {}  # bucket index -> per slot, this rank's squared gradient norm (before the reduction)
        self.flags = {}  # bucket index -> the reduced flag (> 0: some rank's gradient there was not finite)
        self.averaged = {}  # bucket index -> per slot, the squared norm of the averages (comm hooks only)
        self.probes = {}  # bucket index -> its FiniteCheck (reused every pass), for all_reduce_coalesced
        self.probed_now = []  # the buckets whose FiniteCheck reported in this pass
        ensure_step_hook()

    def begin(self):
        self.norms.clear()
        self.flags.clear()
        self.averaged.clear()
        self.probed_now.clear()
        _pending.discard(self.reducer)

    def stage(self, bucket, slot, array):
        """This rank's squared norm of the gradient ``array`` in ``slot`` of ``bucket`` (the
        values the reduction will read, just written)."""
        xp = get_array_module(array)
        norms = self.norms.get(bucket.index)
        if norms is None:
            norms = self.norms[bucket.index] = xp.zeros(len(bucket.indices), _norm_dtype(xp, array.dtype))
        norms[slot] = _squared_norm(xp, array)  # on a GPU: device work only, no synchronization

    def local(self, bucket, flag=None):
        """This rank's flag for ``bucket`` (from the norms of :meth:`stage`) written into
        ``flag`` (an array of one element, or a strided view of one per piece); returns it,
        a new one-element array where ``flag`` is None (None if nothing was staged)."""
        norms = self.norms.get(bucket.index)
        if norms is None and flag is None:
            return None
        if norms is not None:
            if flag is None:
                flag = get_array_module(norms).zeros(1, norms.dtype)
            flag[...] = ~get_array_module(norms).isfinite(norms.sum())
        else:
            flag[...] = 0  # no gradient staged (unused everywhere here): nothing non-finite
        return flag

    def probe(self, bucket, like):
        """The :class:`~dtrain.comm.finite_flags.FiniteCheck` to hand to ``bucket``'s
        ``all_reduce_coalesced`` (arrays like ``like``): the all-reduce takes this rank's
        norms and the flag itself (on the comm thread); :meth:`probed` collects them."""
        probe = self.probes.get(bucket.index)
        if (probe is None or probe.flag.dtype != like.dtype or type(probe.flag) is not type(like)
                or probe.count != len(bucket.indices)):  # the buckets were rebuilt
            probe = self.probes[bucket.index] = FiniteCheck(like, len(bucket.indices))
        probe.reset()
        return probe

    def probed(self, bucket):
        """``bucket``'s all-reduce (handed :meth:`probe`) is done: its reduced flag."""
        self.flags[bucket.index] = self.probes[bucket.index].flag
        self.probed_now.append(bucket)

    def reduced(self, bucket, flag):
        """``flag`` (the array :meth:`local` filled) now holds the reduction over the ranks."""
        self.flags[bucket.index] = flag

    def reduced_averages(self, bucket, averages):
        """A comm hook's averages for ``bucket`` (per slot): the decision is taken on them."""
        xp = get_array_module(averages[0])
        norms = self.averaged[bucket.index] = xp.zeros(len(averages), _norm_dtype(xp, averages[0].dtype))
        for k, a in enumerate(averages):
            norms[k] = _squared_norm(xp, a)
        self.flags[bucket.index] = ~xp.isfinite(norms.sum()).reshape(1)

    def verdict(self, step):
        """None when every reduced flag is clear; else the message naming the step, the
        lowest rank with a non-finite gradient and its first such parameter (the same on
        every rank: on this rare path the ranks all-gather what each found)."""
        if not self.flags:
            return None
        flags = list(self.flags.values())
        xp = get_array_module(flags[0])
        if xp is numpy:  # a few one-element arrays: looked at one by one (~10 us less than concatenating)
            if not any(f.any() for f in flags):
                return None
        elif not bool((xp.concatenate([f.reshape(-1) for f in flags]) != 0).any()):  # one host read per step
            return None
        reducer = self.reducer

        def averaged():  # no rank's own gradients were: the reduction made the NaN or inf
            if self.averaged:
                index, count, kind = self._first_nonfinite(self.averaged)
                return (f"step {step}: non-finite averaged gradient ({_KINDS[kind]}) in '{reducer.names[index]}' "
                        f"though every rank's own gradients were finite: the comm hook's reduction overflowed")
            bad = [i for i, p in enumerate(reducer.params)
                   if p.grad is not None and not bool(get_array_module(p.grad.array).isfinite(p.grad.array).all())]
            where = f" in '{reducer.names[_first(bad, reducer.order)]}'" if bad else ""
            return (f"step {step}: non-finite averaged gradient{where} though every rank's own gradients were "
                    f"finite: their sum overflowed")
        rank = dist.get_rank(reducer.group)
        found = {(rank, i): kind for i, kind in self._nonfinite(self.norms).items()}
        for bucket in self.probed_now:
            for (r, k), kind in self.probes[bucket.index].found(rank).items():
                found[(r, bucket.indices[k])] = kind
        return culprit_message(step, found, reducer.group, reducer.names, reducer.order, averaged)

    def act(self, message):
        """Skip (mark, log once from group rank 0) or raise, per the mode."""
        act(self.mode, message, self.reducer, self.reducer.group)

    def _nonfinite(self, norms_by_bucket):
        """``parameter index -> kind`` (1 NaN, 2 inf) of the non-finite entries of ``norms_by_bucket``."""
        bad = {}
        for b in self.reducer.buckets:
            norms = norms_by_bucket.get(b.index)
            if norms is None:
                continue
            norms = asnumpy(norms)
            for k in numpy.flatnonzero(~numpy.isfinite(norms)):
                bad[b.indices[k]] = 1 if numpy.isnan(norms[k]) else 2
        return bad

    def _first_nonfinite(self, norms_by_bucket):
        """``(parameter index, how many, kind)`` of the non-finite entries of ``norms_by_bucket``
        on this rank: the first in the order the gradients became ready; ``(-1, 0, 0)`` if none."""
        bad = self._nonfinite(norms_by_bucket)
        if not bad:
            return -1, 0, 0
        first = _first(bad, self.reducer.order)
        return first, len(bad), bad[first]



def _first(bad, order):
    """The index of ``bad`` that comes first in ``order`` (then the lowest)."""
    position = {i: k for k, i in enumerate(order)}
    return min(bad, key=lambda i: (position.get(i, len(position)), i))


def culprit_message(step, found, group, names, order, none_found):
    """The message naming the lowest rank of ``group`` with a non-finite gradient at ``step``,
    built alike on every rank (a collective, on the rare path: the ranks all-gather what each found).

    Args:
        found: ``(group rank, parameter index) -> kind`` (1 NaN, 2 inf): what this rank knows
            to be non-finite (its own gradients, or, through the shared-memory all-reduce,
            any rank's values in the part of the message it reduced).
        names: the parameters' names, by index.
        order: parameter indices, in the order their gradients became ready (the first in it is named).
        none_found: ``() -> message`` for when no rank found any (the reduction itself made them).
    """
    everyone = [None] * dist.get_world_size(group)
    if len(everyone) > 1:
        dist.all_gather_object(everyone, found, group=group)
    else:
        everyone[0] = found
    by_rank = {}
    for seen in everyone:
        for (r, i), kind in seen.items():
            bad = by_rank.setdefault(r, {})
            bad[i] = min(kind, bad.get(i, kind))  # NaN over inf
    if not by_rank:
        return none_found()

    def global_rank(r):
        return r if group is None else dist.get_global_rank(group, r)
    ranks = sorted(by_rank)
    rank = ranks[0]
    index = _first(by_rank[rank], order)
    count, kind = len(by_rank[rank]), by_rank[rank][index]
    more = f" and {count - 1} more of its parameters" if count > 1 else ""
    others = [global_rank(r) for r in ranks[1:]]
    also = f" (also on ranks {others})" if others else ""
    return (f"step {step}: non-finite gradient ({_KINDS[kind]}) on rank {global_rank(rank)} in "
            f"'{names[index]}'{more}{also}")


def act(mode, message, owner, group, who="DistributedDataParallel"):
    """Skip or raise, per ``mode``, the same on every rank: "raise" raises
    :class:`NonFiniteGradientError`; "skip" marks ``owner`` (anything with ``.params``: the next
    step of every optimizer holding any of them updates nothing) and logs from group rank 0.
    ``who``: the API named in the error (fully_shard reuses this)."""
    if mode == "raise":
        raise NonFiniteGradientError(f"{message}; {who}(nonfinite='raise') ends the job")
    _pending.add(owner)
    if dist.get_rank(group) == 0:
        log.warning(f"{message}; all ranks skip this step")


def clear_mark(owner):
    """A new synchronized backward of ``owner`` begins: its last skip mark no longer applies."""
    _pending.discard(owner)


def ensure_step_hook():
    """The global optimizer step pre-hook that skips marked steps, registered once."""
    global _hook_handle
    if _hook_handle is None:
        _hook_handle = register_optimizer_step_pre_hook(_skip_marked_step)


def _skip_marked_step(optimizer, args, kwargs):
    """The global optimizer step pre-hook: an optimizer holding any parameter of a reducer
    whose last backward was non-finite updates nothing (every .grad set to None first)."""
    if not _pending:
        return None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    held = {id(p) for p in params}
    if any(id(p) in held for reducer in list(_pending) for p in reducer.params):
        for p in params:
            p.grad = None
    return None
