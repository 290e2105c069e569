"""How an all-reduce on dtrain's comm thread behaves while the caller computes.

Every rank starts a 4 MiB float32 all-reduce (the size of the reference MLP's first DDP
bucket) on a background thread, then multiplies matrices on its own thread (one BLAS
thread per rank, so the cores are busy, as in DDP's backward). Compared, interleaved round
after round: no all-reduce at all; a blocking ``Allreduce`` on the thread (MPI busy-polls
until the peers arrive); and ``Iallreduce`` tested every ``pause`` seconds, which is what
dtrain's comm thread does while nobody waits (``CommThread.complete``, DTRAIN_COMM_POLL_US).

Printed per variant (medians, rank 0): the computation's time, when the all-reduce
finished (from the start), and the CPU time the thread used.

Usage: mpiexec -n 2 python benchmarks/comm_progress.py [--rounds 15]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    thread_comm = comm.Dup()
    rng = np.random.default_rng(0)
    a, b = rng.random((256, 1024), np.float32), rng.random((1024, 1024), np.float32)
    buf = np.ones(1 << 20, np.float32)

    def compute():
        for _ in range(8):
            a @ b

    def blocking():
        thread_comm.Allreduce(MPI.IN_PLACE, buf)

    def polled(pause):
        def run():
            request = thread_comm.Iallreduce(MPI.IN_PLACE, buf)
            while not request.Test():
                time.sleep(pause)
        return run

    variants = {"no all-reduce": None, "blocking Allreduce": blocking}
    for pause in (50e-6, 200e-6, 1e-3):
        variants[f"Iallreduce, test every {pause * 1e6:g} us"] = polled(pause)

    def once(reduce):
        done = {}
        comm.Barrier()
        start = time.perf_counter()
        if reduce is None:
            compute()
            return time.perf_counter() - start, 0.0, 0.0

        def thread():
            cpu = time.thread_time()
            reduce()
            done["at"], done["cpu"] = time.perf_counter() - start, time.thread_time() - cpu
        t = threading.Thread(target=thread)
        t.start()
        compute()
        took = time.perf_counter() - start
        t.join()
        return took, done["at"], done["cpu"]

    results = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, reduce in (list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]):
            results[name].append(once(reduce))
    if comm.rank == 0:
        print(f"{comm.size} ranks, 4 MiB all-reduce on a thread during 8 matmuls of 256x1024x1024 (medians of "
              f"{args.rounds})")
        print(f"{'variant':<34} {'compute ms':>10} {'all-reduce done at ms':>22} {'thread CPU ms':>14}")
        for name, rows in results.items():
            cols = [statistics.median(col) * 1e3 for col in zip(*rows)]
            print(f"{name:<34} {cols[0]:10.2f} {cols[1]:22.2f} {cols[2]:14.2f}")


if __name__ == "__main__":
    main()
