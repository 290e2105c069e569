"""What the always-on timing forensics cost (issue 15): the phase timer's spans and the
straggler gather, on the reference MLP's DDP step at N ranks (default 2).

Three variants run interleaved step by step in the same processes, on the same model and data
(the noise of a shared machine hits them alike); the table shows median step times and each
variant's median per-step ratio to "off":
  off       the spans' bodies replaced by no-ops (what an empty ``with`` costs stays) and no
            straggler gather
  default   as shipped: the spans, and the straggler gather every 100 steps
  every     the spans, and the straggler gather on every step (the worst case)
It also times one span against an empty context manager, and counts the spans per step.

Usage: mpiexec -n 2 python benchmarks/timing_overhead.py [--steps 60]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from scaling import batch, reference_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    import dtrain
    import dtrain.comm as dist
    from dtrain import timing
    from dtrain.parallel import DistributedDataParallel
    from dtrain.timing import phases
    dist.init_process_group()
    logging.getLogger("dtrain.stragglers").setLevel(logging.ERROR)  # single-step windows are noise, not stragglers
    rank, n = dist.get_rank(), dist.get_world_size()
    x, y = (dtrain.tensor(a) for a in batch("mlp", 256, seed=rank))
    dtrain.manual_seed(0)
    ddp = DistributedDataParallel(reference_model(dtrain.nn, "mlp"))
    opt = dtrain.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    loss_fn = dtrain.nn.CrossEntropyLoss()
    real = phases._Span.__enter__, phases._Span.__exit__

    class Null:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def configure(variant):
        if variant == "off":
            phases._Span.__enter__, phases._Span.__exit__ = Null.__enter__, Null.__exit__
        else:
            phases._Span.__enter__, phases._Span.__exit__ = real
        ddp.reducer.stragglers.every = {"off": 0, "default": 100, "every": 1}[variant]

    def step():
        opt.zero_grad()
        loss_fn(ddp(x), y).backward()
        opt.step()

    variants = ["off", "default", "every"]
    for v in variants:  # warm-up; ranks configure alike, so the gathers match
        configure(v)
        step()
    counts = []
    times = {v: [] for v in variants}
    for i in range(args.steps):
        for v in (variants if i % 2 == 0 else variants[::-1]):
            configure(v)
            dist.barrier()
            t = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t)
    configure("default")
    phases.events, saved = [], phases.events  # count one step's spans through the trace buffer
    step()
    counts.append(sum(1 for e in phases.events if e[1] == phases._main))
    phases.events = saved
    everyone = [None] * n
    dist.all_gather_object(everyone, times)
    if rank == 0:
        slowest = {v: [max(e[v][i] for e in everyone) for i in range(args.steps)] for v in variants}
        span = timing.span_seconds(n=100_000)
        null = timing.span_seconds(Null(), n=100_000)
        print(f"command: mpiexec -n {n} python benchmarks/timing_overhead.py --steps {args.steps}")
        print(f"one span {span * 1e6:.2f} us (an empty context manager {null * 1e6:.2f} us); "
              f"{counts[0]} spans per DDP step")
        print(f"{'variant':8} {'step ms':>8} {'vs off':>8}")
        for v in variants:
            ratio = statistics.median(a / b for a, b in zip(slowest[v], slowest["off"]))
            print(f"{v:8} {statistics.median(slowest[v]) * 1e3:8.2f} {ratio:8.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
