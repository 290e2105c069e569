"""DDP weak scaling across hosts at chosen link rates: the reference MLP and the GPT example,
dtrain's flat, hierarchical and PowerSGD gradient all-reduce next to PyTorch DDP over gloo,
and a step time predicted from the measured busbw and compute, checked against the steps.

Models (weak scaling: a fixed batch per rank, one BLAS thread per rank, ../shared/DESIGN.md):

  mlp  the reference MLP 784-1024-1024-10, batch 256 per rank, cross-entropy, SGD(0.01, momentum 0.9)
  gpt  examples/gpt.py's GPT (4 layers x 128, block 64, dropout 0; benchmarks/step.py's copy,
       written for dtrain and torch alike), batch 8 per rank of random tokens, AdamW + clipping at 1

Variants, in the same processes, interleaved step by step so that a noisy machine slows them alike:

  flat            dtrain DDP on a group made with DTRAIN_HIERARCHICAL=0 (MPI's own all-reduce)
  hierarchical    dtrain DDP on a group made with DTRAIN_HIERARCHICAL=1 (only when a host holds
                  more than one rank: at one rank per host it is the flat all-reduce among leaders)
  PowerSGD r=R    dtrain DDP + powerSGD_hook(PowerSGDState(group chosen by topology,
                  matrix_approximation_rank=R, start_powerSGD_iter=3)); the timed steps are compressed
  no comm         the plain dtrain module: the compute alone
  torch gloo      torch DDP over gloo on the same hosts (GLOO_SOCKET_IFNAME, default eth0; the
                  rendezvous is rank 0's address on it), and ``torch gloo PowerSGD r=R``, torch's hook
                  (on one bucket: bucket_cap_mb=100; see variants_of)
  torch no comm   the plain torch module

A step is timed from a barrier to the end of ``optimizer.step()``, the slowest rank's; medians.
Bytes and collectives per step are counted where dtrain's DDP (and torch's PowerSGD hook) hand
them to the all-reduces; torch's plain DDP all-reduces in C++, out of sight, so its row shows
the parameters' bytes and 1 collective (its reducer may use 2 buckets; the latency term is small).

The model ("pred" columns): a step = compute + gradient communication, none of it hidden under
backward (an upper bound; the lower bound is the larger of the two). Communication = the bytes
and collectives each variant hands to the all-reduces in one step (counted) at the busbw of a
4 MiB all-reduce on its group (dtrain.preflight.allreduce_busbw, or the same for gloo) plus a
small all-reduce's latency per collective. Compute is either the "no comm" step measured here
("pred") or what the pre-flight check assumes: 6 FLOPs per parameter per sample (per token for
the GPT) at the 512x512 GEMM rate measured here (dtrain.preflight.gemm_gflops and .predict,
"preflight"). PowerSGD's own work (two matrix products and an orthogonalization per matrix) is
not in the model.

Usage:
  one job (on the hosts of HOSTFILE):
    launch/mpirun_hostfile.sh HOSTFILE benchmarks/multihost_ddp.py [--models mlp gpt] [--steps 10]
        [--powersgd-rank 4] [--label RATE] [--json out.json]
  the sweep (as root; makes a fake cluster, sets each rate with launch/fake_cluster.sh rate, runs
  the jobs round-robin over the rates --repeats times, removes the cluster, writes the table
  results/multihost_ddp_HxR.md and the plot results/multihost_ddp_HxR.png):
    .venv/bin/python benchmarks/multihost_ddp.py --sweep [--rates off 10gbit 1gbit 100mbit] [--per-host 1]
    .venv/bin/python benchmarks/multihost_ddp.py --sweep --per-host 2 --steps 8 --rates off 1gbit 100mbit
  the table and plot again from a sweep's JSON files:
    .venv/bin/python benchmarks/multihost_ddp.py --report benchmarks/results/multihost_ddp_2x1_*.json
(see benchmarks/RESULTS.md, "DDP across hosts at chosen link rates")
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
MLP_BATCH, GPT_BATCH = 256, 8
GPT_SHAPE = dict(vocab_size=160, block_size=64, n_layer=4, n_head=4, n_embd=128)
LATENCY_BYTES = 4096


# ---- one job (under MPI) -------------------------------------------------------------------

def torch_setup(comm, iface):
    """torch.distributed over gloo across the hosts: rendezvous at rank 0's address on
    GLOO_SOCKET_IFNAME (``iface`` when unset; benchmarks/allreduce.py's gloo_setup)."""
    from allreduce import gloo_setup  # benchmarks/ is the script's folder
    os.environ.setdefault("GLOO_SOCKET_IFNAME", iface)
    gloo_setup(comm, True, across_hosts=True)
    import torch
    torch.set_num_threads(1)
    return torch


def build(lib, model, seed):
    """(module, optimizer, step(module) -> None) of ``model`` written against ``lib``."""
    from step import _gpt  # benchmarks/step.py: examples/gpt.py's GPT for dtrain and torch
    lib.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if model == "mlp":
        nn = lib.nn
        module = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
        x = lib.from_numpy(rng.standard_normal((MLP_BATCH, 784)).astype(np.float32))
        y = lib.from_numpy(rng.integers(0, 10, MLP_BATCH))
        opt = lib.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step(m):
            opt.zero_grad()
            loss_fn(m(x), y).backward()
            opt.step()
        return module, step
    module = _gpt(lib, **GPT_SHAPE)
    window = rng.integers(0, GPT_SHAPE["vocab_size"], (GPT_BATCH, GPT_SHAPE["block_size"] + 1))
    x, y = lib.from_numpy(window[:, :-1].copy()), lib.from_numpy(window[:, 1:].copy())
    params = list(module.parameters())
    opt = lib.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                           {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=3e-4)

    def step(m):
        opt.zero_grad(set_to_none=True)
        m(x, y).backward()
        lib.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return module, step


def variants_of(model, groups, powersgd_rank, torch):
    """{name: (callable module, step)}: each variant's own model and optimizer."""
    import dtrain
    from dtrain.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD
    from dtrain.parallel import DistributedDataParallel as DDP
    out = {}
    for name, group in groups.items():
        if name == "by topology":  # PowerSGD's group (flat or hierarchical as the topology says)
            continue
        module, step = build(dtrain, model, 0)
        out[name] = (DDP(module, process_group=group), step)
    module, step = build(dtrain, model, 0)
    ddp = DDP(module, process_group=groups["by topology"])
    ddp.register_comm_hook(powerSGD.PowerSGDState(groups["by topology"], matrix_approximation_rank=powersgd_rank,
                                                  start_powerSGD_iter=3), powerSGD.powerSGD_hook)
    out[f"PowerSGD r={powersgd_rank}"] = (ddp, step)
    out["no comm"] = build(dtrain, model, 0)
    if torch is not None:
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as tpowerSGD
        from torch.nn.parallel import DistributedDataParallel as TDDP
        module, step = build(torch, model, 0)
        out["torch gloo"] = (TDDP(module), step)
        module, step = build(torch, model, 0)
        # one bucket: with several, torch's hook (2.13, gloo) chains its all-reduces from the buckets'
        # future callbacks in an order that differs across ranks, and gloo aborts ("Received data
        # size doesn't match expected size"), on one host too
        tddp = TDDP(module, bucket_cap_mb=100)
        tddp.register_comm_hook(tpowerSGD.PowerSGDState(None, matrix_approximation_rank=powersgd_rank,
                                                        start_powerSGD_iter=3), tpowerSGD.powerSGD_hook)
        out[f"torch gloo PowerSGD r={powersgd_rank}"] = (tddp, step)
        out["torch no comm"] = build(torch, model, 0)
    return out


class Payload:
    """Bytes and collectives that dtrain DDP, or torch's, hands to the all-reduces while ``on``
    (dtrain.comm's all_reduce/all_reduce_coalesced, torch.distributed's all_reduce wrapped)."""

    def __init__(self, torch):
        import dtrain.comm as dist
        self.on, self.bytes, self.calls, self.undo = False, 0, 0, []
        modules = [(dist, ("all_reduce", "all_reduce_coalesced"))]
        if torch is not None:
            import torch.distributed as tdist
            modules.append((tdist, ("all_reduce",)))
        for module, names in modules:
            for name in names:
                fn = getattr(module, name)
                setattr(module, name, self._counting(fn))
                self.undo.append((module, name, fn))

    def _counting(self, fn):
        def counted(tensors, *args, **kw):
            if self.on:
                for a in tensors if isinstance(tensors, (list, tuple)) else [tensors]:
                    a = getattr(a, "array", a)
                    self.bytes += a.nbytes if hasattr(a, "nbytes") else a.numel() * a.element_size()
                self.calls += 1
            return fn(tensors, *args, **kw)
        return counted

    def restore(self):
        for module, name, fn in self.undo:
            setattr(module, name, fn)


def timed(comm, fn, times=5):
    """Best of ``times`` calls (after one), each from a barrier, the slowest rank's seconds."""
    from mpi4py import MPI
    fn()
    best = float("inf")
    for _ in range(times):
        comm.Barrier()
        start = time.perf_counter()
        fn()
        best = min(best, comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    return best


def link(comm, groups, torch):
    """{group name: (busbw GB/s of 4 MiB, latency s of 4 KiB)} for dtrain's groups and gloo."""
    import dtrain.comm as dist
    from dtrain import preflight
    n, out = comm.size, {}
    small = np.ones(LATENCY_BYTES // 4, np.float32)
    for name, group in groups.items():
        comm.Barrier()
        busbw = min(comm.allgather(preflight.allreduce_busbw(group, n)))  # the slowest rank's view
        out[name] = (busbw, timed(comm, lambda g=group: dist.all_reduce(small, group=g)))
    if torch is not None:
        big = torch.ones(preflight.MESSAGE_BYTES // 4)
        tsmall = torch.from_numpy(small)
        t = timed(comm, lambda: torch.distributed.all_reduce(big))
        out["gloo"] = (preflight.MESSAGE_BYTES / t * 2 * (n - 1) / n / 1e9,
                       timed(comm, lambda: torch.distributed.all_reduce(tsmall)))
    return out


def run_model(comm, model, groups, links, gemm, args, torch):
    from mpi4py import MPI
    from dtrain import preflight
    variants = variants_of(model, groups, args.powersgd_rank, torch)
    payload = Payload(torch)
    times = {name: [] for name in variants}
    sent = {}
    for step in range(args.warmup + args.steps):
        for name, (module, fn) in variants.items():
            comm.Barrier()
            payload.on, payload.bytes, payload.calls = step == args.warmup, 0, 0
            start = time.perf_counter()
            fn(module)
            took = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
            payload.on = False
            if step == args.warmup:
                sent[name] = (payload.bytes, payload.calls)
                if name == "torch gloo":  # torch's reducer all-reduces in C++, past the Python wrapper
                    sent[name] = (4 * sum(p.numel() for p in module.parameters()), 1)
            if step >= args.warmup:
                times[name].append(took)
    payload.restore()
    med = {name: statistics.median(ts) for name, ts in times.items()}
    n = comm.size
    parameters = sum(p.numel() for p in variants["no comm"][0].parameters())
    tokens = 1 if model == "mlp" else GPT_SHAPE["block_size"]
    batch = MLP_BATCH if model == "mlp" else GPT_BATCH
    rows = []
    for name in variants:
        torch_side = name.startswith("torch")
        compute = med["torch no comm" if torch_side else "no comm"]
        group = "gloo" if torch_side else ("hierarchical" if name == "hierarchical" else
                                           "by topology" if "PowerSGD" in name else "flat")
        nbytes, calls = sent.get(name, (0, 0))
        row = dict(variant=name, step_ms=med[name] * 1e3, steps_ms=[t * 1e3 for t in times[name]],
                   bytes=nbytes, collectives=calls, samples_per_s=batch * n / med[name])
        if name not in ("no comm", "torch no comm"):
            busbw, latency = links[group]
            # pre-flight's model: compute from FLOPs at the GEMM rate, comm at busbw (no loader time)
            flops_compute, comm_s, _ = preflight.predict(nbytes / 4, preflight.FLOPS_PER_PARAMETER * parameters * tokens,
                                                          batch, gemm, busbw, float("inf"), n)
            comm_s += calls * latency
            row.update(group=group, busbw_GBps=busbw, latency_ms=latency * 1e3, comm_pred_ms=comm_s * 1e3,
                       pred_ms=(compute + comm_s) * 1e3, pred_low_ms=max(compute, comm_s) * 1e3,
                       preflight_ms=(flops_compute + comm_s) * 1e3)
        rows.append(row)
    return dict(model=model, parameters=parameters, batch_per_rank=batch, rows=rows,
                gemm_compute_ms=preflight.predict(0, preflight.FLOPS_PER_PARAMETER * parameters * tokens, batch, gemm,
                                                  1.0, float("inf"), n)[0] * 1e3)


def job(args):
    import dtrain.comm as dist
    from dtrain import preflight
    from allreduce import group_with  # benchmarks/ is the script's folder
    dist.init_process_group(backend="mpi")
    from mpi4py import MPI
    comm = MPI.COMM_WORLD.Dup()
    hosts = comm.allgather(socket.gethostname())
    per_host = max(hosts.count(h) for h in hosts)
    groups = {"flat": group_with("0")}
    if per_host > 1:
        groups["hierarchical"] = group_with("1")
    groups["by topology"] = dist.new_group(list(range(comm.size)))
    torch = None if args.no_torch else torch_setup(comm, args.iface)
    gemm = min(comm.allgather(preflight.gemm_gflops(comm.rank)))
    links = link(comm, groups, torch)
    report = dict(label=args.label, ranks=comm.size, hosts=len(set(hosts)), per_host=per_host, steps=args.steps,
                  gemm_gflops=gemm, links={k: dict(busbw_GBps=b, latency_ms=t * 1e3) for k, (b, t) in links.items()},
                  models=[run_model(comm, m, groups, links, gemm, args, torch) for m in args.models])
    if comm.rank == 0:
        print_job(report)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if torch is not None:
        torch.distributed.destroy_process_group()
    dist.destroy_process_group()


def print_job(report):
    print(f"{report['label']}: {report['ranks']} ranks on {report['hosts']} hosts; GEMM {report['gemm_gflops']:.1f} "
          f"GFLOP/s; " + ", ".join(f"{k} busbw {v['busbw_GBps']:.3f} GB/s, latency {v['latency_ms']:.2f} ms"
                                   for k, v in report["links"].items()))
    for m in report["models"]:
        print(f"{m['model']} ({m['parameters']:,} parameters, batch {m['batch_per_rank']} per rank)")
        print(f"  {'variant':<26} {'step ms':>8} {'pred ms':>8} {'preflight':>9} {'comm pred':>9} {'bytes':>11}")
        for r in m["rows"]:
            p = lambda k: f"{r[k]:.1f}" if k in r else ""  # noqa: E731
            print(f"  {r['variant']:<26} {r['step_ms']:8.1f} {p('pred_ms'):>8} {p('preflight_ms'):>9} "
                  f"{p('comm_pred_ms'):>9} {r['bytes']:11,}")


# ---- the sweep (as root, outside the cluster) and its report --------------------------------

def sweep(args):
    fake = os.path.join(ROOT, "launch", "fake_cluster.sh")
    name, subnet = args.cluster, args.subnet
    hostfile = os.path.join(RESULTS, f".hosts-{name}")
    layout = f"{args.hosts}x{args.per_host}"
    env = dict(os.environ, SSH=os.path.join(ROOT, "launch", "fake_ssh.sh"), MPIRUN=os.path.join(ROOT, ".venv/bin/mpiexec"),
               PYTHON=sys.executable, MPIRUN_ARGS=f"-localhost {subnet}.1", UCX_LOG_LEVEL="error")
    subprocess.run(["bash", fake, "up", name, str(args.hosts), subnet], check=True)
    files = []
    try:
        with open(hostfile, "w") as f:
            f.write("".join(f"{name}-h{i} slots={args.per_host}\n" for i in range(1, args.hosts + 1)))
        for repeat in range(args.repeats):
            for rate in args.rates:
                subprocess.run(["bash", fake, "rate", name, rate], check=True)
                out = os.path.join(RESULTS, f"multihost_ddp_{layout}_{rate}_{repeat}.json")
                cmd = ["bash", os.path.join(ROOT, "launch", "mpirun_hostfile.sh"), hostfile, os.path.abspath(__file__),
                       "--label", rate, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--powersgd-rank", str(args.powersgd_rank), "--json", out, "--models", *args.models]
                print(f"[{time.strftime('%H:%M:%S')}] rate {rate}, round {repeat + 1}: {' '.join(cmd)}", flush=True)
                done = subprocess.run(cmd, env=env, cwd=ROOT, timeout=args.job_timeout)
                if done.returncode == 0:
                    files.append(out)
    finally:
        subprocess.run(["bash", fake, "down", name])
        if os.path.exists(hostfile):
            os.remove(hostfile)
    report(files, os.path.join(RESULTS, f"multihost_ddp_{layout}"))


RATE_ORDER = {"off": 0, "unlimited": 0}


def rate_bits(label):
    """'10gbit' -> 1e10; 'off' -> inf (for ordering and the plot's axis)."""
    if label in RATE_ORDER:
        return float("inf")
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if label.endswith(unit):
            return float(label[:-len(unit)]) * scale
    return float("nan")


def shown(label):
    """'off' -> 'unlimited', '10gbit' -> '10 Gbit/s'."""
    if label in RATE_ORDER:
        return "unlimited"
    for unit, name in (("gbit", "Gbit/s"), ("mbit", "Mbit/s"), ("kbit", "kbit/s")):
        if label.endswith(unit):
            return f"{label[:-len(unit)]} {name}"
    return label


def report(files, stem):
    """The table (medians over the repeats of each job's median step) and the plot."""
    jobs = [json.load(open(f)) for f in files]
    if not jobs:
        raise SystemExit("multihost_ddp.py --report: no JSON files")
    rates = sorted({j["label"] for j in jobs}, key=lambda r: -rate_bits(r))
    lines = [f"{jobs[0]['hosts']} hosts x {jobs[0]['per_host']} rank(s); step = median over the timed steps, then "
             f"the median over {max(sum(j['label'] == r for j in jobs) for r in rates)} jobs per rate (slowest rank, ms)",
             "", "| model | rate | variant | step ms | x no comm | pred ms (overlap-none) | pred/meas | preflight ms | "
             "comm pred ms | busbw GB/s | bytes/step | collectives |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    table = {}
    for model in [m["model"] for m in jobs[0]["models"]]:
        for rate in rates:
            rows = {}
            for j in jobs:
                if j["label"] != rate:
                    continue
                for m in j["models"]:
                    if m["model"] == model:
                        for r in m["rows"]:
                            rows.setdefault(r["variant"], []).append(r)
            base = {k: statistics.median(r["step_ms"] for r in rows[k]) for k in ("no comm", "torch no comm") if k in rows}
            for variant, rs in rows.items():
                med = lambda k: statistics.median(r[k] for r in rs) if k in rs[0] else None  # noqa: E731
                step = med("step_ms")
                table[(model, rate, variant)] = step
                ref = base.get("torch no comm" if variant.startswith("torch") else "no comm")
                pred = med("pred_ms")
                f = lambda v, fmt: format(v, fmt) if v is not None else ""  # noqa: E731
                low = med("pred_low_ms")
                span = f"{low:.0f}-{pred:.0f}" if pred is not None else ""
                lines.append(f"| {model} | {shown(rate)} | {variant} | {step:.1f} | {step / ref:.2f} | {span} | "
                             f"{f(pred / step if pred else None, '.2f')} | {f(med('preflight_ms'), '.1f')} | "
                             f"{f(med('comm_pred_ms'), '.1f')} | {f(med('busbw_GBps'), '.3f')} | "
                             f"{int(med('bytes')):,} | {int(med('collectives'))} |")
    text = "\n".join(lines)
    print(text)
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    plot(table, rates, stem + ".png", jobs[0])
    print(f"wrote {stem}.md, {stem}.png")


def plot(table, rates, path, job0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({k[0] for k in table}, key=lambda m: m != "mlp")
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.3), squeeze=False)
    for ax, model in zip(axes[0], models):
        # each step over its framework's no-comm step in the same jobs: the machine's load (other
        # sessions' jobs on 2 cores) moves the absolute times between jobs, the ratios much less
        variants = [v for v in dict.fromkeys(v for (m, _, v) in table if m == model) if "no comm" not in v]
        width = 0.8 / len(variants)
        for i, v in enumerate(variants):
            base = "torch no comm" if v.startswith("torch") else "no comm"
            ys = [table.get((model, r, v), np.nan) / table.get((model, r, base), np.nan) for r in rates]
            bars = ax.bar(np.arange(len(rates)) + (i - (len(variants) - 1) / 2) * width, ys, width, label=v)
            ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=6)
        ax.axhline(1, color="gray", linewidth=0.8, linestyle=":")
        ax.set_xticks(range(len(rates)))
        ax.set_xticklabels([shown(r) for r in rates])
        ax.set_yscale("log")
        ax.set_ylabel("step time / the no-comm step (log)")
        ax.set_title(f"{model}: {job0['hosts']} hosts x {job0['per_host']}, weak scaling")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mlp", "gpt"], choices=["mlp", "gpt"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=4, help="untimed steps (at least 4: PowerSGD compresses from step 3)")
    p.add_argument("--powersgd-rank", type=int, default=4)
    p.add_argument("--label", default="unlimited", help="the link rate, for the table")
    p.add_argument("--json", default="multihost_ddp.json")
    p.add_argument("--no-torch", action="store_true", help="no torch DDP over gloo")
    p.add_argument("--iface", default="eth0", help="gloo's interface when GLOO_SOCKET_IFNAME is unset")
    p.add_argument("--sweep", action="store_true", help="make a fake cluster and run the jobs at each rate")
    p.add_argument("--rates", nargs="+", default=["off", "10gbit", "1gbit", "100mbit"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--per-host", type=int, default=1)
    p.add_argument("--cluster", default="mhddp")
    p.add_argument("--subnet", default="10.213.77")
    p.add_argument("--job-timeout", type=int, default=600)
    p.add_argument("--report", nargs="+", metavar="JSON", help="the table and plot of these jobs' files")
    args = p.parse_args()
    if args.warmup < 4:
        p.error("--warmup must be at least 4 (PowerSGD starts compressing at its fourth step)")
    if args.report:
        files = sorted(f for pattern in args.report for f in glob.glob(pattern))
        return report(files, os.path.join(RESULTS, "multihost_ddp_" + os.path.basename(files[0]).split("_")[2]))
    if args.sweep:
        return sweep(args)
    job(args)


if __name__ == "__main__":
    main()
