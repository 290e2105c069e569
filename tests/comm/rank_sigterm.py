"""Rank script for test_comm_launch.py: a preemptible job. On SIGTERM each rank "saves a
checkpoint" (prints), then exits 0; with --ignore it ignores SIGTERM and must be killed."""
import signal
import sys
import time

import dtrain.comm as dist

dist.init_process_group()
rank = dist.get_rank()


def on_term(signum, frame):
    time.sleep(0.5)  # finishing the step
    print(f"rank {rank} saved", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if "--ignore" in sys.argv else on_term)
dist.barrier()
print(f"rank {rank} ready", flush=True)
time.sleep(60)
