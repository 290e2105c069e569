"""The rank side of test_resume_elastic's data job: train one epoch of a small model under
DDP + ZeroRedundancyOptimizer from a DataLoader (2 worker threads, prefetching) over a
shuffled DistributedSampler; with ``stop K`` save a checkpoint (model, optimizer, loader)
after K batches and leave; with ``resume`` load it, on any number of ranks, and finish the
epoch. Each rank writes ``<phase>-<rank>.json``: the sample indices it trained on, in order,
and (resume) whether the resharded optimizer state, consolidated again, equals the saved one.

    mpiexec -n 4 python tests/rank_resume_data.py DIR stop 3
    mpiexec -n 3 python tests/rank_resume_data.py DIR resume
"""
import json
import os
import sys

import numpy as np

import dtrain
import dtrain.distributed as dist
import dtrain.nn as nn
from dtrain.checkpoint import CheckpointManager
from dtrain.data import DataLoader, DistributedSampler, TensorDataset
from dtrain.distributed.optim import ZeroRedundancyOptimizer
from dtrain.nn.parallel import DistributedDataParallel

SAMPLES, EPOCH = 103, 2

folder, phase = sys.argv[1], sys.argv[2]
stop = int(sys.argv[3]) if phase == "stop" else None
dist.init_process_group()
rank = dist.get_rank()
data = TensorDataset(dtrain.randn(SAMPLES, 4, generator=dtrain.Generator().manual_seed(1)), dtrain.arange(SAMPLES))
sampler = DistributedSampler(data, shuffle=True, seed=7)
loader = DataLoader(data, batch_size=4, sampler=sampler, num_workers=2)
dtrain.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
net = DistributedDataParallel(model)
opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=dtrain.optim.Adam, lr=0.01)
manager = CheckpointManager(folder, keep_last=1)
report = {"seen": []}
if phase == "resume":
    info = manager.load(model, opt, data=loader)
    assert info is not None, f"no checkpoint in {folder}"
    report["saved_world_size"] = info["world_size"]
    opt.consolidate_state_dict(to=0)
    if rank == 0:
        saved = dtrain.load(info["path"])["optimizer"]["state"]
        mine = opt.state_dict()["state"]
        report["optimizer_state_equal"] = sorted(saved) == sorted(mine) and all(
            np.array_equal(np.asarray(saved[k][name]), np.asarray(mine[k][name])) for k in saved for name in saved[k])
sampler.set_epoch(EPOCH)  # the loaded epoch: the pass goes on where the checkpoint was taken
for i, (x, index) in enumerate(loader):
    report["seen"] += index.tolist()
    opt.zero_grad()
    net(x).square().mean().backward()
    opt.step()
    if stop is not None and i + 1 == stop:
        manager.save(i + 1, model, opt, epoch=EPOCH, data=loader)
        break
with open(os.path.join(folder, f"{phase}-{rank}.json"), "w") as f:
    json.dump(report, f)
dist.destroy_process_group()
