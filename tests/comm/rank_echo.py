"""Rank script for test_comm_launch.py: prints, as JSON, what a script run by
``python -m dtrain.launch`` sees (name, argv, sys.path[0], its place in the job)."""
import json
import os
import sys

import dtrain.comm as dist

dist.init_process_group()  # already done by the launcher: a no-op there
total = [None] * dist.get_world_size()
dist.all_gather_object(total, dist.get_rank())
print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0], "rank": dist.get_rank(),
                  "world": dist.get_world_size(), "local_rank": dist.get_local_rank(), "gathered": total,
                  "pid": os.getpid()}), flush=True)
if "--sleep" in sys.argv:
    print("ready", flush=True)
    dist.barrier()
    import time
    time.sleep(60)
