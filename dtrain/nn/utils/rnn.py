"""Variable-length sequences, as torch.nn.utils.rnn: padding, and PackedSequence (which
the recurrent layers take and return)."""
import collections

from ...tensor import Tensor, cat, stack, tensor, zeros
from ...tensor.dtypes import float32, float64
from .. import functional as F


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack sequences of shapes (L_i, *) into one Tensor padded to the longest, L.

    Args:
        sequences: a list of Tensors (L_i, *) with equal trailing dims (a Tensor: its rows).
        batch_first: return (B, L, *) instead of (L, B, *).
        padding_value: the value of the padded elements (default 0).
        padding_side: 'right' (default) or 'left'.

    The result has the first sequence's dtype; gradients flow back to every sequence.

    Example:
        >>> pad_sequence([dtrain.ones(3, 2), dtrain.ones(1, 2)]).shape
        dtrain.Size([3, 2, 2])
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"pad_sequence: Expected padding_side to be one of left or right, but got {padding_side}.")
    seqs = list(sequences.unbind(0) if isinstance(sequences, Tensor) else sequences)
    if not seqs:
        raise RuntimeError("pad_sequence: received an empty list of sequences")
    for i, s in enumerate(seqs):
        if not isinstance(s, Tensor):
            raise TypeError(f"pad_sequence: expected a list of Tensors, got {type(s).__name__} at index {i}")
        if s.ndim == 0 or tuple(s.shape[1:]) != tuple(seqs[0].shape[1:]):
            raise RuntimeError(f"pad_sequence: every sequence must be (L, *) with the same trailing dims; "
                               f"sequence 0 has shape {list(seqs[0].shape)}, sequence {i} has {list(s.shape)}")
    longest = max(s.shape[0] for s in seqs)
    dtype = seqs[0].dtype
    padded = []
    for s in seqs:
        gap = longest - s.shape[0]
        sides = (0, gap) if padding_side == "right" else (gap, 0)
        padded.append(F.pad(s.to(dtype), (0, 0) * (s.ndim - 1) + sides, value=padding_value) if gap else s.to(dtype))
    return stack(padded, 0 if batch_first else 1)


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The inverse of ``pad_sequence`` (right padding): a list of the sequences, the i-th
    cut to ``lengths[i]`` steps.

    Args:
        padded_sequences: (L, B, *), or (B, L, *) with batch_first.
        lengths: B lengths (a Tensor or a list of ints).
        batch_first: the batch dim is first.

    Example:
        >>> [s.shape[0] for s in unpad_sequence(dtrain.zeros(3, 2, 4), dtrain.tensor([3, 1]))]
        [3, 1]
    """
    x = padded_sequences if batch_first else padded_sequences.transpose(0, 1)
    lengths = lengths.tolist() if isinstance(lengths, Tensor) else list(lengths)
    if len(lengths) != x.shape[0]:
        raise ValueError(f"unpad_sequence: got {len(lengths)} lengths for a batch of {x.shape[0]} sequences")
    for n in lengths:
        if not 0 <= n <= x.shape[1]:
            raise ValueError(f"unpad_sequence: length {n} is outside [0, {x.shape[1]}], the padded length")
    return [x[i, :n] for i, n in enumerate(lengths)]


class PackedSequence(collections.namedtuple("PackedSequence", ["data", "batch_sizes", "sorted_indices",
                                                              "unsorted_indices"])):
    """A batch of sequences of different lengths, as torch.nn.utils.rnn.PackedSequence.

    ``data`` holds the steps of all sequences, time-major: the first step of every
    sequence, then the second step of those that have one, and so on (sequences sorted
    by length, longest first); ``batch_sizes[t]`` is the number of sequences with a step t;
    ``sorted_indices[j]`` is the batch index of the j-th longest sequence and
    ``unsorted_indices`` its inverse (both None when the batch was already sorted).
    Build one with ``pack_padded_sequence`` or ``pack_sequence``; recurrent layers take
    and return it.
    """

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if unsorted_indices is None and sorted_indices is not None:
            unsorted_indices = _inverse(sorted_indices)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def to(self, *args, **kwargs):
        """``data`` converted as ``Tensor.to``; the indices follow it to its device and
        batch_sizes stays on the CPU (as PyTorch)."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        move = [None if t is None else t.to(data.device) for t in (self.sorted_indices, self.unsorted_indices)]
        return type(self)(data, self.batch_sizes, *move)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def double(self):
        return self.to(float64)

    def float(self):
        return self.to(float32)

    @property
    def is_cuda(self):
        return self.data.is_cuda


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm.tolist()):
        inv[p] = i
    return tensor(inv, device=perm.device)


def _offsets(batch_sizes):
    out, n = [], 0
    for b in batch_sizes:
        out.append(n)
        n += b
    return out


