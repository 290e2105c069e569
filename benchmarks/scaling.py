"""Weak and strong scaling of DistributedDataParallel on the reference workloads.

MLP: 784-1024-1024-10, batch 256; CNN: conv(32)-pool-conv(64)-pool-linear(4096->10), batch 64
(../shared/DESIGN.md); cross-entropy, SGD(lr=0.01, momentum=0.9); one BLAS thread per rank.

* weak scaling: every rank keeps the reference batch (the global batch grows with N);
* strong scaling: the reference batch is split across the N ranks.

Efficiency = throughput(N) / (N x throughput(1)), against the framework's DDP at 1 rank.

The no-communication ceiling: the plain module (no DDP, no gradient averaging) runs in the
same processes on the same data, interleaved with DDP step by step; its row, "dtrain, no
comm", shows what N processes reach on this machine without talking (they slow each other
down even so: shared cores, caches, memory bandwidth). "of ceiling" is DDP's throughput
over the ceiling's: the median over the steps of plain step / DDP step (at 1 rank: DDP's
own overhead).

"hidden" is the share of the all-reduce time that backward hides: 1 - exposed / alone,
where exposed is the time from the moment the last rank finishes backward to the moment
the last rank has its averaged gradients (so a rank waiting for a slower one does not count
as communication), and alone the time the same buckets take to all-reduce with nothing else
running. Where PyTorch is installed the same runs are made with torch DDP over gloo.
``--baseline DIR`` runs dtrain from another checkout too (e.g. ``git worktree add
/tmp/before HEAD~3``), in the same rounds, as the rows "before" and "before, no comm".

Every configuration runs ``--repeat`` times, interleaved round after round (this machine is
shared and noisy); the table shows medians.

``--trace PNG`` instead runs one configuration (the first workload and mode, the most ranks)
once with ``DTRAIN_TRACE`` and draws its last DDP step from the ranks' merged trace: each
rank's phases on its main thread and its bucket all-reduces on its comm thread, with the share
of all-reduce time hidden under backward (benchmarks/overlap_plot.py); the merged trace is
kept beside the PNG (``PNG`` with ``.json``: open it in https://ui.perfetto.dev).

Usage: python benchmarks/scaling.py [--workload mlp cnn] [--mode weak strong] [--ranks 1 2] [--steps 20]
           [--repeat 3] [--json scaling.json] [--plot scaling.png] [--no-torch] [--baseline DIR]
           [--trace overlap.png]
(the JSON and the plot are written by default, to the current folder)
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

BATCH = {"mlp": 256, "cnn": 64}


def reference_model(nn, workload):
    """The reference model built from ``nn`` (dtrain.nn or torch.nn: the same calls)."""
    if workload == "mlp":
        return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4096, 10))


def batch(workload, n, seed):
    rng = np.random.default_rng(seed)
    shape = (n, 784) if workload == "mlp" else (n, 3, 32, 32)
    return rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, n)


# ---- the worker: one configuration, run on every rank under mpiexec ------------------------

def worker(args):
    import dtrain
    import dtrain.comm as dist
    from dtrain.parallel import DistributedDataParallel
    dist.init_process_group()
    rank, n = dist.get_rank(), dist.get_world_size()
    per_rank = BATCH[args.workload] if args.mode == "weak" else BATCH[args.workload] // n
    x, y = batch(args.workload, per_rank, seed=rank)
    x, y = dtrain.tensor(x), dtrain.tensor(y)
    dtrain.manual_seed(0)
    ddp = DistributedDataParallel(reference_model(dtrain.nn, args.workload), bucket_cap_mb=args.bucket_cap_mb,
                                  gradient_as_bucket_view=args.gradient_as_bucket_view)
    plain = reference_model(dtrain.nn, args.workload)
    plain.load_state_dict(ddp.module.state_dict())  # the same weights: the same arithmetic
    variants = {"ddp": (ddp, dtrain.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)),
                "plain": (plain, dtrain.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9))}
    loss_fn = dtrain.nn.CrossEntropyLoss()

    def step(model, opt):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    times = {k: [] for k in variants}
    ends = []  # (end of backward, averages in) per DDP step
    for name, (model, opt) in variants.items():
        for _ in range(3):
            step(model, opt)
    for i in range(args.steps):  # variants interleaved step by step (order alternating): noise hits them alike
        for name, (model, opt) in sorted(variants.items(), reverse=i % 2 == 1):
            dist.barrier()
            t = time.perf_counter()
            step(model, opt)
            times[name].append(time.perf_counter() - t)
            if name == "ddp":
                stats = ddp.comm_stats()
                ends.append((stats["end"], stats["done"]))
    comm = _allreduce_alone(ddp, dist) if n > 1 else 0.0
    everyone = [None] * n
    dist.all_gather_object(everyone, (times, ends, comm))
    if rank == 0:
        # a step lasts as long as its slowest rank
        slowest = {k: [max(e[0][k][i] for e in everyone) for i in range(args.steps)] for k in times}
        step_s = {k: statistics.median(v) for k, v in slowest.items()}
        # exposed: from the last rank's end of backward to the last rank's averages (perf_counter
        # is the system's monotonic clock, so ranks on one machine compare their readings)
        exposed = statistics.median(max(e[1][i][1] for e in everyone) - max(e[1][i][0] for e in everyone)
                                 for i in range(args.steps))
        comm = statistics.median(e[2] for e in everyone)
        result = {"framework": "dtrain", "workload": args.workload, "mode": args.mode, "ranks": n,
                  "per_rank_batch": per_rank, "step_ms": 1e3 * step_s["ddp"],
                  "samples_per_s": per_rank * n / step_s["ddp"], "buckets": len(ddp.reducer.buckets),
                  "comm_ms": 1e3 * comm, "exposed_ms": 1e3 * exposed,
                  "hidden": max(0.0, 1 - exposed / comm) if comm > 0 else None,
                  "plain_step_ms": 1e3 * step_s["plain"],
                  "vs_plain": statistics.median(d / p for d, p in zip(slowest["ddp"], slowest["plain"]))}
        with open(args.out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


def _allreduce_alone(ddp, dist, reps=5):
    """Seconds the DDP buckets take to all-reduce, one after another, with nothing else running."""
    buffers = [b.buffer for b in ddp.reducer.buckets]
    runs = []
    for _ in range(reps):
        dist.barrier()
        t = time.perf_counter()
        for buf in buffers:
            dist.all_reduce(buf, async_op=True).wait()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def torch_worker(args):
    import torch
    import torch.distributed as tdist
    torch.set_num_threads(1)
    from dtrain.comm.env import discover
    info = discover()  # the launcher's variables (MPICH, Open MPI, SLURM)
    rank, n = info.rank, info.world_size
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(args.port))
    tdist.init_process_group("gloo", rank=rank, world_size=n)
    per_rank = BATCH[args.workload] if args.mode == "weak" else BATCH[args.workload] // n
    x, y = batch(args.workload, per_rank, seed=rank)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(reference_model(torch.nn, args.workload),
                                                      bucket_cap_mb=args.bucket_cap_mb,
                                                      gradient_as_bucket_view=args.gradient_as_bucket_view)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(3 + args.steps):
        tdist.barrier()
        t = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    everyone = [None] * n
    tdist.all_gather_object(everyone, times)
    if rank == 0:
        step_s = statistics.median(max(e[i] for e in everyone) for i in range(args.steps))
        with open(args.out, "w") as f:
            json.dump({"framework": "torch", "workload": args.workload, "mode": args.mode, "ranks": n,
                       "per_rank_batch": per_rank, "step_ms": 1e3 * step_s,
                       "samples_per_s": per_rank * n / step_s, "hidden": None, "plain_step_ms": None,
                       "vs_plain": None}, f)
    tdist.destroy_process_group()


# ---- the driver -------------------------------------------------------------------------------

def launch(framework, workload, mode, ranks, steps, port, ddp_args=(), tree=None, env_extra=None):
    """One configuration under mpiexec; its result (None if it failed). ``tree``: a checkout
    whose dtrain the ranks import instead of this one; ``env_extra``: variables for the ranks."""
    from dtrain.launch import find_mpiexec
    mpiexec = find_mpiexec()
    if mpiexec is None:
        sys.exit("benchmarks/scaling.py needs mpiexec (pip install dtrain[mpi])")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker", framework,
               "--workload", workload, "--mode", mode, "--steps", str(steps), "--out", out, "--port", str(port),
               *ddp_args]
        env = {**os.environ, **(env_extra or {}), **({} if tree is None else {"PYTHONPATH": os.path.abspath(tree)})}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if done.returncode != 0 or not os.path.exists(out):  # reported; the other runs go on
            print(f"run failed (exit code {done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}"
                  f"\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        with open(out) as f:
            return json.load(f)


def median_row(runs):
    """One row from repeated runs of a configuration: the median of every timing."""
    row = dict(runs[0])
    for key in ("step_ms", "comm_ms", "exposed_ms", "hidden", "plain_step_ms", "vs_plain"):
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
    row["samples_per_s"] = 1e3 * row["per_rank_batch"] * row["ranks"] / row["step_ms"]
    row["of_ceiling"] = 1 / row["vs_plain"] if row.get("vs_plain") else None
    return row


def ceiling_row(row):
    """The no-communication row measured alongside a DDP row (same processes, same data)."""
    return {**row, "framework": f"{row['framework']}, no comm", "step_ms": row["plain_step_ms"],
            "samples_per_s": 1e3 * row["per_rank_batch"] * row["ranks"] / row["plain_step_ms"],
            "buckets": None, "comm_ms": None, "exposed_ms": None, "hidden": None, "vs_plain": None,
            "of_ceiling": None, "plain_step_ms": None}


def add_efficiency(rows):
    """Efficiency = throughput(N) / (N x throughput(1)), against the same framework's DDP at 1 rank
    (the no-communication rows too: their efficiency is the ceiling of DDP's)."""
    base = {(r["framework"], r["workload"], r["mode"]): r["samples_per_s"] for r in rows if r["ranks"] == 1}
    for r in rows:
        ddp = r["framework"].split(",")[0]
        one = base.get((ddp, r["workload"], r["mode"]))
        r["efficiency"] = r["samples_per_s"] / (r["ranks"] * one) if one else None


def table(rows):
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)
    lines = [f"{'framework':17} {'workload':8} {'scaling':7} {'ranks':>5} {'batch/rank':>10} {'step ms':>8} "
             f"{'samples/s':>10} {'efficiency':>10} {'of ceiling':>10} {'hidden':>7}"]
    for r in rows:
        lines.append(f"{r['framework']:17} {r['workload']:8} {r['mode']:7} {r['ranks']:5d} {r['per_rank_batch']:10d} "
                     f"{r['step_ms']:8.2f} {r['samples_per_s']:10.0f} {fmt(r['efficiency'], '10.3f')} "
                     f"{fmt(r.get('of_ceiling'), '10.3f')} {fmt(r['hidden'], '7.2f')}")
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    groups = sorted({(r["workload"], r["mode"]) for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.5), squeeze=False)
    for ax, (workload, mode) in zip(axes[0], groups):
        for fw in sorted({r["framework"] for r in rows}):
            sel = sorted((r for r in rows if (r["workload"], r["mode"], r["framework"]) == (workload, mode, fw)),
                         key=lambda r: r["ranks"])
            ceiling = fw.endswith("no comm")
            ax.plot([r["ranks"] for r in sel], [r["samples_per_s"] for r in sel], "--" if ceiling else "o-",
                    color="gray" if ceiling and fw.startswith("dtrain") else None, label=fw)
            one = next((r["samples_per_s"] for r in sel if r["ranks"] == 1), None)
            if one and fw == "dtrain":
                ax.plot([r["ranks"] for r in sel], [one * r["ranks"] for r in sel], ":", color="gray",
                        label="dtrain, ideal")
        ax.set_xticks(sorted({r["ranks"] for r in rows}))
        ax.set_title(f"{workload}, {mode} scaling")
        ax.set_xlabel("ranks")
        ax.set_ylabel("samples/s")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


