"""Random number generators: one per device, seeded together by manual_seed."""
import threading

import numpy

from . import backend, dtypes
from .device_rng import DeviceStream, check_generator_state

_generators = {}
_seed = [None]
_local = threading.local()  # .cpu_rng: this thread's stand-in for the default CPU stream (see sample_random)


class Generator:
    """A random stream on one device, as ``torch.Generator``.

    Example:
        >>> g = Generator().manual_seed(0)
        >>> dtrain.randn(3, generator=g)
    """

    def __init__(self, device="cpu"):
        self.device = backend.resolve(backend.Device(device))  # "cuda": the current device, as PyTorch
        self.manual_seed(numpy.random.SeedSequence().entropy % (2 ** 63))

    def manual_seed(self, seed):
        self._seed = int(seed)
        # a GPU stream keeps its position itself (cuRAND exposes none): device_rng
        self.rng = (backend.make_rng(self.device, self._seed) if self.device.type == "cpu"
                    else DeviceStream(self.device, self._seed))
        return self

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """``{"seed": initial seed, "state": position}``: NumPy's bit generator state on the
        CPU, :meth:`DeviceStream.get_state` on a GPU; plain data, which a checkpoint stores."""
        return {"seed": self._seed, "state": self.rng.bit_generator.state if self.device.type == "cpu"
                else self.rng.get_state()}

    def set_state(self, state):
        if self.device.type != "cpu":
            check_generator_state(state)  # before anything changes
            self.manual_seed(state["seed"])
            if state["state"] is not None:
                self.rng.set_state(state["state"])
        elif state.get("state") is not None:
            self.rng.bit_generator.state = state["state"]
        else:
            self.manual_seed(state["seed"])
        return self


def default_generator(device):
    device = backend.resolve(device)
    g = _generators.get(device)
    if g is None:
        g = _generators[device] = Generator(device)
        if _seed[0] is not None:
            g.manual_seed(_seed[0] + (0 if device.type == "cpu" else 1 + device.index))
    return g


def manual_seed(seed):
    """Seed the generator of every device (each device gets its own stream)."""
    _seed[0] = int(seed)
    for device, g in _generators.items():
        g.manual_seed(_seed[0] + (0 if device.type == "cpu" else 1 + device.index))
    default_generator(backend.CPU)


def seed():
    s = int(numpy.random.SeedSequence().entropy % (2 ** 63))
    manual_seed(s)
    return s


def initial_seed():
    return default_generator(backend.CPU).initial_seed()


def get_rng_state():
    return default_generator(backend.CPU).get_state()


def set_rng_state(state):
    default_generator(backend.CPU).set_state(state)


def _rng(device, generator):
    if generator is not None:
        if generator.device != device:
            raise RuntimeError(f"generator is on {generator.device} but the tensor is created on {device}")
        return generator.rng
    stand_in = getattr(_local, "cpu_rng", None)
    if stand_in is not None and device.type == "cpu":
        return stand_in
    return default_generator(device).rng


def _float(dtype):
    dtype = dtypes.as_dtype(dtype) or dtypes.get_default_dtype()
    if not dtypes.is_floating(dtype):
        raise TypeError(f"random floating-point values need a floating dtype, got {dtype}")
    return dtype


def _scaled_floats(draw, shape, scale, shift, dtype, device, generator):
    """``rng.<draw>(shape) * scale + shift`` as floating ``dtype`` on ``device`` (float16 and
    bfloat16 are drawn as float32 and cast: the generators draw only float32 and float64)."""
    dtype = _float(dtype)
    rng = _rng(device, generator)
    with backend.device_guard(device):
        a = getattr(rng, draw)(tuple(shape), dtype=dtype if dtype.itemsize > 2 else dtypes.float32)
        if scale != 1.0 or shift != 0.0:
            a = a * scale + shift
        return a.astype(dtype, copy=False)


def normal_array(shape, mean, std, dtype, device, generator=None):
    return _scaled_floats("standard_normal", shape, std, mean, dtype, device, generator)


def uniform_array(shape, low, high, dtype, device, generator=None):
    return _scaled_floats("random", shape, high - low, low, dtype, device, generator)


def integers_array(low, high, shape, dtype, device, generator=None):
    rng = _rng(device, generator)
    with backend.device_guard(device):
        return rng.integers(low, high, size=tuple(shape)).astype(dtype, copy=False)


def permutation_array(n, dtype, device, generator=None):
    rng = _rng(device, generator)
    with backend.device_guard(device):
        return rng.permutation(n).astype(dtype, copy=False)


def philox_generator(key):
    """A host (NumPy) generator over Philox, counter-based, keyed by ``key`` (two 64-bit
    words): the same key gives the same stream on every process, whatever drew before it
    (deterministic mode's per-sample streams, :mod:`dtrain.tensor.deterministic`)."""
    return numpy.random.Generator(numpy.random.Philox(key=key))


class _LazyGenerator:
    """philox_generator(key), built at its first use: a DataLoader in deterministic mode opens
    a sample_random per sample, and most samples draw nothing (building one costs ~40 us)."""

    def __init__(self, key):
        self._key, self._generator = key, None

    def __getattr__(self, name):  # only for what this class lacks: the Generator's methods
        if self._generator is None:
            self._generator = philox_generator(self._key)
        return getattr(self._generator, name)


class sample_random:
    """A block in which this thread's draws from the default CPU generator (``dtrain.rand``,
    ``randint``, the random transforms of :mod:`dtrain.vision`) come from Philox keyed by
    ``(key, index)`` instead: data augmentation drawn per sample, the same whichever rank or
    worker thread loads the sample and whatever was drawn before. Other threads and explicit
    generators are not affected; the default generator's state does not move.

    Args:
        key: a non-negative integer naming the pass over the data (e.g. the DataLoader's base
            seed of the epoch, which is drawn from the seeded default generator).
        index: the sample's index in the dataset.

    Example:
        >>> with sample_random(key=base_seed, index=i):   # in deterministic mode, per sample
        ...     image = dataset[i]                         # RandomCrop etc. draw from (key, i)
    """

    def __init__(self, key, index):
        if int(key) < 0 or int(index) < 0:
            raise ValueError(f"sample_random: key and index must be >= 0, got key={key}, index={index}")
        self.rng = _LazyGenerator([int(key) & ((1 << 64) - 1), int(index) & ((1 << 64) - 1)])

    def __enter__(self):
        self.outer, _local.cpu_rng = getattr(_local, "cpu_rng", None), self.rng
        return self

    def __exit__(self, *exc):
        _local.cpu_rng = self.outer
        return False
