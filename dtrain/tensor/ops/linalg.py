"""Matrix products: matmul (1-D, 2-D, batched, broadcast batch dims), the fused linear,
addmm / baddbmm, outer and kron."""
from .. import dtypes
from ..backend import broadcast_shapes, get_array_module
from ..function import Function, unbroadcast
from ..tensor import Tensor
from .autocast import autocast_call, open_regions, thread_state
from .workspace import output

_BLAS_TYPES = ("float32", "float64")  # the dtypes NumPy's matmul hands to BLAS


class MatMul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        if a.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 @ has no BLAS and returns float32
            return (a.astype(dtypes.float32) @ b.astype(dtypes.float32)).astype(a.dtype)
        return a @ b

    def backward(self, g):
        a, b = self.a, self.b
        na, nb = self.needs_input_grad
        # treat 1-D operands as matrices, as matmul's forward does
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1:
            g = g[..., None, :] if b.ndim > 1 else g[..., None]
        if b.ndim == 1:
            g = g[..., None]
        ga = gb = None
        if na:
            ga = unbroadcast(g @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape)
        if nb:
            gb = unbroadcast(a2.swapaxes(-1, -2) @ g, b2.shape).reshape(b.shape)
        return ga, gb


def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D operands are vectors, leading dims broadcast."""
    if open_regions[0] and not thread_state.running:
        return autocast_call(matmul, "matmul", **locals())
    return _matmul(a, b)


def _matmul(a, b):  # dot and outer, which autocast leaves alone, call it past the autocast hook
    for x in (a, b):
        if not isinstance(x, Tensor):
            raise TypeError(f"matmul: expected Tensors, got {type(x).__name__}")
        if x.ndim == 0:
            raise RuntimeError(f"matmul: both arguments need at least 1 dimension, got shapes "
                               f"{list(a.shape)} and {list(b.shape)}")
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if k_a != k_b:
        raise RuntimeError(f"matmul: shapes {list(a.shape)} and {list(b.shape)} cannot be multiplied "
                           f"({k_a} != {k_b})")
    try:
        broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise RuntimeError(f"matmul: batch dimensions of {list(a.shape)} and {list(b.shape)} "
                           f"do not broadcast") from None
    if a.dtype != b.dtype:
        d = dtypes.promote(a.dtype, b.dtype)
        a, b = a.to(d), b.to(d)
    return MatMul.apply(a, b)


class Linear(Function):
    """y = x @ W^T + b in one op: no transposed copy, the bias added in place."""

    # N-D inputs go through BLAS as one 2-D GEMM (a batched matmul of 3-D x with 2-D w.T is
    # 2-4x slower in NumPy); the reshapes are views of contiguous arrays
    def forward(self, x, w, b=None):
        self.x, self.w, self.has_b = x, w, b is not None
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x
        y = x2 @ w.T
        if b is not None:
            y += b
        if y.dtype != x.dtype:  # bfloat16: ml_dtypes' @ gives float32 (bias added in it); rounded once, as torch
            y = y.astype(x.dtype)
        return y.reshape(*x.shape[:-1], w.shape[0]) if x.ndim > 2 else y

    def backward(self, g):
        x, w = self.x, self.w
        nx, nw = self.needs_input_grad[:2]
        g2 = g.reshape(-1, g.shape[-1])
        gx = (g2 @ w).reshape(x.shape) if nx else None
        # the weight gradient in a pooled buffer when over 1 MiB (workspace.output): no fresh pages per
        # step where .grad arrays die between steps (deterministic mode's micro-shard sums are
        # made in them: ~1,800 page faults per MLP step before)
        gw = None
        if nw:
            xp, x2 = get_array_module(g2), x.reshape(-1, x.shape[-1])
            gw = xp.matmul(g2.T, x2, out=output(xp, w.shape, xp.result_type(g2, x2)))
        if not self.has_b:
            return gx, gw
        # the bias gradient as ones @ g2, a GEMV: 2.5-4x faster than NumPy's sum over axis 0
        # (e.g. 29 vs 51 us at (1024, 384) float32)
        return gx, gw, _column_sums(g2) if self.needs_input_grad[2] else None


def _column_sums(g2):
    if g2.dtype.name not in _BLAS_TYPES:  # no BLAS (integer, float16, bfloat16): NumPy's sum
        if dtypes.is_floating(g2.dtype):  # accumulated in float32 and rounded once, as torch (not in 8 bits)
            return g2.sum(axis=0, dtype=dtypes.float32).astype(g2.dtype)
        return g2.sum(axis=0)
    xp = get_array_module(g2)
    return xp.ones(g2.shape[0], dtype=g2.dtype) @ g2


def linear(x, weight, bias=None):
    """``x @ weight.T + bias``; weight has shape (out_features, in_features) as in PyTorch."""
    if open_regions[0] and not thread_state.running:
        return autocast_call(linear, "linear", **locals())
    if weight.ndim != 2:
        raise RuntimeError(f"linear: weight must be 2-D (out_features, in_features), got shape {list(weight.shape)}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise RuntimeError(f"linear: input shape {list(x.shape)} and weight shape {list(weight.shape)} "
                           f"do not match (input's last dim must be in_features = {weight.shape[1]})")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise RuntimeError(f"linear: bias shape {list(bias.shape)} must be (out_features,) = ({weight.shape[0]},)")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        got = ", ".join(f"{name} {t.dtype}" for name, t in zip(("input", "weight", "bias"), (x, weight, bias))
                        if t is not None)
        raise RuntimeError(f"linear: dtypes differ ({got}); convert with .to(dtype)")
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)


def mm(a, b):
    if open_regions[0] and not thread_state.running:
        return autocast_call(mm, "mm", **locals())
    if a.ndim != 2 or b.ndim != 2:
        raise RuntimeError(f"mm: expected 2-D tensors, got shapes {list(a.shape)} and {list(b.shape)}")
    return matmul(a, b)


def bmm(a, b):
    if open_regions[0] and not thread_state.running:
        return autocast_call(bmm, "bmm", **locals())
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise RuntimeError(f"bmm: expected 3-D tensors with equal batch size, got shapes "
                           f"{list(a.shape)} and {list(b.shape)}")
    return matmul(a, b)


def dot(a, b):
    if a.ndim != 1 or b.ndim != 1:
        raise RuntimeError(f"dot: 1D tensors expected, but got {a.ndim}D and {b.ndim}D tensors")
    return _matmul(a, b)


def outer(a, b):
    """The outer product of two 1-D tensors."""
    for name, v in (("self", a), ("vec2", b)):
        if v.ndim != 1:
            raise RuntimeError(f"outer: expected 1-D argument {name}, but got {v.ndim}-D (shape {list(v.shape)})")
    return _matmul(a.reshape(-1, 1), b.reshape(1, -1))


class AddMatMul(Function):
    """``beta * input + alpha * (a @ b)`` in one op: the product is scaled and the input
    added in place, so no temporary beyond the output is made."""

    def forward(self, c, a, b, beta=1, alpha=1):
        self.a, self.b, self.sc, self.beta, self.alpha = a, b, c.shape, beta, alpha
        out = a @ b
        if alpha != 1:
            out *= alpha
        if beta != 0:  # beta == 0 ignores input: its nan and inf do not propagate (as PyTorch)
            out += c if beta == 1 else beta * c
        return out

    def backward(self, g):
        nc, na, nb = self.needs_input_grad
        gc = unbroadcast(g * self.beta if self.beta != 1 else g, self.sc) if nc else None
        ga = g @ self.b.swapaxes(-1, -2) if na else None
        gb = self.a.swapaxes(-1, -2) @ g if nb else None
        if self.alpha != 1:
            ga = ga * self.alpha if na else None
            gb = gb * self.alpha if nb else None
        return gc, ga, gb


def _add_matmul(input, a, b, beta, alpha, nd, op):  # noqa: A002
    for name, t in (("input", input), ("batch1" if nd == 3 else "mat1", a), ("batch2" if nd == 3 else "mat2", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected {name} to be a Tensor, got {type(t).__name__}")
    if a.ndim != nd or b.ndim != nd:
        raise RuntimeError(f"{op}: expected {nd}-D tensors, got shapes {list(a.shape)} and {list(b.shape)}")
    if a.shape[-1] != b.shape[-2] or (nd == 3 and a.shape[0] != b.shape[0]):
        raise RuntimeError(f"{op}: shapes {list(a.shape)} and {list(b.shape)} cannot be multiplied")
    out_shape = a.shape[:-1] + b.shape[-1:]
    try:
        fits = broadcast_shapes(tuple(input.shape), tuple(out_shape)) == tuple(out_shape)
    except ValueError:
        fits = False
    if not fits:
        raise RuntimeError(f"{op}: input of shape {list(input.shape)} does not broadcast to the product's "
                           f"shape {list(out_shape)}")
    if not (input.dtype == a.dtype == b.dtype):
        raise RuntimeError(f"{op}: expected tensors of one dtype, got {input.dtype}, {a.dtype} and {b.dtype}")
    return AddMatMul.apply(input, a, b, beta=beta, alpha=alpha)


def addmm(input, mat1, mat2, *, beta=1, alpha=1):  # noqa: A002
    """``beta * input + alpha * (mat1 @ mat2)`` for 2-D mat1 (n, m) and mat2 (m, p);
    ``input`` broadcasts to (n, p).

    Example:
        >>> dtrain.addmm(dtrain.zeros(2), dtrain.eye(2), dtrain.ones(2, 2), alpha=3)
        tensor([[3., 3.],
                [3., 3.]])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(addmm, "addmm", **locals())
    return _add_matmul(input, mat1, mat2, beta, alpha, 2, "addmm")


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):  # noqa: A002
    """``beta * input + alpha * (batch1 @ batch2)`` for batches (b, n, m) and (b, m, p);
    ``input`` broadcasts to (b, n, p).

    Example:
        >>> dtrain.baddbmm(dtrain.zeros(1, 2, 2), dtrain.ones(1, 2, 3), dtrain.ones(1, 3, 2)).shape
        dtrain.Size([1, 2, 2])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(baddbmm, "baddbmm", **locals())
    return _add_matmul(input, batch1, batch2, beta, alpha, 3, "baddbmm")


def kron(input, other):  # noqa: A002
    """The Kronecker product: block (i, j, ...) of the result is ``input[i, j, ...] * other``.

    Example:
        >>> dtrain.kron(dtrain.eye(2), dtrain.ones(2, 2)).shape
        dtrain.Size([4, 4])
    """
    nd = max(input.ndim, other.ndim)
    a = input.reshape((1,) * (nd - input.ndim) + tuple(input.shape))
    b = other.reshape((1,) * (nd - other.ndim) + tuple(other.shape))
    # interleave the dims: a as (a0, 1, a1, 1, ...), b as (1, b0, 1, b1, ...); the product's
    # adjacent pairs then merge into the blocks
    pa = tuple(x for n in a.shape for x in (n, 1))
    pb = tuple(x for n in b.shape for x in (1, n))
    return (a.reshape(pa) * b.reshape(pb)).reshape(tuple(m * n for m, n in zip(a.shape, b.shape)))
