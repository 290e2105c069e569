"""Stragglers: the rank that is consistently slower than the others, and in which phase.

Every ``DTRAIN_STRAGGLER_STEPS`` synchronized backward passes (default 100; 0 turns it off),
each rank puts its phase times since the last gather (:mod:`dtrain.timing`: data-wait,
forward, backward, comm-wait, optimizer, and the window's wall time) in its row of a small
``world x 6`` float64 matrix, and DDP's Reducer sums it across the ranks right after the
pass's last bucket, on the same comm thread, waited for with the buckets: no extra sync
point, one more tiny all-reduce every N steps. Rank 0 then compares each rank's phase with
the other ranks' median and logs (logger ``dtrain.stragglers``, WARNING) each phase that is
both ``SLOWER`` (20%) above it and more than ``SHARE`` (5%) of the step:

    rank 3: +38% data-wait over the last 200 steps (41.2 ms/step; the other ranks' median 29.9 ms/step)

comm-wait is shown (logger INFO, the whole table) but never blamed: the ranks that wait longest
for communication are the ones waiting for the straggler.
"""
import logging
import statistics
import time

from .. import comm as dist
from ..tensor.backend import asnumpy, get_array_module
from ..comm.env import count_from_env
from ..timing import PHASES, totals_list

EVERY_ENV = "DTRAIN_STRAGGLER_STEPS"
DEFAULT_EVERY = 100
SLOWER = 0.2  # a phase this much (relative) above the other ranks' median ...
SHARE = 0.05  # ... and by more than this share of the step, is a straggler's
BLAMED = tuple(p for p in PHASES if p != "comm-wait")
logger = logging.getLogger("dtrain.stragglers")


def straggler_interval():
    """The gather interval in synchronized steps, from ``DTRAIN_STRAGGLER_STEPS`` (0: off).

    Raises:
        ValueError: not an integer >= 0 (the variable and its value quoted).
    """
    return count_from_env(EVERY_ENV, DEFAULT_EVERY,
                          f"steps between straggler checks (default {DEFAULT_EVERY}); 0 turns them off")


def find_stragglers(table, steps, slower=SLOWER, share=SHARE):
    """The slow phases of a gathered table.

    Args:
        table: per rank, the seconds of each phase of :data:`PHASES` over the window, then
            the window's wall-clock seconds.
        steps: the steps in the window.

    Returns:
        a list of ``(rank, phase, seconds per step, the other ranks' median per step)`` for
        each phase of a rank more than ``slower`` above the others' median and more than
        ``share`` of the (median) step.

    Example:
        >>> find_stragglers([[0.1, 1, 1, 0.5, 0.1, 3], [0.9, 1, 1, 0.0, 0.1, 3]], steps=10)
        [(1, 'data-wait', 0.09, 0.01)]
    """
    step = statistics.median(row[-1] for row in table) / steps
    found = []
    for k, name in enumerate(PHASES):
        if name not in BLAMED:
            continue
        for r, row in enumerate(table):
            others = statistics.median(o[k] for i, o in enumerate(table) if i != r)
            excess = row[k] - others
            if excess > slower * others and excess / steps > share * step:
                found.append((r, name, row[k] / steps, others / steps))
    return found


def describe(rank, name, mine, others, steps):
    """The log line of one straggling phase (times in seconds per step)."""
    more = f"+{100 * (mine - others) / others:.0f}%" if others > 0 else "all the"
    return (f"rank {rank}: {more} {name} over the last {steps} steps ({mine * 1e3:.1f} ms/step; the other ranks' "
            f"median {others * 1e3:.1f} ms/step)")


class StragglerWatch:
    """One DDP Reducer's gather of the ranks' phase times (see the module docstring).

    Args:
        group: the Reducer's process group (None: the default group).
    """

    def __init__(self, group=None):
        self.group = group
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.every = straggler_interval()
        self.steps, self.window = 0, 0  # synchronized passes: in all, and since the last gather
        self.base, self.start = totals_list(), time.perf_counter()
        self.pending = None  # (the matrix, its Work) between launch and finish
        self.last = None  # rank 0: the last gather's find_stragglers result

    def launch(self, like):
        """After a synchronized pass's last bucket, on every rank: every ``every`` passes,
        start the all-reduce of this window's times (``like``: an array of the buckets'
        module and device)."""
        self.steps += 1
        self.window += 1
        if self.world == 1 or not self.every or self.steps % self.every:
            return
        now, t = totals_list(), time.perf_counter()
        row = [a - b for a, b in zip(now, self.base)] + [t - self.start]
        self.base, self.start = now, t
        xp = get_array_module(like)
        table = xp.zeros((self.world, len(row)), dtype=xp.float64)
        table[self.rank] = xp.asarray(row, dtype=xp.float64)
        self.pending = table, dist.all_reduce(table, group=self.group, async_op=True), self.window
        self.window = 0

    def finish(self):
        """Wait for the gather (if one was started) and, on rank 0, log the stragglers."""
        if self.pending is None:
            return
        table, work, steps = self.pending
        self.pending = None
        work.wait()
        if self.rank != 0:
            return
        table = asnumpy(table).tolist()
        self.last = find_stragglers(table, steps)
        if logger.isEnabledFor(logging.INFO):
            header = " ".join(f"{p:>10}" for p in PHASES)
            rows = "\n".join(f"rank {r:<4} " + " ".join(f"{v * 1e3 / steps:10.2f}" for v in row[:-1])
                             for r, row in enumerate(table))
            logger.info(f"ms per step over the last {steps} steps:\n          {header}\n{rows}")
        for found in self.last:
            logger.warning(describe(*found, steps))
