"""Rank script: rank 1 raises while the other ranks wait in a collective that can never
complete; the whole job must end non-zero with "rank 1 failed" (test_comm_launch.py)."""
import sys

import numpy as np

import dtrain.comm as dist

dist.init_process_group()
if dist.get_rank() == 1:
    if "--exit" in sys.argv:
        sys.exit(3)
    raise RuntimeError("boom on purpose")
dist.all_reduce(np.ones(4))  # never completes: rank 1 is gone
print("unreachable: the all_reduce completed without rank 1", flush=True)
