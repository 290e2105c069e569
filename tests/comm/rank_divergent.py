"""Rank script for test_hang_forensics.py: the ranks' collectives diverge and the job hangs
(run with a short DTRAIN_TIMEOUT and DTRAIN_CHECK_EVERY=0, so that the sampled cross-rank
check does not catch the divergence first). The odd rank is rank 2 (rank 1 at 2 ranks).

    barrier   after two agreeing all_reduces, the odd rank calls barrier() while the others all_reduce
    skip      in a loop of all_reduce + barrier, the odd rank skips one all_reduce

The test finds the call sites by the ``# site:`` comments, and times the report from the
moment the ranks diverge (each prints it), not from the job's start.
"""
import sys
import time

import numpy as np

import dtrain.comm as dist

dist.init_process_group()
rank, size = dist.get_rank(), dist.get_world_size()
odd = 2 if size > 2 else 1
x = np.ones(4, np.float32)
dist.all_reduce(x)  # site: warm-up
dist.all_reduce(x)  # site: warm-up 2
print(f"rank {rank} diverges at {time.time():.3f}", flush=True)
if sys.argv[1] == "barrier":
    if rank == odd:
        dist.barrier()  # site: odd barrier
    else:
        dist.all_reduce(x)  # site: all_reduce
else:
    for step in range(3):
        if not (rank == odd and step == 1):
            dist.all_reduce(x)  # site: loop all_reduce
        dist.barrier()  # site: loop barrier
print(f"unreachable: rank {rank} got past the divergent collectives", flush=True)
