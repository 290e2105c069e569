"""Where the GPT and CNN steps' remaining gap to PyTorch sits: kernels, side by side.

benchmarks/step.py measures whole steps; this script takes apart the pieces that stay slower
than PyTorch's CPU build after the work recorded in benchmarks/RESULTS.md, and sets each beside
its floor on a NumPy backend:

  conv2       the reference CNN's second convolution, (64, 32, 16, 16) -> 64 channels, 3x3,
              padding 1, forward + backward (input, weight and bias gradients)
  conv2-gemm  only the three GEMMs that convolution runs through NumPy/OpenBLAS (forward,
              weight gradient, input gradient, at the shapes dtrain uses): no im2col, no
              scatter, no allocation. No NumPy convolution can be faster than this row.
  gelu        F.gelu (exact, erf) forward + backward on the GPT's MLP activations (16, 64, 512)
  layer_norm  F.layer_norm forward + backward on the GPT's residual stream (16, 64, 128)
  linear      the GPT's Linear layers' GEMMs (x @ W.T at its 5 shapes, 1024 rows), forward only

PyTorch runs oneDNN's direct convolution and one fused vectorized kernel per activation or
normalization; NumPy makes one pass over memory per ufunc (the exact GELU is ~20 of them).

Timing: CPU time of this thread (time.thread_time), one BLAS thread, variants interleaved
round by round; the ratio is the median of per-round ratios.

Usage: python benchmarks/kernel_floor.py [--rounds 9] [--json out.json]
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain  # noqa: E402


def _timer(fn, calls):
    def run():
        start = time.thread_time()
        for _ in range(calls):
            fn()
        return (time.thread_time() - start) / calls
    return run


def _fwd_bwd(lib, op, *arrays):
    """op(*tensors) forward and backward with a gradient of ones, the first tensor an input."""
    tensors = [lib.tensor(a, requires_grad=True) for a in arrays]
    probe = op(lib, *tensors)
    grad = lib.ones(*probe.shape)

    def step():
        op(lib, *tensors).backward(grad)
    return step


def _conv2(lib, x, w, b):
    return lib.nn.functional.conv2d(x, w, b, padding=1)


def _gelu(lib, x):
    return lib.nn.functional.gelu(x)


def _layer_norm(lib, x, w, b):
    return lib.nn.functional.layer_norm(x, (x.shape[-1],), w, b)


def _conv2_gemms(x, w):
    """The GEMMs of dtrain's conv2d at this shape (dtrain/tensor/ops/conv.py), on ready
    operands: (O, K + 1) @ (N, K + 1, M) forward, the batched weight gradient with its sum over
    the batch, and W^T @ G for the input gradient."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    rng = np.random.default_rng(2)
    cols = rng.standard_normal((n, 1, c * 9 + 1, h * wd)).astype(np.float32)
    wm = rng.standard_normal((1, o, c * 9 + 1)).astype(np.float32)
    gm = rng.standard_normal((n, 1, o, h * wd)).astype(np.float32)
    wk = np.ascontiguousarray(wm[:, :, :c * 9].swapaxes(-1, -2))

    def step():
        wm @ cols
        (gm @ cols.swapaxes(-1, -2)).sum(axis=0)
        wk @ gm
    return step


def _linear_gemms(wrap, shapes):
    rng = np.random.default_rng(3)
    pairs = [(wrap(rng.standard_normal((1024, k)).astype(np.float32)),
              wrap(rng.standard_normal((m, k)).astype(np.float32))) for k, m in shapes]

    def step():
        for x, w in pairs:
            x @ w.T
    return step


def cases(torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32, 16, 16)).astype(np.float32)
    w = (rng.standard_normal((64, 32, 3, 3)) * 0.1).astype(np.float32)
    b = np.zeros(64, np.float32)
    act = rng.standard_normal((16, 64, 512)).astype(np.float32)
    res = rng.standard_normal((16, 64, 128)).astype(np.float32)
    ln_w, ln_b = np.ones(128, np.float32), np.zeros(128, np.float32)
    gpt_linear = [(128, 384), (128, 128), (128, 512), (512, 128), (128, 160)]
    table = {
        "conv2": {"dtrain": _fwd_bwd(dtrain, _conv2, x, w, b)},
        "conv2-gemm": {"numpy": _conv2_gemms(x, w)},
        "gelu": {"dtrain": _fwd_bwd(dtrain, _gelu, act)},
        "layer_norm": {"dtrain": _fwd_bwd(dtrain, _layer_norm, res, ln_w, ln_b)},
        "linear": {"numpy": _linear_gemms(np.asarray, gpt_linear)},
    }
    if torch is not None:
        table["conv2"]["torch"] = _fwd_bwd(torch, _conv2, x, w, b)
        table["conv2-gemm"]["torch conv2"] = table["conv2"]["torch"]
        table["gelu"]["torch"] = _fwd_bwd(torch, _gelu, act)
        table["layer_norm"]["torch"] = _fwd_bwd(torch, _layer_norm, res, ln_w, ln_b)
        table["linear"]["torch"] = _linear_gemms(torch.from_numpy, gpt_linear)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=10, help="calls per variant per round")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    results = {}
    for name, variants in cases(torch).items():
        timers = {v: _timer(fn, args.calls) for v, fn in variants.items()}
        for t in timers.values():
            t()  # warm-up
        times = {v: [] for v in timers}
        for _ in range(args.rounds):
            for v, t in timers.items():
                times[v].append(t())
        first = next(iter(times))
        row = {v: statistics.median(ts) * 1e3 for v, ts in times.items()}
        ratios = {v: statistics.median(a / b for a, b in zip(times[first], ts)) for v, ts in times.items()}
        results[name] = {"ms": row, f"{first} / variant": ratios}
        print(f"\n{name}: ms per call (CPU time, median of {args.rounds} rounds)")
        for v in times:
            print(f"  {v:12s} {row[v]:8.3f}   {first}/{v} {ratios[v]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
