"""The pre-flight check: ``python -m dtrain.launch --preflight [--nproc N]``.

Before a long job, every rank measures what its steps will be made of, at the same time as
the others (as in training), and rank 0 prints one table:

* GEMM GFLOP/s: a 512 x 512 float32 matmul through dtrain's own ops (on the rank's GPU
  when it has one), the best of 5 or more (as many as fit in 0.2 s, up to 50);
* DataLoader samples/s: batches of 256 MNIST-sized samples from an in-memory dataset, the
  best epoch of 2 or more;
* all-reduce busbw of 4 MiB float32 across all ranks and within every pair of ranks (pairs
  in rounds: each round a set of disjoint pairs, measured side by side; up to
  ``MAX_PAIR_RANKS`` ranks, beyond that only the neighbours (r, r+1));
* the predicted step time of a model (``--model``: ``mlp``, the reference MLP, or
  ``file.py:factory`` / ``package.module:factory``, a callable returning a Module) from its
  parameter count: 6 FLOPs per parameter per sample (forward 2, backward 4: dense layers;
  ``--flops-per-sample`` overrides it) at the slowest rank's GEMM rate, the gradient's
  all-reduce at the measured busbw, and a batch's loading time; the range is perfect overlap
  of communication with backward to none.

A rank whose GEMM or DataLoader rate, or a pair whose busbw, is below ``--threshold``
(default 0.5) times the median of the others is an outlier: it is named on a ``FAIL`` line and every
rank exits 1. ``DTRAIN_PREFLIGHT_SLOW_RANK=R`` makes rank R sleep in its GEMMs (to see the
check fail; the tests plant a slow rank this way).
"""
import os
import runpy
import socket
import statistics
import time

from . import comm as dist
from . import cuda
from .data import DataLoader, TensorDataset
from .nn import Linear, ReLU, Sequential
from .tensor import matmul, randn, zeros

SLOW_RANK_ENV = "DTRAIN_PREFLIGHT_SLOW_RANK"
GEMM_N, REPEATS, BUDGET_S = 512, 5, 0.2
MESSAGE_BYTES = 4 << 20
LOADER_BATCH, LOADER_SAMPLES = 256, 4096
MAX_PAIR_RANKS = 16
FLOPS_PER_PARAMETER = 6  # per sample: forward 2 (a multiply-add), backward 4 (input and weight gradients)
MLP_BATCH = 256


def _device():
    return f"cuda:{cuda.current_device()}" if cuda.is_available() else "cpu"


def _sync():
    if cuda.is_available():
        cuda.synchronize()


def _best(fn, repeats=REPEATS, budget=BUDGET_S):
    """The fastest of at least ``repeats`` timed calls after one warm-up, more while within
    ``budget`` seconds (up to 10 x ``repeats``): the least disturbed by a busy machine. On a
    loaded CPU a multi-threaded BLAS call is often 10x slower than the next one."""
    fn()
    best, spent, done = float("inf"), 0.0, 0
    while done < repeats or (spent < budget and done < 10 * repeats):
        t = time.perf_counter()
        fn()
        _sync()
        took = time.perf_counter() - t
        best, spent, done = min(best, took), spent + took, done + 1
    return best


def gemm_gflops(rank):
    """This rank's float32 matmul rate in GFLOP/s."""
    a, b = randn(GEMM_N, GEMM_N, device=_device()), randn(GEMM_N, GEMM_N, device=_device())
    slow = os.environ.get(SLOW_RANK_ENV, "") == str(rank)

    def gemm():
        matmul(a, b)
        if slow:
            time.sleep(0.1)
    return 2 * GEMM_N ** 3 / _best(gemm) / 1e9


def loader_samples_per_s():
    """Samples per second through a DataLoader (batch 256, 784 float32 features, no workers)."""
    data = TensorDataset(randn(LOADER_SAMPLES, 784), zeros(LOADER_SAMPLES))
    loader = DataLoader(data, batch_size=LOADER_BATCH, shuffle=True)

    def epoch():
        for _ in loader:
            pass
    return LOADER_SAMPLES / _best(epoch, repeats=2)


