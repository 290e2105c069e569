"""Run a training script (argv[1:]) whose rank R sends itself SIGTERM at the step boundary
of step S, with DTRAIN_SIGTERM_AT="S:R": a preemption that lands on a chosen step, so the
tests can stop a run exactly at step 17. The script's own SIGTERM handling (dtrain.preemption)
does the rest: every rank saves at that step and exits 75."""
import os
import runpy
import signal
import sys
import time

import dtrain.distributed as dist
from dtrain import preemption

STEP, RANK = map(int, os.environ["DTRAIN_SIGTERM_AT"].split(":"))
real_should_stop, calls = preemption.PreemptionHandler.should_stop, [0]


def should_stop(self):
    calls[0] += 1  # the training loop asks once per step, after the step
    if calls[0] == STEP and dist.get_rank() == RANK:
        signal.raise_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not self.requested and time.monotonic() < deadline:  # the Python-level handler runs soon after
            time.sleep(0.001)
    return real_should_stop(self)


preemption.PreemptionHandler.should_stop = should_stop
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
