"""A/B of the CPU output pool (dtrain/tensor/ops/workspace.py ``output``): the same dtrain step with
its large results (conv2d, relu, max_pool2d, gelu, layer_norm, over 1 MiB) taken from the pool
and with every result a fresh array (the pool's threshold raised out of reach), interleaved
round by round in one process beside PyTorch's step, timed by this thread's CPU time
(time.thread_time: robust to other processes on a loaded machine), one BLAS thread. Also
counts the minor page faults per step of each variant.

Usage: python benchmarks/output_pool.py [--workload cnn gpt mlp lstm] [--rounds 9] [--steps 4]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import importlib  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import step  # noqa: E402  (benchmarks/step.py: the workloads)

workspace = importlib.import_module("dtrain.tensor.ops.workspace")
POOLED = workspace.OUTPUT_BYTES


def _variant(fn, threshold):
    def run():
        workspace.OUTPUT_BYTES = threshold
        fn()
    return run


def _faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ["cnn", "gpt", "mlp", "lstm"]
    ap.add_argument("--workload", nargs="+", default=["cnn", "gpt"], choices=names)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    makers = step.workloads()
    for w in args.workload:
        dtrain_step = makers[w]["dtrain-nn"]()
        fns = {"pooled": _variant(dtrain_step, POOLED), "fresh": _variant(dtrain_step, 1 << 62)}
        if step._available("torch"):
            fns["torch"] = makers[w]["torch"]()
        times, faults = {k: [] for k in fns}, {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, fn in fns.items():
                fn()  # one untimed step after switching: the pool fills, or its buffers go unused
                f0, t0 = _faults(), time.thread_time()
                for _ in range(args.steps):
                    fn()
                times[k].append((time.thread_time() - t0) / args.steps)
                faults[k].append((_faults() - f0) / args.steps)
        workspace.OUTPUT_BYTES = POOLED
        print(f"\n{w}: CPU ms per step (median of {args.rounds} rounds), ratios = medians of per-round ratios")
        for k, ts in times.items():
            ratios = "".join(f"  / {b} {statistics.median(a / c for a, c in zip(ts, times[b])):.3f}"
                             for b in ("fresh", "torch") if b in times)
            print(f"  {k:7s} {statistics.median(ts) * 1e3:8.2f}{ratios}  page faults/step "
                  f"{statistics.median(faults[k]):8.0f}")


if __name__ == "__main__":
    main()
