"""The MPI backend's two ways into a blocking all_reduce of a NumPy array, side by side.

  fast      dtrain.comm.all_reduce: MPIProcessGroup.all_reduce's path for a synchronous,
            contiguous, writeable NumPy array (straight to Allreduce or the shared-memory window)
  general   ProcessGroup.all_reduce on the same group: argument checks, flat views, the
            backend's _run (watchdog Op, closures) and the _allreduce primitive
  mpi4py    comm.Allreduce(MPI.IN_PLACE, buf) on a duplicate of COMM_WORLD (the floor)

The variants run interleaved, in an order that alternates round after round, so a loaded
machine slows them alike; each measurement is the mean time of a batch of calls, each call
started from a barrier (benchmarks/allreduce.py's ``timed``). Printed per size: the median
time of each variant and the ratio general / fast: its median over the rounds and its spread
(the middle half of the per-round ratios; the JSON also has their min and max). Under
``mpiexec -n 1`` MPI's own time is nearly nil: the table then shows what each path costs in
Python.

Usage: mpiexec -n 2 python benchmarks/allreduce_paths.py [--rounds 9] [--calls 400] [--json paths.json]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # before NumPy loads its BLAS: one thread per rank

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402

import dtrain.comm as dist  # noqa: E402
from allreduce import timed  # noqa: E402  (benchmarks/ is the script's folder: sys.path[0])
from dtrain.comm.process_group import ProcessGroup  # noqa: E402

SIZES = (4, 4 << 10, 64 << 10, 1 << 20)  # bytes; from 256 KiB on one node the shared-memory window takes over


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--calls", type=int, default=400, help="calls per measurement (a quarter of it above 64 KiB)")
    p.add_argument("--json", default="allreduce_paths.json", help="where rank 0 writes the results")
    args = p.parse_args()
    dist.init_process_group(backend="mpi")
    from mpi4py import MPI
    comm, world = MPI.COMM_WORLD.Dup(), dist.group.WORLD
    variants = {"fast": dist.all_reduce, "general": lambda buf: ProcessGroup.all_reduce(world, buf),
                "mpi4py": lambda buf: comm.Allreduce(MPI.IN_PLACE, buf)}
    rows = []
    for nbytes in SIZES:
        buf = np.ones(max(1, nbytes // 4), np.float32)
        calls = args.calls if nbytes <= 64 << 10 else max(3, args.calls // 4)
        for fn in variants.values():  # warm-up: first-call costs (shared-memory window, MPI's own setup)
            timed(comm, lambda fn=fn: fn(buf), 10)
        times = {name: [] for name in variants}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                times[name].append(timed(comm, lambda fn=variants[name]: fn(buf), calls))
        ratios = [g / f for g, f in zip(times["general"], times["fast"])]
        q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        rows.append(dict(bytes=nbytes, calls=calls, rounds=args.rounds,
                         time_us={name: statistics.median(ts) * 1e6 for name, ts in times.items()},
                         ratio_median=median, ratio_q1=q1, ratio_q3=q3, ratio_min=min(ratios), ratio_max=max(ratios)))
    if comm.rank == 0:
        print(f"blocking all_reduce, float32, {comm.size} ranks, each call from a barrier, {args.rounds} rounds, "
              f"MPI: {MPI.Get_library_version().splitlines()[0]}")
        print(f"{'bytes':>8} {'fast us':>9} {'general us':>11} {'mpi4py us':>10} {'general/fast':>13} "
              f"{'middle half':>12}")
        for row in rows:
            t = row["time_us"]
            print(f"{row['bytes']:>8} {t['fast']:9.1f} {t['general']:11.1f} {t['mpi4py']:10.1f} "
                  f"{row['ratio_median']:13.2f} {row['ratio_q1']:6.2f}-{row['ratio_q3']:<5.2f}")
        with open(args.json, "w") as f:
            json.dump(dict(ranks=comm.size, mpi=MPI.Get_library_version().splitlines()[0], rows=rows), f, indent=2)
        print(f"\nwrote {args.json}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
