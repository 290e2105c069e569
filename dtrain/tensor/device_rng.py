"""A device (CuPy) random stream whose position can be saved and restored exactly.

cuRAND's host generators, behind ``cupy.random.RandomState``, expose no state: how far a draw
moves the stream is internal to cuRAND (and ``randint``'s rejection loop makes it depend on
the values drawn). So the position is kept as what reproduces it: the stream is cut into
blocks of :data:`BLOCK` draws, block ``b`` drawn from a fresh generator seeded from
``(seed, b)`` (block 0 from ``seed`` itself, as before blocks existed), and the state is
``(b, the draws made in block b so far)``. Restoring re-seeds block ``b`` and replays those
draws (fewer than :data:`BLOCK`, results discarded). It relies only on "the same seed and the
same calls give the same numbers", so it is exact on any GPU and CuPy version.

Traps and costs:

* A cuRAND XORWOW re-seed is slow (its per-thread skip-ahead; about 6 ms reported in
  JuliaGPU/CUDA.jl#685, not measured here): one per :data:`BLOCK` draws spreads it to a few
  microseconds per draw. A restore replays at most BLOCK - 1 draws, once.
* Nothing touches the device until the first draw: a stream that is created, queried or
  restored and never drawn from builds no generator, so ``get_rng_state_all`` on a job that
  sees eight GPUs but uses one creates no CUDA context on the other seven. The replay runs
  at that first draw (so its cost, and an out-of-memory from a crafted state, show there).
* A state is plain data (ints, strings, lists): the checkpoint format stores it as it is.
"""
import numbers
import reprlib  # messages quote values of crafted checkpoints: bounded

import numpy

from . import backend

BLOCK = 1024  # draws per block: bounds a restore's replay and the state's length
DRAWS = {"standard_normal": ("size", "dtype"), "random": ("size", "dtype"),  # what _CupyRNG offers
         "integers": ("low", "high", "size"), "permutation": ("n",)}


def block_seed(seed, block):
    """The seed of ``block``'s generator: ``seed`` for block 0, else one mixed from both
    (splitmix64, twice: nearby seeds and blocks give unrelated seeds), below 2**63."""
    if block == 0:
        return seed
    return _splitmix64(_splitmix64(seed % 2 ** 64) ^ block) >> 1


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) % 2 ** 64
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 % 2 ** 64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB % 2 ** 64
    return x ^ (x >> 31)


class DeviceStream:
    """NumPy Generator's draw methods (as ``backend.make_rng`` gives on a GPU) on ``device``,
    with :meth:`get_state` / :meth:`set_state` (see the module for how).

    Example:
        >>> s = DeviceStream(Device("cuda", 0), seed=1)
        >>> state = s.get_state(); a = s.random((3,), "float32")
        >>> s.set_state(state); bool((s.random((3,), "float32") == a).all())
        True
    """

    def __init__(self, device, seed):
        self.device, self.seed = device, int(seed)
        self._enter(0, [], [])

    def _enter(self, block, calls, order):
        self.block, self.calls, self.order = block, calls, order
        self._index = {call: i for i, call in enumerate(calls)}
        self._rng = None  # built, and ``order`` replayed, at the next draw

    def _live(self):
        if self._rng is None:
            with backend.device_guard(self.device):  # a cuRAND generator draws only on its own device
                rng = backend.make_rng(self.device, block_seed(self.seed, self.block))
                for i in self.order:
                    _call(rng, self.calls[i])
            self._rng = rng
        return self._rng

    def _draw(self, call):
        out = _call(self._live(), call)
        i = self._index.get(call)
        if i is None:
            i = self._index[call] = len(self.calls)
            self.calls.append(call)
        self.order.append(i)
        if len(self.order) == BLOCK:
            self._enter(self.block + 1, [], [])
        return out

    def standard_normal(self, size, dtype):
        return self._draw(("standard_normal", _shape(size), numpy.dtype(dtype).name))

    def random(self, size, dtype):
        return self._draw(("random", _shape(size), numpy.dtype(dtype).name))

    def integers(self, low, high, size):
        return self._draw(("integers", int(low), int(high), _shape(size)))

    def permutation(self, n):
        return self._draw(("permutation", int(n)))

    def get_state(self):
        """``{"block": b, "calls": [[name, *args], ...], "order": [call index, ...]}``: the
        distinct draws of block ``b`` and the order they were made in."""
        return {"block": self.block, "calls": [[c[0], *(list(a) if isinstance(a, tuple) else a for a in c[1:])]
                                               for c in self.calls], "order": list(self.order)}

    def set_state(self, state):
        """Go to the position ``state`` (a :meth:`get_state` of any stream) names, from this
        stream's seed; ValueError naming what is wrong if it is not such a state."""
        calls = check_stream_state(state)
        self._enter(state["block"], calls, list(state["order"]))
        return self


