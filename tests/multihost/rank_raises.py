"""Rank script: the last rank raises after the first all-reduce; the others keep all-reducing
for up to a minute. test_failed_rank_host.py asserts the job ends within seconds and the
report names the rank and its host."""
import time

import numpy as np

import dtrain.comm as dist

dist.init_process_group("mpi")
a = np.ones(10)
dist.all_reduce(a)
if dist.get_rank() == dist.get_world_size() - 1:
    raise ValueError("planted by rank_raises.py")
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    dist.all_reduce(a)
    time.sleep(0.05)