def packed_to_padded(sequence, columns=None, total_length=None):
    """(padded (T, B, *) with zeros past each sequence's end, lengths) of a PackedSequence;
    column j of the padded batch is sorted position ``columns[j]`` (default: sorted order)."""
    data, batch_sizes = sequence.data, sequence.batch_sizes.tolist()
    B, T = batch_sizes[0], max(total_length or 0, len(batch_sizes))
    columns = list(range(B)) if columns is None else columns
    offsets, pad_row = _offsets(batch_sizes), data.shape[0]
    rows = [offsets[t] + j if t < len(batch_sizes) and j < batch_sizes[t] else pad_row
            for t in range(T) for j in columns]
    lengths = [sum(1 for b in batch_sizes if b > j) for j in columns]
    ext = cat([data, zeros(1, *data.shape[1:], dtype=data.dtype, device=data.device)])
    idx = tensor(rows, device=data.device)
    return ext.index_select(0, idx).reshape(T, B, *data.shape[1:]), lengths


def padded_to_packed_data(padded, batch_sizes):
    """The ``data`` of a PackedSequence from its padded, sorted (T, B, *) form."""
    T, B = padded.shape[:2]
    rows = [t * B + j for t, n in enumerate(batch_sizes) for j in range(n)]
    return padded.reshape(T * B, *padded.shape[2:]).index_select(0, tensor(rows, device=padded.device))


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) (or (B, T, *) with batch_first) of sequences with the
    given lengths into a PackedSequence.

    Args:
        input: the padded batch.
        lengths: B lengths, each in [1, T] (a list or a CPU Tensor).
        batch_first: the batch dim comes first.
        enforce_sorted: lengths must be in decreasing order; when False the sequences are
            sorted here and the order is kept in sorted_indices.

    Example:
        >>> pack_padded_sequence(dtrain.zeros(4, 2, 3), [4, 2]).batch_sizes
        tensor([2, 2, 1, 1])
    """
    lengths = lengths.tolist() if isinstance(lengths, Tensor) else [int(n) for n in lengths]
    x = input.transpose(0, 1) if batch_first else input
    T, B = x.shape[:2]
    if len(lengths) != B:
        raise ValueError(f"pack_padded_sequence: got {len(lengths)} lengths for a batch of {B} sequences")
    if any(n <= 0 for n in lengths):
        raise RuntimeError("Length of all samples has to be greater than 0, but found an element in 'lengths' "
                           f"that is <= 0: {lengths}")
    if max(lengths) > T:
        raise RuntimeError(f"pack_padded_sequence: a length of {max(lengths)} is longer than the padded "
                           f"sequences ({T} steps)")
    if enforce_sorted:
        if any(a < b for a, b in zip(lengths, lengths[1:])):
            raise RuntimeError(f"`lengths` array must be sorted in decreasing order when `enforce_sorted` is True "
                               f"(got {lengths}). You can pass `enforce_sorted=False` to pack_padded_sequence "
                               f"and/or pack_sequence to sidestep this requirement.")
        order, sorted_indices = list(range(B)), None
    else:
        order = sorted(range(B), key=lambda b: -lengths[b])
        sorted_indices = tensor(order, device=input.device)
    batch_sizes = [sum(1 for n in lengths if n > t) for t in range(max(lengths))]
    rows = [t * B + order[j] for t, n in enumerate(batch_sizes) for j in range(n)]
    data = x.reshape(T * B, *x.shape[2:]).index_select(0, tensor(rows, device=input.device))
    return PackedSequence(data, tensor(batch_sizes), sorted_indices)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """The inverse of ``pack_padded_sequence``: (padded batch, lengths), in the original
    batch order.

    Args:
        sequence: a PackedSequence.
        batch_first: return (B, T, *) instead of (T, B, *).
        padding_value: the value past each sequence's end.
        total_length: pad to this many steps (at least the longest sequence).

    Example:
        >>> padded, lengths = pad_packed_sequence(pack_sequence([dtrain.ones(3), dtrain.ones(1)]))
        >>> padded.shape, lengths
        (dtrain.Size([3, 2]), tensor([3, 1]))
    """
    longest = len(sequence.batch_sizes)
    if total_length is not None and total_length < longest:
        raise ValueError(f"Expected total_length to be at least the length of the longest sequence in input, "
                         f"but got total_length={total_length} and max sequence length being {longest}")
    u = sequence.unsorted_indices
    columns = None if u is None else u.tolist()
    padded, lengths = packed_to_padded(sequence, columns, total_length)
    if padding_value:
        T, B = padded.shape[:2]
        inside = tensor([[t < n for n in lengths] for t in range(T)], device=padded.device)
        padded = padded.masked_fill(~inside.reshape(T, B, *([1] * (padded.ndim - 2))), padding_value)
    return (padded.transpose(0, 1) if batch_first else padded), tensor(lengths)


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of sequences (L_i, *) into a PackedSequence (pad_sequence, then
    pack_padded_sequence).

    Example:
        >>> pack_sequence([dtrain.ones(3), dtrain.ones(2)]).batch_sizes
        tensor([2, 2, 1])
    """
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)
