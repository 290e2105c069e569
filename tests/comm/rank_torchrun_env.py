"""Rank script for test_torchrun_habits.py: prints, as JSON, the torchrun variables the launcher
set, with the rank and size the process group reports (the script inits as torchrun scripts do)."""
import json
import os

import dtrain.distributed as dist

dist.init_process_group("gloo", init_method="env://")
names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
print(json.dumps({"env": {name: os.environ.get(name) for name in names}, "rank": dist.get_rank(),
                  "world": dist.get_world_size(), "backend": dist.get_backend(),
                  "launched": dist.is_torchelastic_launched()}), flush=True)
dist.destroy_process_group()