def trace_overlap(args, ddp_args):
    """--trace: one traced run of the first workload and mode at the most ranks; the PNG of
    its last DDP step and the merged trace beside it."""
    import shutil

    from dtrain.timing import merge
    from overlap_plot import draw
    workload, mode, n = args.workload[0], args.mode[0], max(args.ranks)
    with tempfile.TemporaryDirectory() as tmp:
        if launch("dtrain", workload, mode, n, args.steps, args.port, ddp_args, env_extra={"DTRAIN_TRACE": tmp}) is None:
            sys.exit("the traced run failed")
        merged = os.path.splitext(args.trace)[0] + ".json"
        shutil.copy(merge(tmp), merged)
    with open(merged) as f:
        events = json.load(f)["traceEvents"]
    hidden = draw(events, args.trace, f"dtrain DDP, {workload} {mode} scaling, {n} ranks, bucket_cap_mb "
                                      f"{args.bucket_cap_mb:g}: the last of {args.steps} steps")
    print(f"command: python benchmarks/scaling.py {' '.join(sys.argv[1:])}")
    print("all-reduce time hidden under backward: " + ", ".join(
        f"rank {r} {'-' if h is None else f'{100 * h:.0f}%'}" for r, h in hidden.items()))
    print(f"plot: {args.trace}\ntrace: {merged} (open it in https://ui.perfetto.dev)")
    return hidden


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", nargs="+", default=["mlp", "cnn"], choices=sorted(BATCH))
    ap.add_argument("--mode", nargs="+", default=["weak", "strong"], choices=["weak", "strong"])
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="runs of every configuration; the table shows medians")
    ap.add_argument("--json", default="scaling.json", help="write the rows here ('' for no file)")
    ap.add_argument("--plot", default="scaling.png", help="save a PNG plot here (needs matplotlib; '' for none)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--baseline", help="also run dtrain from this checkout (rows 'before'), in the same rounds")
    ap.add_argument("--bucket-cap-mb", type=float, default=25, help="DDP's bucket_cap_mb (both frameworks)")
    ap.add_argument("--gradient-as-bucket-view", action="store_true", help="DDP's gradient_as_bucket_view")
    ap.add_argument("--trace", metavar="PNG", help="trace one run instead and draw its last DDP step's overlap of "
                                                    "all-reduce with backward here (needs matplotlib)")
    ap.add_argument("--worker", choices=["dtrain", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=29511, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.mode, args.workload = args.mode[0], args.workload[0]
        return (worker if args.worker == "dtrain" else torch_worker)(args)
    if args.trace:
        return trace_overlap(args, ["--bucket-cap-mb", str(args.bucket_cap_mb)])
    frameworks = ["dtrain"] + (["before"] if args.baseline else [])
    if not args.no_torch:
        try:
            import torch.distributed  # noqa: F401
            frameworks.append("torch")
        except ImportError:
            pass
    configs = [(fw, workload, mode, n) for workload in args.workload for mode in args.mode for fw in frameworks
               for n in args.ranks]
    runs, port = {c: [] for c in configs}, args.port
    ddp_args = ["--bucket-cap-mb", str(args.bucket_cap_mb)] + (["--gradient-as-bucket-view"]
                                                                if args.gradient_as_bucket_view else [])
    for _ in range(args.repeat):  # configurations interleaved, round after round: noise hits all alike
        for c in configs:
            port += 1
            worker_kind = "torch" if c[0] == "torch" else "dtrain"
            result = launch(worker_kind, *c[1:], args.steps, port, ddp_args,
                            tree=args.baseline if c[0] == "before" else None)
            if result is not None:
                runs[c].append({**result, "framework": c[0]})
    rows = []
    for c in configs:
        if runs[c]:
            rows.append(median_row(runs[c]))
            if rows[-1].get("plain_step_ms"):
                rows.append(ceiling_row(rows[-1]))
    add_efficiency(rows)
    print(f"command: python benchmarks/scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
