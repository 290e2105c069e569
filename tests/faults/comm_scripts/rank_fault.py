"""Rank script for test_comm_faults.py: after one agreeing barrier, rank 1 misbehaves in
the way argv[1] names while the other ranks wait in an all_reduce that cannot complete.

    raise     rank 1 raises ValueError("boom")
    exit3     rank 1 calls sys.exit(3)
    exit0     rank 1 calls sys.exit(0)
    exit75    rank 1 calls sys.exit(75) (see osexit75)
    end       rank 1's script ends
    osexit0   rank 1 calls os._exit(0)
    cexit0    rank 1's native code ends it: libc's _exit(0), past every Python hook
    osexit75  rank 1 calls os._exit(75), the preemption code, without dtrain.preemption.exit_preempted
    sigkill   rank 1 is killed by SIGKILL
    missing   rank 1 never calls the all_reduce (it sleeps): the others' blocking all_reduce times out
    mismatch  rank 1 calls barrier() instead (caught by debug mode or the sampled check; with
              DTRAIN_CHECK_EVERY=0 the job hangs until the timeout)
    timeout   rank 1 is 60 s late: rank 0's async all_reduce times out in Work.wait() (DDP's path)
    recv      rank 1 never sends: rank 0's blocking recv times out
    fork      rank 1 forks a child that raises: the job goes on (rank 0 prints the child's exit code)
    init      rank 1 sleeps before init_process_group (a plain mpiexec, no launcher): init times out
"""
import ctypes
import os
import signal
import sys
import time

import numpy as np

import dtrain.comm as dist
from dtrain.comm import env

mode = sys.argv[1]


def main():
    if mode == "init" and env.discover().rank == 1:
        time.sleep(60)
    dist.init_process_group()
    dist.barrier()
    x = np.ones(4, np.float32)
    rank = dist.get_rank()
    if mode == "fork":
        if rank == 1:
            pid = os.fork()
            if pid == 0:
                raise ValueError("boom in a forked child")
            _, status = os.waitpid(pid, 0)
            x += os.waitstatus_to_exitcode(status)  # the child's exit code, for rank 0 to print
        dist.all_reduce(x)
        if rank == 0:
            print(f"the job went on; rank 1's forked child exited with code {x[0] - 2:g}", flush=True)
        return
    if rank == 1:
        if mode == "raise":
            raise ValueError("boom")
        if mode in ("exit3", "exit0", "exit75"):
            sys.exit(int(mode[4:]))
        if mode == "end":
            return
        if mode in ("osexit0", "osexit75"):
            time.sleep(0.5)  # rank 0 waits in the all_reduce by then
            os._exit(int(mode[6:]))
        if mode == "cexit0":
            ctypes.CDLL(None)._exit(0)
        if mode == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "mismatch":
            dist.barrier()
        else:
            time.sleep(60)  # missing, timeout: the job must end long before this
            dist.all_reduce(x)
    elif mode == "recv":
        dist.recv(x, src=1)
    elif mode == "timeout":
        dist.all_reduce(x, async_op=True).wait()
    else:
        dist.all_reduce(x)
    print(f"unreachable: rank {dist.get_rank()} got past the collective", flush=True)


main()
