"""PyTorch's CPU ``torch.randn`` after ``torch.manual_seed(seed)``, in NumPy.

PowerSGD starts its low-rank Q matrices from ``torch.manual_seed(s); torch.randn(shape)``,
with ``s`` drawn from the state's NumPy RNG; drawing them the same way here lets a dtrain
job and a PyTorch job with the same ``random_seed`` start from the same Q: bit for bit
against PyTorch's scalar kernel (``ATEN_CPU_CAPABILITY=default``; the C library's ``logf``,
``cosf``, ``sinf`` are called here as there, through ctypes), within a few float32 ulps
against its vectorised kernels (AVX2, AVX-512), whose log and sine differ in the last bits.
Without a C math library found, float32 is computed in float64 and rounded (a last-bit
difference now and then).

The generator (ATen's CPUGeneratorImpl): MT19937 seeded as ``init_genrand(seed)`` (NumPy's
``RandomState(seed)`` for a seed below 2**32 gives the same 32-bit stream); a float32
uniform is ``(next32 & (2**24 - 1)) * 2**-24``, a float64 one is ``(((a << 32) | b) &
(2**53 - 1)) * 2**-53`` of two draws. ``randn`` then takes one of two paths
(aten/src/ATen/native/cpu/DistributionTemplates.h, ``normal_kernel``):

* 16 elements or more: all uniforms are drawn first, then Box-Muller on each block of 16
  (element j and j + 8 of a block share a pair); if the size is not a multiple of 16, the
  last 16 elements are drawn again and transformed again (overwriting some).
* fewer than 16: per element, float64 Box-Muller (``normal_distribution<double>``): two
  uniforms u1, u2 give ``r cos(2 pi u1)`` now and cache ``r sin(2 pi u1)``, r =
  sqrt(-2 log1p(-u2)), for the next element (of this or a later small ``randn`` until the
  generator is seeded again).
"""
import ctypes
import ctypes.util
import math

import numpy

_F32_MASK, _F64_MASK = (1 << 24) - 1, (1 << 53) - 1


def _float_libm():
    """The C library's (logf, cosf, sinf), as PyTorch's scalar kernel calls them; None if not found."""
    name = ctypes.util.find_library("m")
    try:
        libm = ctypes.CDLL(name)
    except OSError:
        return None
    functions = []
    for fn in ("logf", "cosf", "sinf"):
        f = getattr(libm, fn, None)
        if f is None:
            return None
        f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
        functions.append(f)
    return functions


_LIBM = _float_libm()
_DOUBLE = (math.log, math.cos, math.sin)  # CPython calls the C library's double functions


class TorchNormal:
    """``torch.manual_seed(seed)`` and then successive ``torch.randn(shape, dtype)`` calls.

    Args:
        seed: the seed (0 <= seed < 2**32, as PowerSGD's are).

    Example:
        >>> g = TorchNormal(7)
        >>> q1, q2 = g.randn((1, 128, 1), numpy.float32), g.randn((1, 10, 1), numpy.float32)
    """

    def __init__(self, seed):
        if not 0 <= seed < 2 ** 32:
            raise ValueError(f"TorchNormal: seed {seed} is outside [0, 2**32)")
        self._mt = numpy.random.RandomState(seed)
        self._cached = None  # the sine half of the last small-path pair, as PyTorch's generator keeps it

    def _next32(self, n):
        return self._mt.randint(0, 2 ** 32, size=n, dtype=numpy.uint64)

    def _uniform32(self, n):
        return ((self._next32(n) & _F32_MASK).astype(numpy.float32) * numpy.float32(2.0 ** -24))

    def _uniform64(self):
        a, b = (int(v) for v in self._next32(2))
        return (((a << 32) | b) & _F64_MASK) * 2.0 ** -53

    def randn(self, shape, dtype):
        """The values of ``torch.randn(*shape, dtype=dtype)``, as a NumPy array of ``dtype``
        (a half dtype is computed in float32 and cast, as PyTorch does)."""
        dtype = numpy.dtype(dtype)
        n = math.prod(shape)
        if n < 16:
            return numpy.array([self._small() for _ in range(n)], dtype=numpy.float64).astype(dtype).reshape(shape)
        wide = dtype == numpy.float64
        # float32/float64 draw every uniform before transforming; a half dtype draws each block's
        # 16 as it goes (a float32 buffer): with a partial last block, the two consume different uniforms
        upfront = wide or dtype == numpy.float32
        out = self._uniforms(n, wide) if upfront else numpy.empty(n, numpy.float32)
        for start in range(0, n - 15, 16):
            block = out[start:start + 16] if upfront else self._uniforms(16, wide)
            out[start:start + 16] = self._box_muller16(block, wide)
        if n % 16:
            out[n - 16:] = self._box_muller16(self._uniforms(16, wide), wide)
        return out.astype(dtype, copy=False).reshape(shape)

    def _uniforms(self, n, wide):
        if wide:
            return numpy.array([self._uniform64() for _ in range(n)], dtype=numpy.float64)
        return self._uniform32(n)

    @staticmethod
    def _box_muller16(u, wide):
        """Box-Muller on 16 uniforms: u[j] and u[j + 8] give elements j and j + 8, each
        operation rounded to the kernel's type (float32, or float64 for float64)."""
        ftype = numpy.float64 if wide else numpy.float32
        log, cos, sin = _DOUBLE if wide or _LIBM is None else _LIBM

        def each(fn, values):
            return numpy.array([fn(float(v)) for v in values], dtype=numpy.float64).astype(ftype)
        radius = numpy.sqrt(ftype(-2) * each(log, ftype(1) - u[:8]))  # [0, 1) -> (0, 1] for the log
        theta = (2.0 * math.pi * u[8:].astype(numpy.float64)).astype(ftype)  # 2 * pi in double, then stored
        return numpy.concatenate([radius * each(cos, theta), radius * each(sin, theta)])

    def _small(self):
        if self._cached is not None:
            value, self._cached = self._cached, None
            return value
        u1, u2 = self._uniform64(), self._uniform64()
        r = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self._cached = r * math.sin(theta)
        return r * math.cos(theta)
