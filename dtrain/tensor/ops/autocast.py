"""Autocast at the op level: which ops run in the low dtype (float16 / bfloat16) and which in
float32, per device type, as PyTorch's autocast lists (aten/src/ATen/autocast_mode.cpp); the
state that ``dtrain.autocast`` sets; the casts, differentiable, with PyTorch's cast cache.

An op takes part by two lines at the top of its public function, under its PyTorch name::

    if open_regions[0] and not thread_state.running:
        return autocast_call(linear, "linear", **locals())   # locals(): just the arguments here

With no autocast region open anywhere that is one list lookup per call (~0.02 us measured),
no wrapper frame (a decorator's ``*args, **kwargs`` forwarding measured ~0.2 us). ``autocast_call``
re-enters the op with ``thread_state.running`` set, so the body runs, and so do the hooked ops
it calls, as they are (PyTorch's autocast redispatches below itself the same way).

How a low-precision op runs:
  * CUDA (CuPy): its floating inputs are cast to the low dtype and the op runs there (cuBLAS
    and cuDNN-like kernels accumulate in float32, as PyTorch's).
  * CPU (NumPy): NumPy has no BLAS for float16 and bfloat16 (a bfloat16 matmul is ~30x slower
    than float32's and returns float32), so the op runs in float32 on inputs rounded to the
    low dtype, and its output is cast to the low dtype: PyTorch's CPU kernels do the same
    (low-precision operands, float32 accumulation, a rounded result). The gradients of the
    rounded inputs are rounded too, as a low-precision backward's are. Saved activations stay
    float32 there, so autocast saves no memory on the CPU.
"""
import contextlib
import threading
import weakref

from .. import dtypes
from ..function import Function
from ..grad_mode import is_grad_enabled
from ..tensor import Tensor
from .shape import Cast

LOWER, FP32, FP32_UNLESS_DTYPE, KEEP_DTYPE_FP32_MATH, BANNED = (
    "lower_precision_fp", "fp32", "fp32_set_opt_dtype", "keep_dtype_fp32_math", "banned")

_LOWER_OPS = ("linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "einsum", "conv1d", "conv2d",
              "conv_transpose2d", "prelu", "scaled_dot_product_attention")
_LOSSES = ("cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div",
           "binary_cross_entropy_with_logits", "cosine_embedding_loss", "margin_ranking_loss",
           "triplet_margin_loss")

# op name -> policy, per device type. Ops absent run on whatever dtype they are given.
POLICIES = {
    "cuda": {
        **dict.fromkeys(_LOWER_OPS, LOWER),
        **dict.fromkeys(_LOSSES, FP32),
        **dict.fromkeys(("exp", "log", "log1p", "rsqrt", "pow", "cosh", "sinh", "softplus", "layer_norm",
                         "group_norm", "norm", "logsumexp", "cosine_similarity"), FP32),
        **dict.fromkeys(("softmax", "log_softmax", "sum", "prod", "cumsum", "cumprod"), FP32_UNLESS_DTYPE),
        "binary_cross_entropy": BANNED,
    },
    "cpu": {
        **dict.fromkeys(_LOWER_OPS, LOWER),
        **dict.fromkeys(_LOSSES + ("binary_cross_entropy", "prod"), FP32),
        # PyTorch's CPU kernels take a low-precision input here, accumulate in float32 and return
        # the input's dtype; NumPy would accumulate in bfloat16 (a sum of 10000 bfloat16 ones is 256)
        **dict.fromkeys(("softmax", "log_softmax", "layer_norm", "group_norm", "batch_norm", "sum", "mean"),
                        KEEP_DTYPE_FP32_MATH),
    },
}

FLOAT32 = dtypes.float32
BANNED_MESSAGE = (
    "binary_cross_entropy and BCELoss are unsafe to autocast: their gradient is unstable in float16. Use "
    "binary_cross_entropy_with_logits / BCEWithLogitsLoss, which are safe under autocast, or run it outside "
    "the autocast region on float32 inputs (e.g. input.float()).")

# open autocast regions in any thread: the one check a hooked op makes when there is none
open_regions = [0]


class _ThreadState(threading.local):
    """Autocast is per thread, as in PyTorch (a thread starts with it off)."""

    def __init__(self):
        self.enabled = {"cpu": False, "cuda": False}
        self.dtype = {"cpu": None, "cuda": None}  # None: the device's default, which dtrain.amp knows
        self.cache_enabled = True
        self.nesting = 0
        self.running = False  # inside an autocast op: the ops it calls run as they are (PyTorch's redispatch)
        self.cache = {}


thread_state = _ThreadState()


def is_enabled(device_type):
    return thread_state.enabled[device_type]


def get_dtype(device_type):
    return thread_state.dtype[device_type]


def is_cache_enabled():
    return thread_state.cache_enabled


def enter(device_type, enabled, dtype, cache_enabled):
    """Open a region; returns what :func:`exit` restores."""
    s = thread_state
    saved = (device_type, s.enabled[device_type], s.dtype[device_type], s.cache_enabled)
    s.enabled[device_type], s.dtype[device_type], s.cache_enabled = enabled, dtype, cache_enabled
    s.nesting += 1
    open_regions[0] += 1
    return saved


def exit(saved):  # noqa: A001
    device_type, enabled, dtype, cache_enabled = saved
    s = thread_state
    s.enabled[device_type], s.dtype[device_type], s.cache_enabled = enabled, dtype, cache_enabled
    s.nesting -= 1
    open_regions[0] -= 1
    if s.nesting == 0:  # PyTorch clears the cast cache when the outermost region exits
        s.cache.clear()


