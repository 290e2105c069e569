"""Script for test_multiprocessing.py, run as ``python spawn_jobs.py MODE ...`` from a plain
process, as PyTorch's DDP tutorial runs its spawn script.

tutorial N OUT   the tutorial's demo_basic at N ranks: each rank writes OUT/rank<R>.json;
                 then a join=False spawn of 1 process; prints JSON of what the parent saw
failures         a rank raising, a rank exiting 3, a rank killed by SIGKILL and a collective
                 timing out, at 2 ranks each; prints JSON of each ProcessException
alone            a single process raising, then one killed by SIGKILL
"""
import json
import os
import signal
import sys

import numpy as np

import dtrain
import dtrain.distributed as dist
import dtrain.multiprocessing as mp
import dtrain.nn as nn
import dtrain.optim as optim
from dtrain.nn.parallel import DistributedDataParallel as DDP


def setup(rank, world_size):
    os.environ["MASTER_ADDR"] = "localhost"
    os.environ["MASTER_PORT"] = "12355"
    dist.init_process_group("gloo", rank=rank, world_size=world_size)


def cleanup():
    dist.destroy_process_group()


def demo_basic(rank, world_size, out):
    """The DDP tutorial's demo: one step of a DDP model on rank-dependent data, plus an all_reduce."""
    setup(rank, world_size)
    dtrain.manual_seed(0)
    model = nn.Linear(4, 2)
    ddp_model = DDP(model)
    loss = ((ddp_model(dtrain.ones(3, 4) * (rank + 1)) - 1) ** 2).mean()
    optimizer = optim.SGD(ddp_model.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    total = dtrain.tensor([float(rank + 1)])
    dist.all_reduce(total)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world": dist.get_world_size(), "module": __name__, "sum": total.tolist(),
                   "weight": model.weight.tolist(), "argv": sys.argv[1:]}, f)
    cleanup()


def raises(rank):
    dist.init_process_group("gloo")
    if rank == 1:
        raise ValueError(f"bad value on rank {rank}")
    dist.all_reduce(np.ones(2))  # never completes: rank 1 is gone


def exits(rank):
    dist.init_process_group("gloo")
    if rank == 1:
        sys.exit(3)
    dist.barrier()


def killed(rank):
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()


def times_out(rank):
    dist.init_process_group("gloo", timeout=1)
    if rank == 0:
        dist.all_reduce(np.ones(2))  # rank 1 never joins: the watchdog ends the job
    else:
        import time
        time.sleep(30)


def alone_raises(rank):
    raise KeyError(rank)


def alone_killed(rank):
    os.kill(os.getpid(), signal.SIGKILL)


def failure(fn, nprocs=2):
    try:
        mp.spawn(fn, nprocs=nprocs)
    except mp.ProcessException as e:
        return {"type": type(e).__name__, "index": e.error_index, "message": str(e),
                "exit_code": getattr(e, "exit_code", None), "signal": getattr(e, "signal_name", None)}
    return None


if __name__ == "__main__":
    if sys.argv[1] == "tutorial":
        n = int(sys.argv[2])
        returned = mp.spawn(demo_basic, args=(n, sys.argv[3]), nprocs=n, join=True)
        os.mkdir(os.path.join(sys.argv[3], "nowait"))
        context = mp.spawn(demo_basic, args=(1, os.path.join(sys.argv[3], "nowait")), nprocs=1, join=False)
        print(json.dumps({"returned": returned, "context": type(context).__name__, "joined": context.join(),
                          "again": context.join(), "pids": len(context.pids())}))
    elif sys.argv[1] == "failures":
        print(json.dumps({fn.__name__: failure(fn) for fn in (raises, exits, killed, times_out)}))
    else:  # one process: the launcher runs the rank itself
        print(json.dumps({fn.__name__: failure(fn, 1) for fn in (alone_raises, alone_killed)}))
