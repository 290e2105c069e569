"""``dtrain.backends.mps``: Apple's Metal backend, which dtrain does not have."""


def is_available():
    """False: dtrain runs on NumPy (CPU) or CuPy (CUDA)."""
    return False


def is_built():
    """False: dtrain has no MPS support."""
    return False
