"""Flatten parameters into one vector and back (as torch.nn.utils)."""
from ...tensor import Tensor, cat


def _check_same_device(parameters, op):
    devices = {p.device for p in parameters}
    if len(devices) > 1:
        raise TypeError(f"{op}: found parameters on different devices {sorted(map(str, devices))}; "
                        f"move them to one device first")


def parameters_to_vector(parameters):
    """All parameters flattened and concatenated into one 1-D Tensor (differentiable).

    Example:
        >>> nn.utils.parameters_to_vector(nn.Linear(3, 2).parameters()).shape
        dtrain.Size([8])
    """
    params = list(parameters)
    _check_same_device(params, "parameters_to_vector")
    return cat([p.reshape(-1) for p in params])


def vector_to_parameters(vec, parameters):
    """Make the parameters views of consecutive slices of ``vec`` (as PyTorch, they
    then share storage with it).

    Example:
        >>> vector_to_parameters(parameters_to_vector(model.parameters()) * 0, model.parameters())
    """
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected dtrain.Tensor, but got: {type(vec).__name__}")
    params = list(parameters)
    _check_same_device(params + [vec], "vector_to_parameters")
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(f"vector_to_parameters: vec has shape {list(vec.shape)} but the parameters hold "
                         f"{total} elements; expected shape [{total}]")
    pointer = 0
    for p in params:
        n = p.numel()
        p.array = vec.array[pointer:pointer + n].reshape(p.shape)
        pointer += n
