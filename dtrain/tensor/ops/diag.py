"""Diagonals and triangles of matrices: tril/triu, diagonal, diag, trace."""
from ..backend import diagonal as diagonal_view, get_array_module
from ..function import Function
from ..tensor import Tensor, _check_dim


class Triangle(Function):
    """``tril`` (lower) / ``triu`` (upper) of the last two dims; the gradient is masked alike."""

    def forward(self, a, k=0, upper=False):
        self.k, self.upper = k, upper
        return self._mask(a)

    def _mask(self, a):
        xp = get_array_module(a)
        return xp.triu(a, self.k) if self.upper else xp.tril(a, self.k)

    def backward(self, g):
        return self._mask(g)


def _triangle(x, diagonal, upper, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions, got shape {list(x.shape)}")
    return Triangle.apply(x, k=int(diagonal), upper=upper)


def tril(input, diagonal=0):  # noqa: A002
    """The lower triangle of the last two dims (``j <= i + diagonal``), zeros elsewhere.

    Example:
        >>> dtrain.tril(dtrain.ones(3, 3))   # causal mask
        tensor([[1., 0., 0.],
                [1., 1., 0.],
                [1., 1., 1.]])
    """
    return _triangle(input, diagonal, False, "tril")


def triu(input, diagonal=0):  # noqa: A002
    """The upper triangle of the last two dims (``j >= i + diagonal``), zeros elsewhere."""
    return _triangle(input, diagonal, True, "triu")


def _diag_positions(shape, offset, xp):
    """Row and column indices of the diagonal ``offset`` of a (rows, cols) matrix."""
    n = max(0, min(shape[0] + min(offset, 0), shape[1] - max(offset, 0)))
    r = xp.arange(n)
    return r - min(offset, 0), r + max(offset, 0)


class Diagonal(Function):
    """The diagonal ``offset`` of dims (d1, d2), as the last dim (a view)."""

    def forward(self, a, offset=0, d1=0, d2=1):
        self.shape, self.offset, self.d1, self.d2 = a.shape, offset, d1, d2
        return diagonal_view(a, offset, d1, d2)

    def backward(self, g):
        xp = get_array_module(g)
        out = xp.zeros(self.shape, dtype=g.dtype)
        moved = xp.moveaxis(out, (self.d1, self.d2), (-2, -1))  # a writable view of out
        rows, cols = _diag_positions(moved.shape[-2:], self.offset, xp)
        moved[..., rows, cols] = g
        return out


def diagonal(input, offset=0, dim1=0, dim2=1):  # noqa: A002
    """The diagonal with ``offset`` (> 0 above the main one) of the matrices in dims
    (dim1, dim2), appended as the last dim.

    Example:
        >>> dtrain.diagonal(dtrain.arange(9.).reshape(3, 3), offset=1)
        tensor([1., 5.])
    """
    if input.ndim < 2:
        raise RuntimeError(f"diagonal: input must have at least 2 dimensions, got shape {list(input.shape)}")
    d1, d2 = _check_dim(dim1, input.ndim, "diagonal"), _check_dim(dim2, input.ndim, "diagonal")
    if d1 == d2:
        raise RuntimeError(f"diagonal: dimensions cannot be identical {dim1}, {dim2}")
    return Diagonal.apply(input, offset=int(offset), d1=d1, d2=d2)


class DiagEmbed(Function):
    """A square matrix with the vector ``a`` on its diagonal ``offset``."""

    def forward(self, a, offset=0):
        xp = get_array_module(a)
        n = a.shape[0] + abs(offset)
        out = xp.zeros((n, n), dtype=a.dtype)
        self.rows, self.cols = _diag_positions((n, n), offset, xp)
        out[self.rows, self.cols] = a
        return out

    def backward(self, g):
        return g[self.rows, self.cols]


def diag(input, diagonal=0):  # noqa: A002
    """1-D input: a square matrix with it on diagonal ``diagonal``; 2-D input: that diagonal.

    Example:
        >>> dtrain.diag(dtrain.tensor([1., 2.]))
        tensor([[1., 0.],
                [0., 2.]])
    """
    if input.ndim == 1:
        return DiagEmbed.apply(input, offset=int(diagonal))
    if input.ndim == 2:
        return Diagonal.apply(input, offset=int(diagonal), d1=0, d2=1)
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {input.ndim}D (shape {list(input.shape)})")


def trace(input):  # noqa: A002
    """The sum of the main diagonal of a 2-D tensor.

    Example:
        >>> dtrain.trace(dtrain.eye(3))
        tensor(3.)
    """
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {input.ndim} "
                           f"(shape {list(input.shape)})")
    return diagonal(input).sum()
