"""All-reduce bandwidth of dtrain.comm next to raw mpi4py (and torch.distributed gloo).

For float32 buffers of 4 KiB to 64 MiB, each variant sums the same buffer in place:
  dtrain   dtrain.comm.all_reduce (MPI backend) on a NumPy array
  mpi4py   comm.Allreduce(MPI.IN_PLACE, buf) on a duplicate of COMM_WORLD
  gloo     torch.distributed.all_reduce on torch.from_numpy(buf), where torch is installed
Variants run interleaved, round after round, so a noisy machine slows all of them alike.
A measurement is the mean time per call over a batch of calls (the slowest rank's), each
call started from a barrier as in the OSU micro-benchmarks (--back-to-back: in a tight
loop); the reported time is the median over rounds. algbw = bytes / time; busbw = algbw x 2(n-1)/n.

A second table measures overlap: a 16 MiB all-reduce started asynchronously, then 100 ms of
NumPy work, then the time still spent in wait() (0 = fully hidden), for mpi4py's Iallreduce
and dtrain's async_op=True (the comm thread, see dtrain/comm/work.py).

With --hosts (a job across hosts, e.g. launch/fake_cluster.sh's namespaced ones), the
dtrain variants are its hierarchical all-reduce and its flat one, each on a group of every
rank made with DTRAIN_HIERARCHICAL=1 and =0 (dtrain/comm/hierarchical.py), next to mpi4py's
(flat) Allreduce, and gloo's, its rendezvous at rank 0's address on GLOO_SOCKET_IFNAME (default
eth0, the fake cluster's interface; --no-gloo skips it); no overlap table.

Usage: mpiexec -n 2 python benchmarks/allreduce.py [--max-bytes 67108864] [--rounds 5] [--back-to-back]
                                                 [--json allreduce.json]
       launch/mpirun_hostfile.sh HOSTFILE benchmarks/allreduce.py --hosts [...]   (see benchmarks/RESULTS.md)
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # before NumPy loads its BLAS: one thread per rank

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain.comm as dist  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-bytes", type=int, default=4 << 10)
    p.add_argument("--max-bytes", type=int, default=64 << 20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.02, help="seconds of calls per measurement (at least 3)")
    p.add_argument("--json", default="allreduce.json", help="where rank 0 writes the results")
    p.add_argument("--no-gloo", action="store_true", help="skip torch.distributed even if installed")
    p.add_argument("--back-to-back", action="store_true",
                   help="time calls in a tight loop instead of each from a barrier (see timed())")
    p.add_argument("--hosts", action="store_true",
                   help="a job across hosts: dtrain's hierarchical vs flat all-reduce, and mpi4py's")
    return p.parse_args()


def group_with(hierarchical):
    """A group of every rank made with DTRAIN_HIERARCHICAL set to ``hierarchical`` ("0"/"1")."""
    before = os.environ.get("DTRAIN_HIERARCHICAL")
    os.environ["DTRAIN_HIERARCHICAL"] = hierarchical
    try:
        return dist.new_group(list(range(dist.get_world_size())))
    finally:
        if before is None:
            del os.environ["DTRAIN_HIERARCHICAL"]
        else:
            os.environ["DTRAIN_HIERARCHICAL"] = before


def interface_address(name):
    """The IPv4 address of interface ``name`` (SIOCGIFADDR): gloo's rendezvous across hosts."""
    import fcntl
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError as e:
            raise SystemExit(f"no IPv4 address on interface {name!r} ({e}): set GLOO_SOCKET_IFNAME to the "
                             f"interface the hosts reach each other by, or pass --no-gloo / --no-torch") from e
    return socket.inet_ntoa(packed[20:24])


def gloo_setup(comm, use, across_hosts=False):
    """torch.distributed with gloo over a TCP rendezvous whose port rank 0 picks; None without torch.
    ``across_hosts``: the rendezvous is rank 0's address on GLOO_SOCKET_IFNAME (set to eth0 if
    unset; gloo's own connections use that interface too), else 127.0.0.1."""
    try:
        import torch
        import torch.distributed as tdist
    except ImportError:
        use = False
    if not comm.allreduce(int(use), op=mpi_min()):
        return None
    if across_hosts:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "eth0")
    where = None
    if comm.rank == 0:
        addr = interface_address(os.environ["GLOO_SOCKET_IFNAME"]) if across_hosts else "127.0.0.1"
        with socket.socket() as s:
            s.bind((addr, 0))
            where = (addr, s.getsockname()[1])
    addr, port = comm.bcast(where, root=0)
    tdist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=comm.rank,
                             world_size=comm.size)
    return lambda buf: tdist.all_reduce(torch.from_numpy(buf))


def mpi_min():
    from mpi4py import MPI
    return MPI.MIN


def timed(comm, fn, calls, back_to_back=False):
    """Mean seconds per call over ``calls`` calls, the slowest rank's.

    By default every call starts from a barrier and only the call is timed, as the OSU
    micro-benchmarks do: a call's time does not depend on how far the ranks drifted apart
    in the previous one. ``back_to_back`` times the calls in a tight loop instead, where
    any Python between two calls (dtrain's ~2 us of argument checks) lets the ranks drift
    and costs MPICH's shared-memory all-reduce several times that (measured: 1 us of pure
    Python per call added ~10 us to a 1 MiB all-reduce).
    """
    from mpi4py import MPI
    comm.Barrier()
    if back_to_back:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        total = time.perf_counter() - start
    else:
        total = 0.0
        for _ in range(calls):
            comm.Barrier()
            start = time.perf_counter()
            fn()
            total += time.perf_counter() - start
    return comm.allreduce(total / calls, op=MPI.MAX)


