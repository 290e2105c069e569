"""bfloat16 against float32 through the MPI backend's collectives, and what bfloat16's support
costs a float32 call.

* all_reduce (a float32 copy reduced and rounded back: 4 bytes an element on the wire, plus
  the two casts), broadcast and all_gather_into_tensor (the uint16 bits: 2 bytes an element)
  of the same number of elements, the two dtypes interleaved round after round, each call
  from a barrier (benchmarks/allreduce.py's ``timed``). Printed: median microseconds of each
  and the ratio bfloat16 / float32 (median and middle half of the per-round ratios).
* The Python cost of the dtype checks bfloat16 added on float32 paths, on rank 0: the MPI
  backend's buffer view (``_mpi_view``, on the hot all_reduce path) before and after, and the
  general path's kind check (``dtype.kind == "V"``, one per reduction), in nanoseconds per call.

Usage: mpiexec -n 2 python benchmarks/bfloat16_collectives.py [--rounds 9] [--calls 100] [--json bf16.json]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # before NumPy loads its BLAS: one thread per rank

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import timeit  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
from allreduce import timed  # noqa: E402  (benchmarks/ is the script's folder: sys.path[0])
from dtrain.comm import mpi as mpi_backend  # noqa: E402

SIZES = (1 << 10, 1 << 15, 1 << 19)  # elements: 4 KiB, 128 KiB, 2 MiB of float32


def collectives(n):
    """name -> (dtype -> the call on arrays of ``n`` elements of that dtype)."""
    def all_reduce(dtype):
        buf = np.ones(n, dtype)
        return lambda: dist.all_reduce(buf)

    def broadcast(dtype):
        buf = np.ones(n, dtype)
        return lambda: dist.broadcast(buf, src=0)

    def all_gather(dtype):
        out, buf = np.empty(dist.get_world_size() * n, dtype), np.ones(n, dtype)
        return lambda: dist.all_gather_into_tensor(out, buf)
    return {"all_reduce": all_reduce, "broadcast": broadcast, "all_gather_into_tensor": all_gather}


def check_costs(number=200_000):
    """ns per call of the float32 buffer view before (float16 only) and after (bfloat16 too),
    and of the general path's kind check, on a float32 buffer."""
    a = np.ones(4, np.float32)

    def before(a):  # _mpi_view as it was before bfloat16
        return a.view(np.uint16) if a is not None and mpi_backend._as_uint16(a.dtype) else a
    costs = {}
    for name, fn in (("_mpi_view before", lambda: before(a)), ("_mpi_view after", lambda: mpi_backend._mpi_view(a)),
                     ("kind check (float32)", lambda: a.dtype.kind == "V")):
        costs[name] = min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9
    costs["empty lambda"] = min(timeit.repeat(lambda: None, number=number, repeat=5)) / number * 1e9
    return costs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--calls", type=int, default=100, help="calls per measurement (a quarter of it above 32K elements)")
    p.add_argument("--json", default="bf16_collectives.json", help="where rank 0 writes the results")
    args = p.parse_args()
    dist.init_process_group(backend="mpi")
    from mpi4py import MPI
    comm = MPI.COMM_WORLD.Dup()
    rows = []
    for n in SIZES:
        calls = args.calls if n <= 1 << 15 else max(3, args.calls // 4)
        for name, make in collectives(n).items():
            fns = {"float32": make(np.float32), "bfloat16": make(dtrain.bfloat16)}
            for fn in fns.values():
                timed(comm, fn, 5)  # warm-up: first-call costs (the shared-memory window)
            times = {d: [] for d in fns}
            for r in range(args.rounds):
                for d in (fns if r % 2 == 0 else reversed(list(fns))):
                    times[d].append(timed(comm, fns[d], calls))
            ratios = [b / f for b, f in zip(times["bfloat16"], times["float32"])]
            q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
            rows.append(dict(collective=name, elements=n, calls=calls, rounds=args.rounds,
                             time_us={d: statistics.median(ts) * 1e6 for d, ts in times.items()},
                             ratio_median=median, ratio_q1=q1, ratio_q3=q3))
    costs = check_costs() if comm.rank == 0 else None
    if comm.rank == 0:
        print(f"bfloat16 vs float32, {comm.size} ranks, each call from a barrier, {args.rounds} rounds, "
              f"MPI: {MPI.Get_library_version().splitlines()[0]}")
        print(f"{'collective':>24} {'elements':>9} {'float32 us':>11} {'bfloat16 us':>12} {'bf16/f32':>9} "
              f"{'middle half':>12}")
        for row in rows:
            t = row["time_us"]
            print(f"{row['collective']:>24} {row['elements']:>9} {t['float32']:11.1f} {t['bfloat16']:12.1f} "
                  f"{row['ratio_median']:9.2f} {row['ratio_q1']:6.2f}-{row['ratio_q3']:<5.2f}")
        print("\nPython cost per call on a float32 buffer (ns, best of 5 x 200,000):")
        for name, ns in costs.items():
            print(f"  {name:>20}: {ns:6.1f}")
        with open(args.json, "w") as f:
            json.dump(dict(ranks=comm.size, mpi=MPI.Get_library_version().splitlines()[0], rows=rows,
                           check_costs_ns=costs), f, indent=2)
        print(f"\nwrote {args.json}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
