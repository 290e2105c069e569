"""Rank script for test_comm_collectives.py, run with DTRAIN_DISTRIBUTED_DEBUG=DETAIL: ranks
call collectives that disagree, and every rank must get an error naming both calls."""
import numpy as np

import dtrain.comm as dist

dist.init_process_group()
rank = dist.get_rank()
for call in (lambda: dist.all_reduce(np.ones(10 + 10 * rank)),  # shapes differ
             lambda: dist.broadcast(np.ones(3, np.float32 if rank else np.float64)),  # dtypes differ
             lambda: dist.barrier() if rank else dist.all_reduce(np.ones(1))):  # operations differ
    try:
        call()
    except dist.DistError as e:
        print(f"rank {rank}: {e}", flush=True)
dist.all_reduce(np.ones(4))  # agreeing calls still run
dist.destroy_process_group()
