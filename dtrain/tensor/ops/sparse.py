"""embedding: rows of a weight matrix picked by integer indices; the gradient sums the
rows of equal indices."""
from .. import backend, device_checks
from ..backend import get_array_module
from ..function import Function, on_input_device
from ..tensor import Tensor


class Embedding(Function):
    def forward(self, weight, idx, padding_idx=None):
        self.idx, self.shape, self.padding_idx = idx, weight.shape, padding_idx
        return weight[idx]

    def backward(self, g):
        xp = get_array_module(g)
        gw = xp.zeros(self.shape, dtype=g.dtype)
        if backend.is_cuda_array(g):
            backend.scatter_add(gw, self.idx, g)  # repeated indices accumulate
        elif self.idx.size:
            # np.add.at is slow on rows: sort the indices and sum each run of equal ones
            idx = self.idx.reshape(-1)
            order = xp.argsort(idx, kind="stable")
            idx = idx[order]
            starts = xp.flatnonzero(xp.concatenate((xp.ones(1, dtype=bool), idx[1:] != idx[:-1])))
            gw[idx[starts]] = xp.add.reduceat(g.reshape(idx.size, self.shape[1])[order], starts, axis=0)
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return gw, None


@on_input_device
def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Rows of ``weight`` picked by the indices ``input``; the row ``padding_idx`` gets no gradient.

    Args:
        input: integer indices, any shape, in [0, num_embeddings): on the CPU an index out of
            range raises IndexError at once; on a GPU it is checked on the device and raises
            at the next host synchronisation (``.item()``, printing; see
            ``dtrain.tensor.device_checks``), so that the check costs no synchronisation.
        weight: (num_embeddings, embedding_dim).
        padding_idx: optional index (negative counts from the end) whose row is not trained.

    Returns:
        A Tensor of shape ``input.shape + (embedding_dim,)``.

    Example:
        >>> F.embedding(dtrain.tensor([1]), dtrain.tensor([[0.0, 0.0], [1.0, 2.0]]))
        tensor([[1., 2.]])
    """
    op = "embedding"
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError(f"{op}: max_norm, scale_grad_by_freq and sparse are not supported; "
                                  f"leave them at their defaults")
    if not isinstance(input, Tensor) or input.dtype.kind not in "iu":
        got = input.dtype if isinstance(input, Tensor) else type(input).__name__
        raise RuntimeError(f"{op}: expected indices of an integer dtype (int64), got {got}")
    if weight.ndim != 2:
        raise RuntimeError(f"{op}: weight must be 2-D (num_embeddings, embedding_dim), got shape "
                           f"{list(weight.shape)}")
    n = weight.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"{op}: padding_idx {padding_idx} must be within num_embeddings ({n})")
        padding_idx %= n
    idx = input.array
    if idx.size:
        device_checks.check_range(idx, 0, n, (op, n), lambda lo, hi: IndexError(
            f"{op}: indices must be in [0, {n - 1}] (num_embeddings = {n}), got values in [{lo}, {hi}]"))
    return Embedding.apply(weight, idx, padding_idx=padding_idx)