def allreduce_busbw(group, size):
    """busbw in GB/s of a 4 MiB float32 all-reduce over ``group`` (``size`` ranks), best of 5."""
    t = zeros(MESSAGE_BYTES // 4, device=_device())

    def once():
        dist.all_reduce(t, group=group)
    # a fixed count, not a time budget: every rank of the group must make the same calls
    return MESSAGE_BYTES / _best(once, budget=0) * 2 * (size - 1) / size / 1e9


def pair_rounds(n):
    """The pairs of ranks to measure, in rounds of disjoint pairs (the circle method): every
    pair for up to MAX_PAIR_RANKS ranks, else the neighbours (r, r+1).

    Example:
        >>> pair_rounds(4)
        [[(0, 3), (1, 2)], [(0, 2), (1, 3)], [(0, 1), (2, 3)]]
    """
    if n > MAX_PAIR_RANKS:
        return [[(r, r + 1) for r in range(start, n - 1, 2)] for start in (0, 1)]
    ranks = list(range(n)) + ([None] if n % 2 else [])
    m, rounds = len(ranks), []
    for _ in range(m - 1):
        pairs = [(ranks[i], ranks[m - 1 - i]) for i in range(m // 2)]
        rounds.append(sorted(tuple(sorted(p)) for p in pairs if None not in p))  # None: the odd rank sits out
        ranks = [ranks[0], ranks[-1], *ranks[1:-1]]
    return rounds


def measure():
    """This rank's measurements, the world's all-reduce and the pairs' (a dict)."""
    rank, n = dist.get_rank(), dist.get_world_size()
    dist.barrier()
    found = {"rank": rank, "host": socket.gethostname(), "gemm": gemm_gflops(rank)}
    dist.barrier()
    found["loader"] = loader_samples_per_s()
    found["pairs"] = {}
    if n > 1:
        dist.barrier()
        found["all"] = allreduce_busbw(None, n)
        for pairs in pair_rounds(n) if n > 2 else []:
            groups = [(p, dist.new_group(list(p))) for p in pairs]  # every rank makes every group
            dist.barrier()
            for p, group in groups:
                if rank in p:
                    found["pairs"][p] = allreduce_busbw(group, 2)
    return found


def busbw(results):
    """(all ranks, {pair: busbw}) in GB/s, each the slowest view among its ranks (a collective
    is done when its last rank has the result)."""
    pairs = {}
    for r in results:
        for p, v in r["pairs"].items():
            pairs[p] = min(v, pairs.get(p, v))
    return min(r.get("all", float("inf")) for r in results), pairs


def model_size(spec):
    """(name, parameters, batch per rank) of ``--model``: ``mlp`` or ``file.py:factory`` /
    ``module:factory``.

    Raises:
        ValueError: a spec of neither form, or a factory that returns no Module.
    """
    if spec == "mlp":  # the reference MLP of DESIGN.md
        model = Sequential(Linear(784, 1024), ReLU(), Linear(1024, 1024), ReLU(), Linear(1024, 10))
        return "the reference MLP", sum(p.numel() for p in model.parameters()), MLP_BATCH
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"--model {spec!r}: give 'mlp', 'file.py:factory' or 'package.module:factory'")
    namespace = runpy.run_path(where) if where.endswith(".py") else vars(__import__(where, fromlist=[name]))
    if name not in namespace:
        raise ValueError(f"--model {spec!r}: {where} has no {name!r}")
    model = namespace[name]()
    if not hasattr(model, "parameters"):
        raise ValueError(f"--model {spec!r}: {name}() returned a {type(model).__name__}, not a Module")
    return spec, sum(p.numel() for p in model.parameters()), None


def predict(parameters, flops_per_sample, batch, gemm, busbw, loader, n):
    """(compute, all-reduce, data) seconds of one step: the batch's FLOPs at ``gemm`` GFLOP/s,
    a float32 gradient all-reduce at ``busbw`` GB/s (none on one rank), the batch's loading."""
    compute = flops_per_sample * batch / (gemm * 1e9)
    comm = parameters * 4 * 2 * (n - 1) / n / (busbw * 1e9) if n > 1 else 0.0
    return compute, comm, batch / loader


def outliers(results, threshold):
    """The FAIL lines: each rank (GEMM, DataLoader) and pair (busbw, from 3 pairs on) below
    ``threshold`` x the median of the others (at 2 ranks: the other rank)."""
    lines = []
    for key, what, unit in (("gemm", "GEMM", "GFLOP/s"), ("loader", "DataLoader", "samples/s")):
        for r in results:
            others = [o[key] for o in results if o is not r]
            median = statistics.median(others) if others else 0
            if r[key] < threshold * median:
                lines.append(f"rank {r['rank']}: {what} {r[key]:,.1f} {unit} is {r[key] / median:.2f}x the other "
                             f"ranks' median {median:,.1f} (threshold {threshold:g})")
    pairs = busbw(results)[1]
    for p, v in sorted(pairs.items()) if len(pairs) > 2 else ():
        median = statistics.median(o for q, o in pairs.items() if q != p)
        if v < threshold * median:
            lines.append(f"ranks {p[0]} and {p[1]}: all-reduce busbw {v:.2f} GB/s is {v / median:.2f}x the other "
                         f"pairs' median {median:.2f} (threshold {threshold:g})")
    return lines


def report(results, model, flops_per_sample, batch, threshold):
    """The table, the prediction and the verdict (lines), and the exit code."""
    n = len(results)
    lines = [f"dtrain pre-flight: {n} rank{'s' if n > 1 else ''}, {dist.get_backend()} backend, "
             f"{len({r['host'] for r in results})} host(s)",
             f"{'rank':>4}  {'host':<16} {'GEMM GFLOP/s':>12}  {'DataLoader samples/s':>20}"]
    lines += [f"{r['rank']:>4}  {r['host'][:16]:<16} {r['gemm']:12.1f}  {r['loader']:20,.0f}" for r in results]
    every, pairs = busbw(results)
    if n > 1:
        lines.append(f"all-reduce busbw, {MESSAGE_BYTES >> 20} MiB float32: all {n} ranks {every:.2f} GB/s")
        lines += [f"  ranks {a}-{b}: {v:.2f} GB/s" for (a, b), v in sorted(pairs.items())]
    name, parameters, default_batch = model
    batch = batch or default_batch or MLP_BATCH
    flops = flops_per_sample or FLOPS_PER_PARAMETER * parameters
    compute, comm, data = predict(parameters, flops, batch, min(r["gemm"] for r in results), every,
                                  min(r["loader"] for r in results), n)
    lines.append(f"predicted step of {name} ({parameters:,} parameters, {flops / 1e6:,.1f} MFLOP/sample, batch "
                 f"{batch} per rank): compute {compute * 1e3:.1f} ms at the slowest rank's GEMM rate, all-reduce "
                 f"{comm * 1e3:.1f} ms, data {data * 1e3:.1f} ms: {(data + max(compute, comm)) * 1e3:.1f}-"
                 f"{(data + compute + comm) * 1e3:.1f} ms (with and without overlap)")
    failed = outliers(results, threshold)
    lines += [f"FAIL: {line}" for line in failed] or [f"OK: no rank or pair below {threshold:g}x the median"]
    return lines, 1 if failed else 0


def run(model="mlp", flops_per_sample=None, batch=None, threshold=0.5):
    """Measure on every rank (each must call it), print the report on rank 0; returns the exit
    code (the same on every rank: 1 if a rank or pair is an outlier)."""
    size = model_size(model)  # a bad --model fails before any measurement
    mine = measure()
    results = [None] * dist.get_world_size()
    dist.all_gather_object(results, mine)
    lines, code = report(results, size, flops_per_sample, batch, threshold)
    if dist.get_rank() == 0:
        print("\n".join(lines), flush=True)
    return code
