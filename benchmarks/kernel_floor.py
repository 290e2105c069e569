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

Two alternatives measured and not kept (benchmarks/RESULTS.md, Session 6), for the record:

  conv2-winograd  conv2 forward + backward by Winograd F(2x2, 3x3) in NumPy: 16 GEMMs with
              2.25x fewer multiplications, the tile transforms as (16, 16) and (4, 16) GEMMs,
              the backward as the adjoint of each stage (exact gradients of the same sum)
  gelu-numexpr    the exact GELU (the same erf formula) and its derivative in one numexpr
              expression each, one numexpr thread (only when numexpr is installed)

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


# Winograd F(2x2, 3x3) (Lavin and Gray 2016): out tile = A^T [(G w G^T) * (B^T d B)] A
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
_BB, _AA = np.kron(_BT, _BT), np.kron(_AT, _AT)  # (16, 16) and (4, 16): both 2-D transforms at once


def _winograd_forward(x, w, b):
    """conv2d(x, w, b, padding=1) for a 3x3 kernel, even H and W; returns (y, saved)."""
    n, c, h, wd = x.shape
    o, th, tw = w.shape[0], h // 2, wd // 2
    xpad = np.zeros((n, c, h + 2, wd + 2), np.float32)
    xpad[:, :, 1:-1, 1:-1] = x
    tiles = np.lib.stride_tricks.sliding_window_view(xpad, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    d = np.empty((4, 4, c, n, th, tw), np.float32)
    d[...] = tiles.transpose(4, 5, 1, 0, 2, 3)
    v = (_BB @ d.reshape(16, -1)).reshape(16, c, -1)
    u = np.einsum("ai,ocij,bj->aboc", _G, w, _G).reshape(16, o, c)
    m = u @ v  # 16 GEMMs (O, C) @ (C, N * tiles)
    yt = (_AA @ m.reshape(16, -1)).reshape(2, 2, o, n, th, tw)
    y = np.empty((n, o, th, 2, tw, 2), np.float32)
    np.add(yt.transpose(3, 2, 4, 0, 5, 1), b.reshape(o, 1, 1, 1, 1), out=y)
    return y.reshape(n, o, h, wd), (v, u)


def _winograd_backward(g, saved, x_shape):
    v, u = saved
    n, c, h, wd = x_shape
    o, th, tw = g.shape[1], h // 2, wd // 2
    gy = np.empty((2, 2, o, n, th, tw), np.float32)
    gy[...] = g.reshape(n, o, th, 2, tw, 2).transpose(3, 5, 1, 0, 2, 4)
    dm = (_AA.T @ gy.reshape(4, -1)).reshape(16, o, -1)
    gw = np.einsum("ai,aboc,bj->ocij", _G, (dm @ v.transpose(0, 2, 1)).reshape(4, 4, o, c), _G)
    gb = g.sum(axis=(0, 2, 3))
    dd = (_BB.T @ (u.transpose(0, 2, 1) @ dm).reshape(16, -1)).reshape(4, 4, c, n, th, tw)
    gx = np.zeros((n, c, h + 2, wd + 2), np.float32)
    for i in range(4):  # overlapping tiles: their gradients add
        for j in range(4):
            gx[:, :, i:i + 2 * th:2, j:j + 2 * tw:2] += dd[i, j].transpose(1, 0, 2, 3)
    return gx[:, :, 1:-1, 1:-1], gw, gb


def _winograd_step(x, w, b):
    g = np.ones((x.shape[0], w.shape[0]) + x.shape[2:], np.float32)

    def step():
        y, saved = _winograd_forward(x, w, b)
        _winograd_backward(g, saved, x.shape)
    return step


def _numexpr_gelu(act):
    """GELU forward and derivative as two numexpr expressions (A&S 7.1.26 erf, as dtrain's
    NumPy kernel), then the backward's product: None when numexpr is not installed."""
    try:
        import numexpr
    except ImportError:
        return None
    numexpr.set_num_threads(1)
    consts = {k: np.float32(v) for k, v in dict(
        a1=0.254829592, a2=-0.284496736, a3=1.421413741, a4=-1.453152027, a5=1.061405429,
        p=0.3275911 / 2 ** 0.5, c=(2 * np.pi) ** -0.5, h=0.5, one=1.0).items()}
    cdf = ("(h + where(x < 0, -h, h) * (one - t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))"
           " * exp(-h * x * x)))")
    grad = np.ones_like(act)

    def step():
        env = dict(consts, x=act, t=numexpr.evaluate("one / (one + p * abs(x))", local_dict=dict(consts, x=act)))
        numexpr.evaluate(f"x * {cdf}", local_dict=env)
        deriv = numexpr.evaluate(f"{cdf} + x * exp(-h * x * x) * c", local_dict=env)
        grad * deriv
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
        "conv2-winograd": {"numpy winograd": _winograd_step(x, w, b), "dtrain": _fwd_bwd(dtrain, _conv2, x, w, b)},
        "gelu": {"dtrain": _fwd_bwd(dtrain, _gelu, act)},
        "layer_norm": {"dtrain": _fwd_bwd(dtrain, _layer_norm, res, ln_w, ln_b)},
        "gelu-numexpr": {"numexpr": _numexpr_gelu(act), "dtrain": _fwd_bwd(dtrain, _gelu, act)},
        "linear": {"numpy": _linear_gemms(np.asarray, gpt_linear)},
    }
    if torch is not None:
        table["conv2"]["torch"] = _fwd_bwd(torch, _conv2, x, w, b)
        table["conv2-gemm"]["torch conv2"] = table["conv2"]["torch"]
        table["conv2-winograd"]["torch"] = table["conv2"]["torch"]
        table["gelu"]["torch"] = _fwd_bwd(torch, _gelu, act)
        table["layer_norm"]["torch"] = _fwd_bwd(torch, _layer_norm, res, ln_w, ln_b)
        table["linear"]["torch"] = _linear_gemms(torch.from_numpy, gpt_linear)
    if table["gelu-numexpr"]["numexpr"] is None:
        del table["gelu-numexpr"]
    return table


def _winograd_error(torch):
    """The Winograd convolution's largest error relative to the largest value, per output, against
    PyTorch's conv2d (float32), printed with its timing row."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)
    w = (rng.standard_normal((64, 32, 3, 3)) * 0.1).astype(np.float32)
    b, g = rng.standard_normal(64).astype(np.float32), rng.standard_normal((8, 64, 16, 16)).astype(np.float32)
    y, saved = _winograd_forward(x, w, b)
    mine = (y,) + _winograd_backward(g, saved, x.shape)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, padding=1)
    yt.backward(torch.from_numpy(g))
    theirs = [t.detach().numpy() for t in (yt, xt.grad, wt.grad, bt.grad)]
    return {k: float(np.abs(a - t).max() / np.abs(t).max()) for k, a, t in zip(("y", "gx", "gw", "gb"), mine, theirs)}


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
    if torch is not None:
        results["conv2-winograd"]["error vs torch"] = err = _winograd_error(torch)
        print("\nconv2-winograd: largest error / largest value vs torch (float32):",
              ", ".join(f"{k} {v:.1e}" for k, v in err.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
