"""The one comparison helper every op test goes through.

``check_op(fn, *inputs)`` runs ``fn`` on dtrain float64 tensors and checks:
  - shape, dtype and values against ``ref`` (NumPy written in the test) and, where PyTorch
    is installed, against ``fn`` run on torch tensors (``torch_fn`` if the spelling differs);
  - gradients by finite differences (dtrain.autograd.gradcheck), and against PyTorch's.
Inputs are NumPy arrays (copied into each framework) or shapes (random float64 arrays).
"""
import numpy as np

import dtrain

try:
    import torch
except ImportError:  # tests still run; only the PyTorch comparison is skipped
    torch = None

rng = np.random.default_rng(0)


def lib(t):
    """The framework ``t`` belongs to, so that one lambda spells ``cat``/``stack``/... for
    dtrain and for torch alike."""
    return dtrain if isinstance(t, dtrain.Tensor) else torch


def rand(*shape, positive=False, distinct=True):
    """Random float64 data; ``distinct`` avoids ties that make max/min/abs non-differentiable."""
    a = rng.standard_normal(shape)
    if distinct and a.size:
        a = a + np.arange(a.size).reshape(shape) * 1e-3
    return np.abs(a) + 0.5 if positive else a


def _arrays(inputs):
    return [rand(*i) if isinstance(i, tuple) else i for i in inputs]


def _dt(a, grad):
    t = dtrain.from_numpy(np.array(a, copy=True) if isinstance(a, np.ndarray) else a) \
        if isinstance(a, np.ndarray) else a
    if grad and isinstance(t, dtrain.Tensor) and t.dtype.kind == "f":
        t.requires_grad_(True)
    return t


def check_op(fn, *inputs, ref=None, torch_fn=None, grad=True, atol=1e-6, rtol=1e-5, no_torch=False):
    """Check dtrain's ``fn`` on ``inputs`` (arrays or shapes). Returns dtrain's output."""
    arrays = _arrays(inputs)
    xs = [_dt(a, grad) for a in arrays]
    out = fn(*xs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if ref is not None:
        expected = ref(*[np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in arrays])
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        for o, e in zip(outs, expected):
            compare(o, e, atol, rtol, "reference")
    if torch is not None and not no_torch:
        ts = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") if isinstance(a, np.ndarray) else a
              for a in arrays]
        tout = (torch_fn or fn)(*ts)
        touts = tout if isinstance(tout, (tuple, list)) else (tout,)
        for o, e in zip(outs, touts):
            compare(o, e.detach().numpy(), atol, rtol, "torch")
        if grad:
            _check_grads_vs_torch(xs, ts, outs, touts, atol, rtol)
    if grad:
        gx = [x for x in xs if isinstance(x, dtrain.Tensor) and x.requires_grad]
        if gx:
            dtrain.autograd.gradcheck(lambda *a: fn(*_substitute(xs, gx, a)), gx, atol=1e-5, rtol=1e-4)
    return out


def _substitute(xs, gx, new):
    it = iter(new)
    return [next(it) if (isinstance(x, dtrain.Tensor) and x.requires_grad) else x for x in xs]


def _check_grads_vs_torch(xs, ts, outs, touts, atol, rtol):
    seeds = [rng.standard_normal(tuple(o.shape)) for o in outs if o.dtype.kind == "f"]
    d_outs = [o for o in outs if o.dtype.kind == "f" and o.requires_grad]
    if not d_outs:
        return
    total = sum((o * dtrain.tensor(s)).sum() for o, s in zip(d_outs, seeds))
    total.backward()
    ttotal = sum((o * torch.tensor(s)).sum() for o, s in zip(touts, seeds) if o.requires_grad)
    ttotal.backward()
    for x, t in zip(xs, ts):
        if isinstance(x, dtrain.Tensor) and x.requires_grad:
            assert t.grad is not None, "torch computed no gradient where dtrain did"
            compare(x.grad, t.grad.numpy(), atol, rtol, "torch gradient")
            x.grad = None


def compare(out, expected, atol=1e-6, rtol=1e-5, what="reference"):
    """Shape, dtype kind and values of a dtrain tensor against an array."""
    got = out.detach().cpu().numpy() if isinstance(out, dtrain.Tensor) else np.asarray(out)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape} != {what} shape {expected.shape}"
    assert got.dtype.kind == expected.dtype.kind or (got.dtype.kind in "iu" and expected.dtype.kind in "iu"), \
        f"dtype {got.dtype} != {what} dtype {expected.dtype}"
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, atol=atol, rtol=rtol, err_msg=f"values differ from {what}")
    else:
        np.testing.assert_array_equal(got, expected, err_msg=f"values differ from {what}")