def bandwidth(comm, variants, sizes, rounds, min_time, back_to_back):
    n = comm.size
    rows = []
    for nbytes in sizes:
        buf = np.ones(nbytes // 4, np.float32)
        # calls per measurement, from the slowest variant after a warm-up
        probe = max(min(timed(comm, lambda f=f: f(buf), 5, back_to_back) for _ in range(3)) for f in variants.values())
        calls = max(3, int(min_time / max(probe, 1e-7)))
        times = {name: [] for name in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                times[name].append(timed(comm, lambda fn=fn: fn(buf), calls, back_to_back))
        for name, ts in times.items():
            t = statistics.median(ts)
            algbw = nbytes / t / 1e9
            rows.append(dict(variant=name, bytes=nbytes, time_us=t * 1e6, algbw_GBps=algbw,
                             busbw_GBps=algbw * 2 * (n - 1) / n, calls=calls, rounds=rounds))
    return rows


def busy(seconds):
    x = np.random.default_rng(0).random((128, 128))
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        x = x @ x
        x /= np.abs(x).max()


def overlap(comm, rounds):
    """Seconds spent in wait() after 100 ms of work, for each way of starting the all-reduce."""
    from mpi4py import MPI
    buf, out = np.ones(4 << 20, np.float32), np.empty(4 << 20, np.float32)
    starts = {"blocking (no work)": None,
              "mpi4py Iallreduce": lambda: comm.Iallreduce(buf, out),
              "dtrain async_op=True": lambda: dist.all_reduce(buf, async_op=True)}
    result = {name: [] for name in starts}
    for _ in range(rounds):
        for name, start in starts.items():
            comm.Barrier()
            if start is None:
                t = time.perf_counter()
                comm.Allreduce(buf, out)
            else:
                handle = start()
                busy(0.1)
                t = time.perf_counter()
                handle.Wait() if hasattr(handle, "Wait") else handle.wait()
            result[name].append(comm.allreduce(time.perf_counter() - t, op=MPI.MAX))
    return {name: statistics.median(ts) for name, ts in result.items()}


def main():
    args = parse_args()
    dist.init_process_group(backend="mpi")
    from mpi4py import MPI
    comm = MPI.COMM_WORLD.Dup()
    if args.hosts:
        hier, flat = group_with("1"), group_with("0")
        variants = {"hierarchical": lambda buf: dist.all_reduce(buf, group=hier),
                    "flat": lambda buf: dist.all_reduce(buf, group=flat)}
    else:
        variants = {"dtrain": dist.all_reduce}
    variants["mpi4py"] = lambda buf: comm.Allreduce(MPI.IN_PLACE, buf)
    gloo = gloo_setup(comm, not args.no_gloo, across_hosts=args.hosts)
    if gloo is not None:
        variants["gloo"] = gloo
    sizes = []
    size = args.min_bytes
    while size <= args.max_bytes:
        sizes.append(size)
        size *= 4
    rows = bandwidth(comm, variants, sizes, args.rounds, args.min_time, args.back_to_back)
    waits = {} if args.hosts else overlap(comm, args.rounds)
    hosts = len(set(comm.allgather(socket.gethostname())))
    first = next(iter(variants))  # dtrain's (hierarchical with --hosts), compared with mpi4py's
    if comm.rank == 0:
        timing = "back to back" if args.back_to_back else "each call from a barrier"
        print(f"all_reduce, float32, {comm.size} ranks on {hosts} host(s), {timing}, "
              f"MPI: {MPI.Get_library_version().splitlines()[0]}")
        header = f"{'bytes':>10} " + " ".join(f"{name + ' us':>11} {'algbw GB/s':>10} {'busbw GB/s':>10}"
                                              for name in variants)
        print(header + f" {first + '/mpi4py':>13}")
        for nbytes in sizes:
            row = {r["variant"]: r for r in rows if r["bytes"] == nbytes}
            cells = " ".join(f"{row[v]['time_us']:11.1f} {row[v]['algbw_GBps']:10.3f} {row[v]['busbw_GBps']:10.3f}"
                             for v in variants)
            print(f"{nbytes:>10} {cells} {row[first]['time_us'] / row['mpi4py']['time_us']:13.2f}")
        if waits:
            print("\noverlap: 16 MiB all_reduce started, 100 ms of NumPy work, then wait():")
        for name, t in waits.items():
            print(f"  {name:<24} {t * 1e3:8.2f} ms {'(the all-reduce alone)' if 'blocking' in name else 'in wait()'}")
        with open(args.json, "w") as f:
            json.dump(dict(ranks=comm.size, hosts=hosts, back_to_back=args.back_to_back, mpi=MPI.Get_library_version().splitlines()[0], bandwidth=rows,
                           overlap_wait_s=waits), f, indent=2)
        print(f"\nwrote {args.json}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
