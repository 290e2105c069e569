"""Parameter: a leaf Tensor that a Module registers as one of its parameters."""
from ..tensor import Tensor, empty


class Parameter(Tensor):
    """A Tensor that is a module parameter, as ``torch.nn.Parameter``.

    Assigning a Parameter as a Module attribute registers it, so it appears in
    ``parameters()`` and ``state_dict()``. It shares storage with ``data``; operations
    on it give plain Tensors.

    Args:
        data: the initial value (a Tensor); an empty tensor when omitted.
        requires_grad: whether the parameter requires gradient (default True).

    Example:
        >>> w = Parameter(dtrain.zeros(2, 3))
        >>> w.requires_grad, w.is_leaf
        (True, True)
    """

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: data must be a Tensor, got {type(data).__name__}")
        self._init(data.array, requires_grad)

    def __repr__(self):
        return f"Parameter containing:\n{super().__repr__()}"

    def __deepcopy__(self, memo):
        # as PyTorch: a fresh copy of the values; the gradient is not copied
        result = memo.get(id(self))
        if result is None:
            result = memo[id(self)] = Parameter(Tensor._wrap(self.array.copy()), self.requires_grad)
        return result

    def __reduce_ex__(self, protocol):
        # pickle the values and the flag only: not the gradient or hooks (as PyTorch)
        return _rebuild_parameter, (self.array, self.requires_grad)


def _rebuild_parameter(array, requires_grad):
    return Parameter(Tensor._wrap(array), requires_grad)
