"""Rank script for test_comm_faults.py: after one agreeing barrier, rank 1 misbehaves in
the way argv[1] names while rank 0 waits in an all_reduce that cannot complete.

    raise     rank 1 raises ValueError("boom")
    exit3     rank 1 calls sys.exit(3)
    sigkill   rank 1 is killed by SIGKILL
    missing   rank 1 never calls the all_reduce (it sleeps): rank 0's blocking all_reduce times out
    mismatch  rank 1 calls barrier() instead (run with DTRAIN_DEBUG=1)
    timeout   rank 1 is 60 s late: rank 0's async all_reduce times out in Work.wait() (DDP's path)
    recv      rank 1 never sends: rank 0's blocking recv times out
"""
import os
import signal
import sys
import time

import numpy as np

import dtrain.comm as dist

mode = sys.argv[1]
dist.init_process_group()
dist.barrier()
x = np.ones(4, np.float32)
if dist.get_rank() == 1:
    if mode == "raise":
        raise ValueError("boom")
    if mode == "exit3":
        sys.exit(3)
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "mismatch":
        dist.barrier()
    else:
        time.sleep(60)  # missing, timeout: the job must end long before this
        dist.all_reduce(x)
elif mode == "recv":
    dist.recv(x, src=1)
elif mode == "timeout":
    dist.all_reduce(x, async_op=True).wait()
else:
    dist.all_reduce(x)
print(f"unreachable: rank {dist.get_rank()} got past the collective", flush=True)
