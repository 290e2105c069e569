"""A DDP job for tests/test_timing.py, run by ``python -m dtrain.launch --nproc 2``: ``STEPS``
steps of a small MLP with SGD, batches from a DataLoader whose collate_fn sleeps
``SLOW_DATA_S`` seconds on rank ``SLOW_RANK`` (the planted straggler)."""
import os
import sys
import time

import dtrain
import dtrain.comm as dist
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.data import DataLoader, TensorDataset
from dtrain.data.collate import default_collate
from dtrain.parallel import DistributedDataParallel

STEPS = int(sys.argv[1])
dist.init_process_group()
rank = dist.get_rank()
slow = rank == int(os.environ.get("SLOW_RANK", "1"))
pause = float(os.environ.get("SLOW_DATA_S", "0.02"))


def collate(samples):
    if slow:
        time.sleep(pause)
    return default_collate(samples)


dtrain.manual_seed(0)
data = TensorDataset(dtrain.randn(STEPS * 8, 32), dtrain.randint(0, 4, (STEPS * 8,)))
model = DistributedDataParallel(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)))
opt = dtrain.optim.SGD(model.parameters(), lr=0.01)
for x, y in DataLoader(data, batch_size=8, collate_fn=collate):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
