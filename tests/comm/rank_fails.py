"""Rank script: rank 1 raises while the other ranks wait in a collective that can never
complete; the whole job must end non-zero with "rank 1 failed" (test_comm_launch.py)."""
import sys

import numpy as np

import dtrain.comm as dist

dist.init_process_group()
if dist.get_rank() == 1:
    if "--exit" in sys.argv:
        sys.exit(3)
    if "--exit-text" in sys.argv:  # code 1, and Python would print the text at exit (after the abort)
        sys.exit("bad setting on purpose")
    if "--raise-exit-text" in sys.argv:  # the same without sys.exit (argparse-free scripts do this)
        raise SystemExit("bad setting on purpose")
    raise RuntimeError("boom on purpose")
dist.all_reduce(np.ones(4))  # never completes: rank 1 is gone
print("unreachable: the all_reduce completed without rank 1", flush=True)
