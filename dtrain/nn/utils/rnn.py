"""Padding of variable-length sequences, as torch.nn.utils.rnn (packed sequences are not
supported: recurrent layers take padded batches)."""
from ...tensor import Tensor, stack
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
