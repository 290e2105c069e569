"""MixedPrecisionPolicy: the dtypes fully_shard computes and reduces in, as
``torch.distributed.fsdp.MixedPrecisionPolicy``."""
from dataclasses import dataclass

from ...tensor import dtypes


@dataclass(frozen=True)
class MixedPrecisionPolicy:
    """The dtypes of one fully_shard group's communication and compute.

    Args:
        param_dtype: the dtype the parameters are all-gathered in and the module computes in
            (None: the parameters' own); the shards, and so the optimizer, keep theirs.
        reduce_dtype: the dtype gradients are reduce-scattered in (None: ``param_dtype``'s);
            the averaged gradient lands in ``.grad`` in the shard's dtype.
        output_dtype: floating outputs of the module's forward are cast to it (None: left).
        cast_forward_inputs: cast floating Tensor arguments of the forward to ``param_dtype``.

    Example:
        >>> fully_shard(block, mp_policy=MixedPrecisionPolicy(param_dtype=dtrain.float32,
        ...                                                   reduce_dtype=dtrain.float64))
    """
    param_dtype: object = None
    reduce_dtype: object = None
    output_dtype: object = None
    cast_forward_inputs: bool = True

    def __post_init__(self):
        for field in ("param_dtype", "reduce_dtype", "output_dtype"):
            value = dtypes.as_dtype(getattr(self, field))
            if value is not None and not dtypes.is_floating(value):
                raise ValueError(f"MixedPrecisionPolicy: {field} must be a floating dtype or None, got {value!r}")
            object.__setattr__(self, field, value)  # frozen: set once, normalized (float -> float32 ...)
