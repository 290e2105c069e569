"""``dtrain.backends.cuda``: torch.backends.cuda's ``matmul`` flags and ``is_built``. The TF32 flag
is recorded only: CuPy chooses the math mode of its matrix products.

Example:
    >>> dtrain.backends.cuda.matmul.allow_tf32 = True
"""
from ..tensor.backend import cupy
from .flags import Flags

matmul = Flags("torch.backends.cuda.matmul",
               allow_tf32=(False, "set_allow_tf32_cublas"),
               allow_fp16_reduced_precision_reduction=(True, "set_allow_fp16_reduced_precision_reduction"),
               allow_bf16_reduced_precision_reduction=(True, "set_allow_bf16_reduced_precision_reduction"))


def is_built():
    """True if CuPy is installed (dtrain's CUDA support), whether or not a GPU is present."""
    return cupy is not None
