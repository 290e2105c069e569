"""``dtrain.backends.cpu``: what the CPU offers to NumPy."""


def get_cpu_capability():
    """The widest SIMD instruction set NumPy's compiled loops use here ("AVX512", "AVX2", "NEON",
    ..., "DEFAULT"), as torch.backends.cpu.get_cpu_capability names it."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found  # NumPy 2
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__ as found  # NumPy 1
    for name, features in (("AVX512", ("AVX512F", "AVX512BW")), ("AVX2", ("AVX2",)), ("SVE", ("SVE",)),
                           ("NEON", ("NEON",))):
        if all(found.get(f) for f in features):
            return name
    return "DEFAULT"
