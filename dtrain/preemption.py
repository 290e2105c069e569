"""Preemption: turn SIGTERM into "save a checkpoint at the next step boundary, then exit".

A scheduler (SLURM, Kubernetes, a spot-instance reclaim) or ``python -m dtrain.launch``
(which forwards SIGTERM to every rank) asks a job to stop with SIGTERM, then kills it a
grace period later. :func:`handler` catches the signal and only records it; the training
loop asks :meth:`PreemptionHandler.should_stop` at each step boundary, saves a checkpoint
and leaves through :func:`exit_preempted`, whose exit code :data:`EXIT_PREEMPTED` (75,
``EX_TEMPFAIL`` of sysexits.h: "try again later") tells a restart script that the run was
stopped on request, with its state saved, and is to be resumed (``--resume auto``), not
debugged. Failures keep their own codes: 1 for an exception, 128 + N for a signal N
(143 for an unhandled SIGTERM, 137 for SIGKILL). ``python -m dtrain.launch --nproc N``,
when it was signalled itself, exits 128 + the signal (143) once its ranks are done.

Under several ranks, ``should_stop`` is a collective (one all-reduce of one number per
step): a signal that reached any rank stops every rank at the same step, so the ranks
save and exit together and no rank is left waiting in a collective of the next step.

The checkpoint may be resumed on another number of ranks: with the loader's state in it
(``data=loader``) the epoch goes on with the next sample, and ``global_batch`` lets the
resumed job keep the global batch (see docs/reproducibility.md).

Example:
    >>> with dtrain.preemption.handler() as stop:
    ...     for step, batch in enumerate(loader, start):
    ...         train_step(batch)
    ...         if stop.should_stop():
    ...             manager.save(step, model=model, optimizer=opt, data=loader, global_batch=256)
    ...             dtrain.preemption.exit_preempted(f"preempted after step {step}")
"""
import os
import signal
import sys
import threading

import numpy

from .comm.launch_status import EXIT_PREEMPTED, mark_preempted


class PreemptionHandler:
    """Records the stop signals it is installed for; see :func:`handler`.

    Attributes:
        requested: True once this process received one of the signals.
        signum: the number of the first signal received, or None.
    """

    def __init__(self, signals=(signal.SIGTERM,), group=None):
        self.signals = tuple(signals)
        if not self.signals:
            raise ValueError("preemption.handler: signals must name at least one signal, got none")
        for s in self.signals:
            if not isinstance(s, int) or s not in signal.valid_signals():
                raise ValueError(f"preemption.handler: {s!r} is not a valid signal number "
                                 f"(use signal.SIGTERM, signal.SIGUSR1, ...)")
            if s in (signal.SIGKILL, getattr(signal, "SIGSTOP", None)):
                raise ValueError(f"preemption.handler: {signal.Signals(s).name} cannot be caught")
        self.group = group
        self.requested = False
        self.signum = None
        self._previous = None

    def _record(self, signum, frame):
        if not self.requested:
            self.requested, self.signum = True, signum

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("preemption.handler: signal handlers can only be installed from the main thread; "
                               "enter the handler in the main thread and poll it from the training loop")
        self._previous = {s: signal.signal(s, self._record) for s in self.signals}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = None
        return False

    def should_stop(self):
        """Whether training must stop now; call it at every step boundary, on every rank.

        Under an initialized process group of more than one rank this is a collective (a
        MAX all-reduce of this rank's flag over ``group``): every rank gets True as soon
        as one rank got the signal, so all stop after the same step.

        Returns:
            bool, the same on every rank.
        """
        from . import comm
        if not comm.is_initialized() or comm.get_world_size(self.group) == 1:
            return self.requested
        flag = numpy.array([1.0 if self.requested else 0.0])
        comm.all_reduce(flag, op=comm.ReduceOp.MAX, group=self.group)
        if flag[0] and not self.requested:
            self.requested = True  # another rank was signalled: stop with it
        return bool(flag[0])


def handler(signals=(signal.SIGTERM,), group=None):
    """A context manager that records SIGTERM (or ``signals``) instead of dying at once.

    Inside the ``with`` block, the signals only set ``requested``; on leaving it the
    previous handlers come back. Install it in the main thread.

    Args:
        signals: signal numbers to catch (default: SIGTERM only; Ctrl-C keeps raising
            KeyboardInterrupt).
        group: the process group over which :meth:`PreemptionHandler.should_stop` agrees
            (default: the world).

    Returns:
        a :class:`PreemptionHandler` (use it in a ``with`` statement).

    Example:
        >>> with dtrain.preemption.handler() as stop:
        ...     while training:
        ...         step()
        ...         if stop.should_stop():
        ...             save(); dtrain.preemption.exit_preempted()
    """
    return PreemptionHandler(signals, group)


def exit_preempted(message="preempted: checkpoint saved, exiting"):
    """Leave the process with :data:`EXIT_PREEMPTED` after a clean shutdown.

    Prints ``message`` to stderr, leaves the process group if one is initialized (so the
    launcher does not take the exit for a failed rank and abort the job), then raises
    ``SystemExit(EXIT_PREEMPTED)``. Call it on every rank, after the checkpoint is saved:
    ``python -m dtrain.launch --nproc N`` counts exit code 75 as a preemption only from a
    rank that left through here (any other exit with 75 is a failure).

    Args:
        message: what to print (None: nothing).

    Example:
        >>> dtrain.preemption.exit_preempted(f"preempted at step {step}; resume with --resume auto")
    """
    from . import comm
    mark_preempted(os.getpid())  # the launcher counts exit code 75 as a preemption only from this path
    if message:
        sys.stdout.flush()
        sys.stderr.write(f"{message}\n")  # one write: lines of several ranks relayed by mpiexec stay whole
        sys.stderr.flush()
    if comm.is_initialized():
        comm.destroy_process_group()
    raise SystemExit(EXIT_PREEMPTED)
