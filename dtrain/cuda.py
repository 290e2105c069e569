"""``dtrain.cuda``: torch.cuda's helpers, answered by CuPy; they work (answering no) without CuPy.

Without a GPU (or without CuPy), ``is_available()`` is False and ``device_count()`` 0, the
memory queries answer 0, ``empty_cache``/``manual_seed`` do nothing and ``set_rng_state``
only checks its state, as in PyTorch; ``get_rng_state_all`` is []; the
functions that need a device (``set_device``, ``current_device``, ``synchronize``,
``get_device_name``, ...) raise "no CUDA device is available".

Memory is CuPy's default memory pool on the current device: ``memory_allocated`` is the bytes
in use, ``memory_reserved`` the bytes the pool holds. CuPy keeps no peak of allocated bytes:
``max_memory_allocated``/``max_memory_reserved`` are the pool's size, which only grows until
``empty_cache()`` or ``reset_peak_memory_stats()`` (which frees the cached blocks so that the
size restarts from the bytes in use): an upper bound of the peak since then. The exact peak of
tensor bytes, on any device (the CPU included), is ``dtrain.tensor.memory``'s (opt-in:
``with dtrain.tensor.memory.track(): ...`` then ``memory.max_memory_allocated(device)``).
"""
from .tensor import backend, device_checks
from .tensor.backend import Device, cuda_device_count, cuda_is_available

NO_DEVICE = "no CUDA device is available (CuPy missing or no GPU)"


def is_available():
    """True if CuPy is installed and sees at least one CUDA device."""
    return cuda_is_available()


def device_count():
    """The number of CUDA devices CuPy sees (0 without CuPy)."""
    return cuda_device_count()


def _cupy(what):
    """CuPy, or a RuntimeError naming ``what`` if no CUDA device is available."""
    if not is_available():
        raise RuntimeError(f"{what}: {NO_DEVICE}")
    return backend.cupy


def _index(device, what):
    """The device index of ``device`` (None: the current one; an int, "cuda:N" or a Device)."""
    cupy = _cupy(what)
    if device is None:
        return cupy.cuda.Device().id
    d = Device("cuda", device) if isinstance(device, int) else Device(device)
    if d.type != "cuda":
        raise ValueError(f"{what}: expected a CUDA device, got {device!r}")
    d = backend.resolve(d)
    if d.index >= device_count():
        raise ValueError(f"{what}: invalid device {d}: only {device_count()} CUDA device(s) are visible")
    return d.index


def current_device():
    """The index of the current CUDA device.

    Example:
        >>> dtrain.cuda.current_device()
        0
    """
    return _cupy("current_device").cuda.Device().id


def set_device(device):
    """Make ``device`` (an index, "cuda:N" or a Device) the current CUDA device.

    Example:
        >>> dtrain.cuda.set_device(local_rank)
    """
    index = _index(device, "set_device")
    backend.cupy.cuda.Device(index).use()


def synchronize(device=None):
    """Wait for all work on ``device`` (an index, "cuda:N" or Device; default: current) to finish;
    an op's index error found on the device since the last synchronisation raises here."""
    index = _index(device, "synchronize")
    backend.cupy.cuda.Device(index).synchronize()
    device_checks.raise_pending()


def get_device_name(device=None):
    """The name of ``device`` (default: current), e.g. "NVIDIA H100 80GB HBM3"."""
    index = _index(device, "get_device_name")
    props = backend.cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else name


def get_device_capability(device=None):
    """``(major, minor)`` compute capability of ``device`` (default: current)."""
    index = _index(device, "get_device_capability")
    props = backend.cupy.cuda.runtime.getDeviceProperties(index)
    return props["major"], props["minor"]


def is_bf16_supported(including_emulation=True):
    """True on a GPU of compute capability 8.0 (Ampere) or later; False without a GPU."""
    return is_available() and get_device_capability()[0] >= 8


def manual_seed(seed):
    """Seed the current CUDA device's generator (nothing without a GPU, as PyTorch defers it)."""
    if is_available():
        _seed_device(current_device(), seed)


