"""Whether every rank of a group calls the same collective: in debug mode before every call,
otherwise (on by default, MPI groups) before a sample of the calls.

Ranks that disagree (float32 on one, int32 on another; SUM against MAX; broadcast roots or
sizes that differ) get silently wrong results from MPI, or hang, or crash it. The check
compares each rank's description of the call (``all_reduce(float32[4], op=MAX)``):

* **debug mode** (``DTRAIN_DEBUG=1``): every call; every rank's description travels to every
  rank (two small all-gathers).
* **the sampled check** (debug mode off): calls number 1, 2, 4, ... below ``N``, then every
  ``N``-th call of each group (``DTRAIN_CHECK_EVERY=N``, default 64; 0 turns it off). A
  sampled call costs one all-reduce (MAX) of two int64: the CRC-32 of the description and its
  negation, equal to this rank's own on every rank only if every rank's hash is the same. Only
  when they differ do the descriptions travel, as in debug mode, to name each side.

A check is itself a collective: every rank must check the same calls, or a check would meet
a peer's real collective. So the choice depends only on the call's number in its group, which
is the same on every rank as long as the ranks agree (the collectives are issued in program
order), and ``N`` is rank 0's value on every rank (shared when the world group is made). A
check's exchanges run on the caller's thread and carry the number of the call they check, so
a check stuck on a peer is reported as that call's.

On a mismatch every rank raises the same :class:`DistError`: ``collective mismatch (sampled
check of call #64 on ranks [0, 1]; ...): rank 0 called all_reduce(float32[4]); rank 1
called all_reduce(int32[4]) (call sites: rank 0 train.py:12; rank 1 train.py:12)``.
"""
import zlib

import numpy

from . import forensics
from .env import count_from_env
from .errors import DistError

CHECK_ENV = "DTRAIN_CHECK_EVERY"
DEFAULT_EVERY = 64


def check_interval():
    """``N`` of the sampled check, from ``DTRAIN_CHECK_EVERY`` (default 64; 0: off)."""
    return count_from_env(CHECK_ENV, DEFAULT_EVERY,
                          f"the cross-rank check of collective calls runs on every N-th call of each group "
                          f"(default {DEFAULT_EVERY}); 0 turns it off (DTRAIN_DEBUG=1 checks every call)")


def next_check(seq, every):
    """The number of the call to check after call #``seq``: twice it below ``every`` (the
    first calls of a program catch a steady mismatch at once), then the next multiple of it."""
    if 2 * seq < every:
        return 2 * seq
    return (seq // every + 1) * every


def check_call(group, label, every_call, async_op=False):
    """Check that every rank of ``group`` is making the call ``label`` now; raise DistError
    naming each rank's call and call site if not.

    A blocking call is checked here, on the caller's thread. An async call's check runs on
    its group's comm thread, first in the call's own task (the group's :meth:`cross_check`
    leaves it there; a mismatch is then raised by ``Work.wait()``): checked here, the async
    call would become a blocking meeting point of the group, and a program that lets a peer
    reach the call only after another group's collective has finished would deadlock.

    Args:
        group: the group of the call (its host group numbers and carries the exchanges).
        label: this rank's description of the call.
        every_call: debug mode (the descriptions always travel) rather than the sampled check.
        async_op: the call is asynchronous.
    """
    host = group._group_for_host()
    site = forensics.call_site()
    # a device group's calls run elsewhere than its host's: their checks run here
    calls = host.cross_check(label, site, every_call, async_op and host is group)
    if calls is not None:
        raise DistError(mismatch(group, calls, every_call, getattr(host, "seq", "?")))


def mismatch(group, calls, every_call, seq):
    """The error message for every rank's ``(call, call site)`` in ``calls`` (group-rank order)."""
    by_call = {}
    for rank, (call, _) in zip(group.ranks, calls):
        by_call.setdefault(call, []).append(rank)
    sides = "; ".join(f"rank {ranks[0]} called {call}" if len(ranks) == 1 else
                      f"ranks {', '.join(map(str, ranks))} called {call}" for call, ranks in by_call.items())
    sites = "; ".join(f"rank {rank} {site}" for rank, (_, site) in zip(group.ranks, calls))
    how = "debug mode" if every_call else (
        f"sampled check of call #{seq} on ranks {group.ranks}; {CHECK_ENV}=N checks every N-th call, "
        f"DTRAIN_DEBUG=1 every call")
    return f"collective mismatch ({how}): {sides} (call sites: {sites})"


def hash_pair(label):
    """``[h, -h]`` for ``label``'s CRC-32 ``h``: all-reduced with MAX, it comes back unchanged
    only if every rank's ``h`` is this one (the max of h and the max of -h, i.e. minus the min)."""
    h = zlib.crc32(label.encode())
    return numpy.array([h, -h], numpy.int64)
