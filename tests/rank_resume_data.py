"""The rank side of test_resume_elastic's data jobs: train one epoch of a small model under
DDP + ZeroRedundancyOptimizer (or, with ``fsdp``, fully_shard + Adam) from a DataLoader (2
worker threads, prefetching) over a shuffled DistributedSampler; with ``stop K`` save a
checkpoint (CheckpointManager: model, optimizer, loader) after K batches and leave; with
``resume`` load it, on any number of ranks, and finish the epoch. Each rank writes
``<phase>-<rank>.json``: the sample indices it trained on, in order, and (resume) whether
the resharded model and optimizer state, gathered again, equal the saved ones.

    mpiexec -n 4 python tests/rank_resume_data.py DIR stop 3 [fsdp]
    mpiexec -n 3 python tests/rank_resume_data.py DIR resume [fsdp]
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
from dtrain.distributed.checkpoint import StateDictOptions, get_optimizer_state_dict
from dtrain.distributed.fsdp import fully_shard
from dtrain.distributed.optim import ZeroRedundancyOptimizer
from dtrain.nn.parallel import DistributedDataParallel

SAMPLES, EPOCH = 103, 2

folder, phase = sys.argv[1], sys.argv[2]
stop = int(sys.argv[3]) if phase == "stop" else None
fsdp = sys.argv[-1] == "fsdp"
dist.init_process_group()
rank = dist.get_rank()
data = TensorDataset(dtrain.randn(SAMPLES, 4, generator=dtrain.Generator().manual_seed(1)), dtrain.arange(SAMPLES))
sampler = DistributedSampler(data, shuffle=True, seed=7)
loader = DataLoader(data, batch_size=4, sampler=sampler, num_workers=2)
dtrain.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
if fsdp:
    net = fully_shard(model)
    opt = dtrain.optim.Adam(model.parameters(), lr=0.01)
else:
    net = DistributedDataParallel(model)
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=dtrain.optim.Adam, lr=0.01)


def same(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and sorted(a) == sorted(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


manager = CheckpointManager(folder, keep_last=1)
report = {"seen": []}
if phase == "resume":
    info = manager.load(model, opt, data=loader)
    assert info is not None, f"no checkpoint in {folder}"
    report["saved_world_size"] = info["world_size"]
    if fsdp:  # gathered whole again (collective), by parameter name
        mine = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        opt.consolidate_state_dict(to=0)
        mine = opt.state_dict() if rank == 0 else None
    weights = model.state_dict()  # fully_shard's gathers: collective
    if rank == 0:
        saved = dtrain.load(info["path"])
        report["optimizer_state_equal"] = same(saved["optimizer"]["state"], mine["state"])
        report["model_equal"] = same(saved["model"], dict(weights))
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
