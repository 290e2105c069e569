"""Rank script for test_comm_gpu.py's NCCL device tests.

``bind``: prints this rank's JSON record (rank, local rank, backend, current device, the
NCCL group's device) after one all_reduce on its GPU. ``hang``: with a 2 s timeout, rank 0
calls an all_reduce on its GPU that rank 1 never calls (rank 1 sleeps): the watchdog must
abort the communicator and end the job, naming the operation, its number and the ranks."""
import json
import sys
import time

import cupy

import dtrain.comm as dist

mode = sys.argv[1]
dist.init_process_group(timeout=2 if mode == "hang" else None)
rank = dist.get_rank()
group = dist.group.WORLD
device = cupy.cuda.Device().id
x = cupy.full(4, rank + 1, cupy.float32)
dist.all_reduce(x)
if mode == "bind":
    n = dist.get_world_size()
    assert float(x[0]) == n * (n + 1) / 2, x
    print(json.dumps({"rank": rank, "local_rank": dist.get_local_rank(), "backend": dist.get_backend(),
                      "device": device, "group_device": group.device}), flush=True)
    dist.destroy_process_group()
elif rank == 0:
    dist.all_reduce(x)
    float(x[0])  # a host sync on the stuck stream: must not hang once the watchdog fired
    print("rank 0: the stuck all_reduce finished", flush=True)
else:
    time.sleep(60)
