"""Rank script for test_host_syncs.py (issue 13, item 6): DDP's buffer broadcast in forward.

A model with 2 BatchNorm layers (6 buffers: float32 running statistics, int64 batch counts),
each rank's buffers different; one forward in eval mode must leave every rank with rank 0's
buffers, in as many backend broadcasts as the buffers have dtypes (coalesced per dtype), not
one per buffer. ``--backend mpi`` (CPU) or ``nccl`` (rank r on GPU r). Prints
``rank R: broadcasts per forward N, buffers equal rank 0's``.
"""
import sys

import numpy as np

import dtrain
import dtrain.distributed as dist
from dtrain import nn
from dtrain.comm.process_group import ProcessGroup

backend = sys.argv[sys.argv.index("--backend") + 1]
dist.init_process_group(backend=backend)
rank = dist.get_rank()
device = "cpu"
if backend == "nccl":
    dtrain.cuda.set_device(rank % dtrain.cuda.device_count())
    device = f"cuda:{rank % dtrain.cuda.device_count()}"

calls = [0]


def counting(method):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        return method(*args, **kwargs)
    return wrapper


for cls in ProcessGroup.__subclasses__():  # the backends' primitive, under any coalescing layer above it
    if "_broadcast" in vars(cls):
        cls._broadcast = counting(cls._broadcast)

model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2)).to(device)
ddp = nn.parallel.DistributedDataParallel(model)
with dtrain.no_grad():
    for k, b in enumerate(model.buffers()):
        b.copy_(dtrain.full(b.shape, 10 * rank + k, dtype=b.dtype, device=device))
model.eval()
x = dtrain.ones(5, 3, device=device)
calls[0] = 0
ddp(x)
per_forward = calls[0]
got = [b.cpu().numpy() for b in model.buffers()]
want = [np.full(b.shape, k, dtype=g.dtype) for k, (b, g) in enumerate(zip(model.buffers(), got))]
same = all(np.array_equal(g, w) for g, w in zip(got, want))
print(f"rank {rank}: broadcasts per forward {per_forward}, buffers {'equal' if same else 'DIFFER from'} rank 0's",
      flush=True)
dist.destroy_process_group()