def manual_seed_all(seed):
    """Seed every CUDA device's generator, as ``dtrain.manual_seed`` seeds them (nothing without a GPU)."""
    for index in range(device_count()):
        _seed_device(index, seed)


def _seed_device(index, seed):
    _generator(index).manual_seed(int(seed) + 1 + index)  # dtrain.manual_seed's offset


def _generator(index):
    from .tensor.random import default_generator
    return default_generator(Device("cuda", index))


def get_rng_state(device="cuda"):
    """The state of ``device``'s default generator (an index, "cuda:N" or a Device; "cuda": the
    current one), to give back to :func:`set_rng_state`.

    As ``dtrain.get_rng_state`` (the CPU's), it is plain data, not PyTorch's uint8 tensor:
    ``{"seed": initial seed, "state": position}``, the position being the draws made since
    the stream's last re-seed (cuRAND exposes no state to copy: see
    ``dtrain.tensor.device_rng``). Reading it touches no device. Raises without a GPU, as
    PyTorch does.

    Example:
        >>> state = dtrain.cuda.get_rng_state()
        >>> a = dtrain.rand(3, device="cuda")
        >>> dtrain.cuda.set_rng_state(state)
        >>> bool((dtrain.rand(3, device="cuda") == a).all())
        True
    """
    return _generator(_index(device, "get_rng_state")).get_state()


def set_rng_state(new_state, device="cuda"):
    """Put ``device``'s default generator (default: the current device) at ``new_state``, a
    :func:`get_rng_state` of any device; ValueError naming what is wrong if it is not one.
    Without a GPU the state is checked and nothing else happens (PyTorch defers it to a CUDA
    initialisation that never comes); the draws it stands for are replayed at the next draw."""
    from .tensor.device_rng import check_generator_state
    check_generator_state(new_state)
    if is_available():
        _generator(_index(device, "set_rng_state")).set_state(new_state)


def get_rng_state_all():
    """The :func:`get_rng_state` of every visible CUDA device, in index order ([] without a GPU)."""
    return [get_rng_state(index) for index in range(device_count())]


def set_rng_state_all(new_states):
    """:func:`set_rng_state` of device i to ``new_states[i]``, as PyTorch: fewer states than
    devices leave the rest alone; more are an error naming the device count (checked first)."""
    new_states = list(new_states)
    if is_available() and len(new_states) > device_count():
        raise ValueError(f"set_rng_state_all: {len(new_states)} states for {device_count()} visible CUDA "
                         f"device(s)")
    for index, state in enumerate(new_states):
        set_rng_state(state, index)


def _on_pool(device, what, use):
    """``use(pool)`` with ``device`` current, on CuPy's default memory pool; 0 without a GPU
    (``what``: the caller's name, for a bad ``device``)."""
    if not is_available():
        return 0
    index = _index(device, what)
    with backend.cupy.cuda.Device(index):
        return use(backend.cupy.get_default_memory_pool())


def memory_allocated(device=None):
    """Bytes of tensors in use on ``device`` (CuPy's memory pool; 0 without a GPU)."""
    return _on_pool(device, "memory_allocated", lambda pool: pool.used_bytes())


def memory_reserved(device=None):
    """Bytes CuPy's memory pool holds on ``device`` (in use plus cached; 0 without a GPU)."""
    return _on_pool(device, "memory_reserved", lambda pool: pool.total_bytes())


def max_memory_allocated(device=None):
    """An upper bound of the peak bytes in use since the last reset: the pool's size (see the module)."""
    return memory_reserved(device)


def max_memory_reserved(device=None):
    """The pool's size, its peak since the last ``empty_cache``/``reset_peak_memory_stats``."""
    return memory_reserved(device)


def reset_peak_memory_stats(device=None):
    """Restart the peaks from the bytes in use now (frees CuPy's cached blocks on ``device``)."""
    _on_pool(device, "reset_peak_memory_stats", lambda pool: pool.free_all_blocks())


def empty_cache():
    """Return the cached, unused blocks of CuPy's memory pools to the GPU (nothing without a GPU)."""
    if is_available():
        backend.cupy.get_default_memory_pool().free_all_blocks()
        backend.cupy.get_default_pinned_memory_pool().free_all_blocks()