def _call(rng, call):
    name, *args = call
    if name in ("standard_normal", "random"):
        return getattr(rng, name)(args[0], numpy.dtype(args[1]))
    return getattr(rng, name)(*args)


def _shape(size):
    return tuple(int(n) for n in ((size,) if isinstance(size, numbers.Integral) else size))


def _is_int(x, low=0):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool) and (low is None or x >= low)


_FLOAT_NAMES = ("float16", "float32", "float64")  # the dtypes a draw is made in (numpy.dtype(...).name)


def _checked_call(entry):
    """The draw ``entry`` ([name, *args], as get_state writes it) as the hashable call a live
    draw records, or a string saying what is wrong with it."""
    if not (isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str) and entry[0] in DRAWS):
        return f"a draw is {reprlib.repr(entry)}, not [name, *args] with name one of {sorted(DRAWS)}"
    name, args, params = entry[0], list(entry[1:]), DRAWS[entry[0]]
    if len(args) != len(params):
        return f"the {name} draw {reprlib.repr(entry)} has {len(args)} arguments ({', '.join(params)} expected)"
    for i, (param, value) in enumerate(zip(params, args)):
        if param == "size":
            ok = isinstance(value, (list, tuple)) and all(_is_int(n) for n in value)
            args[i] = tuple(int(n) for n in value) if ok else None
        elif param == "dtype":
            ok = isinstance(value, str) and value in _FLOAT_NAMES
        else:  # low and high may be negative, n may not
            ok = _is_int(value, low=0 if param == "n" else None)
            args[i] = int(value) if ok else None
        if not ok:
            return f"the {name} draw {reprlib.repr(entry)} has {param} {reprlib.repr(value)}"
    return (name, *args)


def check_generator_state(state):
    """ValueError naming what is wrong unless ``state`` is a GPU ``Generator.get_state()``:
    ``{"seed": int, "state": None or a DeviceStream state}`` (``None``: at the seed's start).
    It needs no device: a checkpoint is checked with it, on any machine, before anything is
    restored."""
    if not isinstance(state, dict) or set(state) != {"seed", "state"}:
        raise ValueError(f"a GPU generator state is a dict with the keys ['seed', 'state'], got {reprlib.repr(state)}")
    if not _is_int(state["seed"], low=None):
        raise ValueError(f"the GPU generator state's seed is {reprlib.repr(state['seed'])}, not an int")
    if state["state"] is not None:
        check_stream_state(state["state"])


def check_stream_state(state):
    """The calls of a :meth:`DeviceStream.get_state` dict, checked; ValueError naming what is
    wrong otherwise."""
    if not isinstance(state, dict) or set(state) != {"block", "calls", "order"}:
        raise ValueError(f"a device RNG stream state is a dict with the keys ['block', 'calls', 'order'], "
                         f"got {reprlib.repr(state)}")
    if not _is_int(state["block"]):
        raise ValueError(f"the device RNG stream state's block is {reprlib.repr(state['block'])}, not an int >= 0")
    if not isinstance(state["calls"], (list, tuple)):
        raise ValueError(f"the device RNG stream state's calls are {reprlib.repr(state['calls'])}, not a list")
    calls = []
    for entry in state["calls"]:
        call = _checked_call(entry)
        if isinstance(call, str):
            raise ValueError(f"the device RNG stream state is malformed: {call}")
        calls.append(call)
    order = state["order"]
    if (not isinstance(order, (list, tuple)) or len(order) >= BLOCK
            or not all(_is_int(i) and i < len(calls) for i in order)):
        raise ValueError(f"the device RNG stream state's order is {reprlib.repr(order)}, not a list of fewer than "
                         f"{BLOCK} indices into its {len(calls)} calls")
    return calls
