"""Embedding: a lookup table of vectors indexed by integer ids (as torch.nn.Embedding)."""
from ...tensor import Tensor, empty, no_grad
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ._checks import check_int


class Embedding(Module):
    """``weight[input]``: one learned vector of size ``embedding_dim`` per id.

    Args:
        num_embeddings: the number of ids (rows of ``weight``).
        embedding_dim: the size of each vector.
        padding_idx: an id whose row starts at zero and gets no gradient.
        max_norm: renormalize looked-up rows whose norm exceeds this (in place).
        norm_type: the p of that norm (default 2).
        scale_grad_by_freq: scale gradients by the inverse id frequency in the batch.
        sparse: accepted for PyTorch compatibility; gradients are always dense.
        _weight: an initial weight tensor of shape (num_embeddings, embedding_dim).
        _freeze: do not train the weight.

    ``weight`` is initialized from N(0, 1), with the padding row zeroed.

    Example:
        >>> nn.Embedding(10, 3, padding_idx=0)(dtrain.tensor([[1, 2], [0, 9]])).shape
        dtrain.Size([2, 2, 3])
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
        super().__init__()
        self.num_embeddings = check_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            padding_idx = check_int("Embedding", "padding_idx", padding_idx, minimum=-num_embeddings)
            if padding_idx >= num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be within num_embeddings, got padding_idx={padding_idx} "
                                 f"for num_embeddings={num_embeddings}")
            padding_idx %= num_embeddings
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = Parameter(empty(num_embeddings, embedding_dim, dtype=dtype, device=device),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: shape of _weight {list(_weight.shape)} does not match "
                                 f"[num_embeddings, embedding_dim] = {[num_embeddings, embedding_dim]}")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse:
            s += ", sparse=True"
        return s

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding whose weight is (a copy-free Parameter over) the 2-D ``embeddings``.

        Example:
            >>> emb = nn.Embedding.from_pretrained(dtrain.randn(5, 3))
        """
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            raise ValueError(f"Embeddings parameter is expected to be a 2-dimensional Tensor, got "
                             f"{getattr(embeddings, 'shape', type(embeddings).__name__)}")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=embeddings, _freeze=freeze)
