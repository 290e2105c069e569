"""Rank script for test_torchrun_habits.py, run under a plain ``mpiexec -n 2``: the ways PyTorch
scripts call init_process_group, printed as JSON by every rank."""
import json
import os

import dtrain.distributed as dist

rank, world_size = int(os.environ["PMI_RANK"]), int(os.environ["PMI_SIZE"])
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29500", rank=rank, world_size=world_size)
seen = {"rank": dist.get_rank(), "world": dist.get_world_size(), "backend": dist.get_backend()}
dist.init_process_group(backend=dist.Backend.GLOO, rank=rank)  # the same settings: nothing happens
try:
    dist.init_process_group("mpi", timeout=7)
except dist.DistError as e:
    seen["other_settings"] = str(e)
gathered = [None] * world_size
dist.all_gather_object(gathered, rank)
seen["gathered"] = gathered
dist.destroy_process_group()
seen["after_destroy"] = dist.is_initialized()
dist.init_process_group()  # allowed again after destroy
seen["again"] = dist.get_world_size()
dist.destroy_process_group()
print(json.dumps(seen), flush=True)
