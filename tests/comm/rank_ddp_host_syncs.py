"""Rank script for test_host_syncs.py, on the CuPy emulation: host synchronisations in a DDP
training step over NCCL (rank r on GPU r) of a model with BatchNorm and cross-entropy.
Prints ``rank R: nonfinite=MODE: host syncs per step N`` for DDP(nonfinite="ignore") and the
default "skip" (the step: forward, backward with the gradient
all-reduce, optimizer step; the user's ``loss.item()`` after it is not counted) and the
events, if any. (``emulation`` comes from tests/, on the PYTHONPATH comm_helpers.clean_env gives.)"""
import dtrain
import dtrain.distributed as dist
import dtrain.nn.functional as F
from dtrain import nn
from emulation import syncs

dist.init_process_group(backend="nccl")
rank = dist.get_rank()
dtrain.cuda.set_device(rank)
dtrain.manual_seed(rank)
for mode in ("ignore", "skip"):
    # nonfinite="skip" (the default) reads its flag, a few bytes, once per step: knowing whether to skip
    # the optimizer step exactly needs the host to know; "ignore" leaves the step free of reads
    dtrain.manual_seed(rank)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)).cuda()
    ddp = nn.parallel.DistributedDataParallel(model, nonfinite=mode)
    opt = dtrain.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    x, y = dtrain.randn(6, 8, device="cuda"), dtrain.randint(0, 4, (6,), device="cuda")
    counts = []
    for _ in range(3):
        syncs.reset()
        loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        counts.append((syncs.count, list(syncs.events)))
        loss.item()
    print(f"rank {rank}: nonfinite={mode}: host syncs per step {max(c for c, _ in counts)} "
          f"{[e for _, e in counts if e][:1]}", flush=True)
dist.destroy_process_group()
