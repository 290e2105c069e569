"""bfloat16 for NumPy and CuPy arrays: ml_dtypes' type (NumPy has none), an optional extra."""
import numpy

INSTALL_HINT = "bfloat16 needs the ml_dtypes package: pip install dtrain[bf16] (or pip install ml_dtypes)"


def bfloat16_dtype():
    """The bfloat16 dtype (``dtrain.bfloat16``): ml_dtypes' NumPy dtype.

    Raises ImportError naming the extra to install when ml_dtypes is missing.

    Example:
        >>> dtrain.amp.bfloat16_dtype().itemsize
        2
    """
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return numpy.dtype(ml_dtypes.bfloat16)
