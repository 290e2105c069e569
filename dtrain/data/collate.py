"""Turning a list of samples into a batch: default_collate and default_convert, as PyTorch's."""
import collections.abc
import copy

import numpy

from ..tensor import Tensor, as_tensor, dtypes, stack, tensor
from ..tensor.backend import get_array_module, switch_to

_ERROR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def _is_str_or_object(array):
    return array.dtype.kind in "SaUO"


def _stack(tensors):
    first = tensors[0]
    if all(t.shape == first.shape and not t.requires_grad for t in tensors):
        # one array stack instead of one autograd op per sample; dtrain.stack (below) keeps
        # the graph when a sample needs it and raises the error naming unequal shapes
        arrays = [t.array for t in tensors]
        switch = switch_to(arrays[:1])
        if switch is None:
            return Tensor._wrap(get_array_module(first.array).stack(arrays))
        with switch:  # CUDA samples are stacked on their device, whichever is current in this thread
            return Tensor._wrap(get_array_module(first.array).stack(arrays))
    return stack(tensors)


def _clone_with(elem, values):
    """``values`` in the container type of ``elem`` when it can be copied and updated, else plain."""
    try:
        clone = copy.copy(elem)
        if isinstance(elem, collections.abc.Mapping):
            clone.update(values)
        else:
            clone[:] = values
        return clone
    except (TypeError, AttributeError):
        return values


def default_collate(batch):
    """Merge a list of samples into a batch, with ``torch.utils.data.default_collate``'s rules.

    Tensors are stacked along a new dim 0; NumPy arrays become tensors (keeping their dtype)
    and are stacked; NumPy scalars become a tensor of their dtype; Python floats a float64
    tensor, ints an int64 tensor, bools a bool tensor; strings and bytes stay a list; dicts
    are collated per key, namedtuples per field, other sequences per position (a tuple
    gives a list).

    Args:
        batch: a non-empty sequence of samples of the same structure.

    Returns:
        The batch, with the structure of one sample.

    Example:
        >>> default_collate([(dtrain.zeros(2), 0), (dtrain.ones(2), 1)])
        [tensor([[0., 0.], [1., 1.]]), tensor([0, 1])]
    """
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack(batch)
    if isinstance(elem, numpy.ndarray):
        if _is_str_or_object(elem):
            raise TypeError(_ERROR.format(elem.dtype))
        return _stack([as_tensor(b) for b in batch])
    if isinstance(elem, (numpy.bool_, numpy.number)):
        return as_tensor(numpy.asarray(batch))  # asarray keeps the scalars' dtype
    if isinstance(elem, float):
        return tensor(batch, dtype=dtypes.float64)
    if isinstance(elem, int):  # bool included: tensor() gives a bool tensor for them
        return tensor(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        return _clone_with(elem, {key: default_collate([d[key] for d in batch]) for key in elem})
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        sizes = [len(sample) for sample in batch]
        if len(set(sizes)) > 1:
            raise RuntimeError(f"each element in list of batch should be of equal size, got sizes {sizes}")
        columns = [default_collate(samples) for samples in zip(*batch)]
        return columns if isinstance(elem, tuple) else _clone_with(elem, columns)
    raise TypeError(_ERROR.format(type(elem)))


def default_convert(data):
    """Turn the NumPy arrays and scalars in ``data`` into tensors, leaving the rest as is.

    The collate function of a DataLoader with ``batch_size=None`` (samples are already
    batches). Dicts, namedtuples and sequences are converted element by element (a tuple
    gives a list, as in PyTorch).

    Args:
        data: one sample.

    Returns:
        The sample with tensors in place of NumPy data.

    Example:
        >>> default_convert({"x": numpy.zeros(2)})
        {'x': tensor([0., 0.], dtype=float64)}
    """
    if isinstance(data, Tensor):
        return data
    if isinstance(data, numpy.ndarray):
        return data if _is_str_or_object(data) else as_tensor(data)
    if isinstance(data, (numpy.bool_, numpy.number)):
        return as_tensor(numpy.asarray(data))
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        return _clone_with(data, {key: default_convert(data[key]) for key in data})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence):
        return _clone_with(data, [default_convert(d) for d in data])
    return data