def carried_over():
    """The calling thread's open autocast settings, as a context-manager factory that opens
    them again in another thread: autocast is per thread, and DataParallel's replicas run in
    worker threads (PyTorch re-enters autocast in each the same way)."""
    s = thread_state
    opened = [(d, s.dtype[d]) for d in ("cpu", "cuda") if s.enabled[d]]
    cache_enabled = s.cache_enabled

    @contextlib.contextmanager
    def reopen():
        saved = [enter(d, True, dtype, cache_enabled) for d, dtype in opened]
        try:
            yield
        finally:
            for each in reversed(saved):
                exit(each)
    return reopen


class RoundTo(Function):
    """A float32 array holding the nearest values of a low dtype; the gradient is rounded
    likewise (what the gradient of a low-precision copy would be, cast back)."""

    def forward(self, a, dtype=None):
        self.low = dtype
        return a.astype(dtype).astype(a.dtype)

    def backward(self, g):
        return g.astype(self.low).astype(g.dtype)


def _is_low(dtype):
    return dtype.itemsize == 2 and dtype.name in ("float16", "bfloat16")


def _eligible(t):
    """A floating Tensor autocast may cast (float64 never is, as in PyTorch)."""
    return isinstance(t, Tensor) and (t.dtype.kind == "f" or _is_low(t.dtype)) and t.dtype.name != "float64"


def _cached(t, make):
    """``make(t)``, reused for a float32 leaf that requires grad while the region is open and
    the cast's graph is alive (dtrain frees a graph in backward, PyTorch's cast keeps none)."""
    if not (thread_state.cache_enabled and t.requires_grad and t.grad_fn is None and is_grad_enabled()):
        return make(t)
    hit = thread_state.cache.get(id(t))
    if hit is not None:
        ref, version, out = hit
        if ref() is t and version == t._version and out.grad_fn is not None and out.grad_fn.inputs is not None:
            return out
    out = make(t)
    thread_state.cache[id(t)] = (weakref.ref(t), t._version, out)
    return out


def _to_low(t, low, native):
    """``t`` in the low dtype (native), or as float32 holding low-precision values (emulated)."""
    if native:
        return t if t.dtype == low else _cached(t, lambda x: Cast.apply(x, dtype=low))
    if t.dtype == low:  # exact in float32
        return Cast.apply(t, dtype=FLOAT32)
    if _is_low(t.dtype):  # the other low dtype: float32, then rounded below
        t = Cast.apply(t, dtype=FLOAT32)
    return _cached(t, lambda x: RoundTo.apply(x, dtype=low))


def _to_float32(t):
    return Cast.apply(t, dtype=FLOAT32) if _is_low(t.dtype) else t


def _map(f, args, kwargs):
    def one(a):
        if _eligible(a):
            return f(a)
        if isinstance(a, (list, tuple)) and any(_eligible(x) for x in a):
            return type(a)(one(x) for x in a)
        return a
    return [one(a) for a in args], {k: one(v) for k, v in kwargs.items()}


def _device_type(args):
    for a in args:
        if isinstance(a, Tensor):
            return "cuda" if a.is_cuda else "cpu"
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], Tensor):
            return "cuda" if a[0].is_cuda else "cpu"
    return None


def autocast_call(op, name, /, *args, **kwargs):  # positional-only: an op may take "name"
    """Run ``op`` (the hooked public function of op ``name``, PyTorch's name) under the
    policy of ``name`` for its inputs' device type, if autocast is on for that device type
    in this thread; otherwise as called."""
    s = thread_state
    device_type = _device_type((*args, *kwargs.values()))
    policy = POLICIES[device_type].get(name) if device_type and s.enabled[device_type] else None
    if policy is None or (policy == FP32_UNLESS_DTYPE and kwargs.get("dtype") is not None):
        return _plain(op, args, kwargs)
    if policy == BANNED:
        raise RuntimeError(f"{name}: {BANNED_MESSAGE}")
    if policy == KEEP_DTYPE_FP32_MATH:
        return fp32_math(op, *args, **kwargs)
    if policy == LOWER:
        low, native = s.dtype[device_type], device_type == "cuda"
        out = _plain(op, *_map(lambda t: _to_low(t, low, native), args, kwargs))
        return out if native or not _eligible(out) else Cast.apply(out, dtype=low)
    return _plain(op, *_map(_to_float32, args, kwargs))  # FP32, FP32_UNLESS_DTYPE


def fp32_math(op, /, *args, **kwargs):
    """``op`` (a hooked public function) on float32 copies of its float16/bfloat16 inputs, its
    floating output cast back to the first tensor's dtype; as called when that is not low or a
    ``dtype`` is given. PyTorch's CPU kernels of these ops take a low-precision input, accumulate
    in float32 and round the result once; NumPy would sum bfloat16 in its 8 bits (10000 ones
    give 256). Used by autocast's KEEP_DTYPE_FP32_MATH ops, and by such ops for a bfloat16
    input outside autocast too."""
    first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
    if first is None or not _is_low(first.dtype) or kwargs.get("dtype") is not None:
        return _plain(op, args, kwargs)
    out = _plain(op, *_map(_to_float32, args, kwargs))
    # the output of float32 math: kind "f" (a float32 one) is cast back, an integer one is not
    return Cast.apply(out, dtype=first.dtype) if isinstance(out, Tensor) and out.dtype.kind == "f" else out


def bfloat16_input(t):
    """Whether an op that accumulates runs through :func:`fp32_math` for ``t``: a bfloat16
    Tensor, met outside fp32_math and autocast (whose inputs are float32 by then)."""
    return not thread_state.running and isinstance(t, Tensor) and t.dtype.name == "bfloat16"


def _plain(op, args, kwargs):
    """``op(*args, **kwargs)`` past its autocast hook."""
    thread_state.running = True
    try:
        return op(*args, **kwargs)
    finally:
        thread_state.running = False
