"""torch.cuda, torch.accelerator, torch.backends and torch.compile at dtrain's paths: the answers
without a GPU are PyTorch's (CPU build); the GPU branches run against a small CuPy emulation."""
import sys

import pytest

import dtrain
from dtrain import accelerator, backends, cuda
from dtrain.tensor import backend


class _Runtime:
    def __init__(self, count):
        self.count = count

    def getDeviceCount(self):
        return self.count

    def getDeviceProperties(self, index):
        return {"name": b"Emulated GPU", "major": 8, "minor": 0}


class _Pool:
    """CuPy's MemoryPool per device: bytes in use and cached."""

    def __init__(self, cupy):
        self.cupy, self.used, self.cached = cupy, {}, {}

    def used_bytes(self):
        return self.used.get(self.cupy.current, 0)

    def total_bytes(self):
        return self.used_bytes() + self.cached.get(self.cupy.current, 0)

    def free_all_blocks(self):
        self.cached[self.cupy.current] = 0


class FakeCupy:
    """What dtrain.cuda and dtrain.accelerator ask CuPy, with ``count`` devices."""

    def __init__(self, count):
        fake = self
        self.current, self.synced = 0, []

        class Device:
            def __init__(self, index=None):
                self.id = fake.current if index is None else index

            def use(self):
                fake.current = self.id

            def synchronize(self):
                fake.synced.append(self.id)

            def __enter__(self):
                self.previous, fake.current = fake.current, self.id

            def __exit__(self, *exc):
                fake.current = self.previous

        self.cuda = type("cuda", (), {"runtime": _Runtime(count), "Device": Device})
        self.pool, self.pinned = _Pool(self), _Pool(self)

    def get_default_memory_pool(self):
        return self.pool

    def get_default_pinned_memory_pool(self):
        return self.pinned


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(backend, "cupy", None)


@pytest.fixture
def gpus(monkeypatch):
    """Two emulated GPUs."""
    fake = FakeCupy(2)
    monkeypatch.setattr(backend, "cupy", fake)
    return fake


@pytest.fixture
def flags():
    """Put the backends' flags and the matmul precision back as they were after the test."""
    saved = dict(backends.cudnn._values), dict(backends.cuda.matmul._flags), list(backends._precision)
    yield
    backends.cudnn._values.clear()
    backends.cudnn._values.update(saved[0])
    backends.cuda.matmul._flags.update(saved[1])
    backends._precision[:] = saved[2]


def test_cuda_without_gpu_answers_as_pytorch(no_cupy):
    """No GPU: not available, 0 devices, 0 bytes of memory, nothing to empty or seed, no bf16;
    PyTorch's CPU build answers the same."""
    def answers(m):
        return (m.is_available(), m.device_count(), m.memory_allocated(), m.max_memory_allocated(),
                m.memory_reserved(), m.empty_cache(), m.manual_seed(1), m.manual_seed_all(1), m.is_bf16_supported())
    assert answers(cuda) == (False, 0, 0, 0, 0, None, None, None, False)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert answers(torch.cuda) == answers(cuda)


@pytest.mark.parametrize("call, name", [(lambda: cuda.set_device(0), "set_device"),
                                        (cuda.current_device, "current_device"),
                                        (cuda.synchronize, "synchronize"),
                                        (cuda.get_device_name, "get_device_name"),
                                        (cuda.get_device_capability, "get_device_capability")])
def test_cuda_functions_needing_a_gpu_say_there_is_none(no_cupy, call, name):
    """Without a GPU, what needs one raises naming the function and "no CUDA device is available"."""
    with pytest.raises(RuntimeError, match=f"{name}: no CUDA device is available"):
        call()


def test_cuda_on_emulated_gpus(gpus):
    """set_device/current_device/synchronize/name/capability go to CuPy's device; a bad index
    names the visible count."""
    assert cuda.is_available() and cuda.device_count() == 2
    cuda.set_device("cuda:1")
    assert cuda.current_device() == 1
    cuda.synchronize()
    cuda.synchronize(0)
    assert gpus.synced == [1, 0]
    assert cuda.get_device_name() == "Emulated GPU" and cuda.get_device_capability(0) == (8, 0)
    assert cuda.is_bf16_supported()
    with pytest.raises(ValueError, match=r"set_device: invalid device cuda:5: only 2 CUDA device\(s\) are visible"):
        cuda.set_device(5)


def test_memory_queries_read_cupys_pool(gpus):
    """memory_allocated is the pool's bytes in use on the device, memory_reserved and the peaks
    the pool's size; reset_peak_memory_stats and empty_cache free the cached blocks."""
    gpus.pool.used, gpus.pool.cached = {0: 100, 1: 7}, {0: 50}
    assert (cuda.memory_allocated(), cuda.memory_allocated(1), cuda.memory_reserved()) == (100, 7, 150)
    assert cuda.max_memory_allocated() == cuda.max_memory_reserved() == 150
    cuda.reset_peak_memory_stats()
    assert cuda.max_memory_allocated() == 100 and gpus.current == 0
    gpus.pool.cached[0] = 30
    cuda.empty_cache()
    assert cuda.memory_reserved() == 100
    assert accelerator.memory_allocated(1) == 7


def test_accelerator_without_gpu_matches_pytorch(no_cupy):
    """No CuPy: no accelerator (None, as a PyTorch build without one), 0 devices, and the calls
    that need a device raise PyTorch's message."""
    assert (accelerator.is_available(), accelerator.current_accelerator(),
            accelerator.current_accelerator(check_available=True), accelerator.device_count()) == (False, None, None, 0)
    for call in (accelerator.current_device_index, accelerator.synchronize, lambda: accelerator.set_device_index(0)):
        with pytest.raises(RuntimeError, match="Cannot access accelerator device when none is available."):
            call()
    torch = pytest.importorskip("torch")
    if torch.accelerator.current_accelerator() is None:
        with pytest.raises(RuntimeError) as e:
            torch.accelerator.current_device_index()
        assert str(e.value) == accelerator.NO_DEVICE


def test_accelerator_built_but_no_gpu(monkeypatch):
    """CuPy installed without a GPU is PyTorch's CUDA build on a machine without one:
    current_accelerator() is device('cuda'), unless check_available=True asks."""
    monkeypatch.setattr(backend, "cupy", FakeCupy(0))
    assert accelerator.current_accelerator() == dtrain.device("cuda")
    assert accelerator.current_accelerator(check_available=True) is None and not accelerator.is_available()


def test_accelerator_on_emulated_gpus(gpus):
    """The accelerator is CUDA: its device index follows dtrain.cuda's, device_index() restores it."""
    assert accelerator.current_accelerator(check_available=True) == dtrain.device("cuda")
    accelerator.set_device_index(1)
    assert accelerator.current_device_index() == cuda.current_device() == 1
    with accelerator.device_index(0):
        assert accelerator.current_device_index() == 0
    assert accelerator.current_device_index() == 1
    accelerator.synchronize()
    assert gpus.synced == [1]


def test_backend_flag_defaults_are_pytorchs():
    """The flags start as PyTorch's: cudnn enabled, no benchmark, not deterministic, cudnn TF32
    on, matmul TF32 off; no MPS; the matmul precision "highest"."""
    def ours(b, p):
        return (b.cudnn.enabled, b.cudnn.benchmark, b.cudnn.deterministic, b.cudnn.allow_tf32,
                b.cuda.matmul.allow_tf32, b.mps.is_available(), b.mps.is_built(), p())
    assert ours(backends, dtrain.get_float32_matmul_precision) == (True, False, False, True, False, False, False,
                                                                   "highest")
    torch = pytest.importorskip("torch")
    assert ours(torch.backends, torch.get_float32_matmul_precision) == ours(backends,
                                                                            dtrain.get_float32_matmul_precision)


def test_backend_flags_are_settable_and_checked(flags):
    """Scripts set the flags and read them back; a non-bool value and an unknown matmul flag are
    refused with PyTorch's messages."""
    backends.cudnn.benchmark = True
    backends.cudnn.deterministic = True
    backends.cuda.matmul.allow_tf32 = True
    assert backends.cudnn.benchmark and backends.cudnn.deterministic and backends.cuda.matmul.allow_tf32
    with pytest.raises(RuntimeError, match="set_benchmark_cudnn expects a bool, but got str"):
        backends.cudnn.benchmark = "yes"
    with pytest.raises(RuntimeError, match="set_allow_tf32_cublas expects a bool, but got int"):
        backends.cuda.matmul.allow_tf32 = 1
    with pytest.raises(AttributeError, match="Unknown attribute allow_tf33"):
        backends.cuda.matmul.allow_tf33 = True
    assert backends.cudnn.is_available() is False and backends.cudnn.version() is None


def test_float32_matmul_precision(flags):
    """set/get_float32_matmul_precision as PyTorch: "high"/"medium" turn matmul TF32 on and
    "highest" off; setting allow_tf32 reads back as "high"; another string warns and changes
    nothing; a non-string is refused."""
    dtrain.set_float32_matmul_precision("medium")
    assert dtrain.get_float32_matmul_precision() == "medium" and backends.cuda.matmul.allow_tf32
    dtrain.set_float32_matmul_precision("highest")
    assert dtrain.get_float32_matmul_precision() == "highest" and not backends.cuda.matmul.allow_tf32
    backends.cuda.matmul.allow_tf32 = True
    assert dtrain.get_float32_matmul_precision() == "high"
    with pytest.warns(UserWarning, match="low is not one of 'highest', 'high', or 'medium'"):
        dtrain.set_float32_matmul_precision("low")
    assert dtrain.get_float32_matmul_precision() == "high"
    with pytest.raises(RuntimeError, match="set_float32_matmul_precision expects a str, but got int"):
        dtrain.set_float32_matmul_precision(3)


def test_compile_returns_the_model():
    """dtrain.compile returns its argument, bare, as a decorator, or as a decorator factory."""
    model = dtrain.nn.Linear(2, 2)
    assert dtrain.compile(model) is model and dtrain.compile(model, mode="max-autotune", dynamic=True) is model

    @dtrain.compile
    def double(x):
        return x * 2

    @dtrain.compile(fullgraph=True)
    def triple(x):
        return x * 3
    assert (double(2), triple(2)) == (4, 6)
    assert dtrain.compiler.is_compiling() is False and dtrain.compiler.disable(double) is double


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(mode="fast"), RuntimeError,
     "Unrecognized mode=fast, should be one of: default, lite, reduce-overhead, max-autotune-no-cudagraphs, "
     "max-autotune"),
    (dict(mode="default", options={}), RuntimeError,
     "Either mode or options can be specified, but both can't be specified at the same time."),
])
def test_compile_checks_mode_as_pytorch(kwargs, error, message):
    """A bad mode, or mode with options, is PyTorch's error, word for word."""
    with pytest.raises(error) as e:
        dtrain.compile(abs, **kwargs)
    assert str(e.value) == message


def test_compile_refuses_a_non_callable():
    """Compiling something that is not callable names its type."""
    with pytest.raises(TypeError, match="compile: a callable function is expected, but <class 'int'> is provided"):
        dtrain.compile(3)


def test_cpu_capability_is_a_simd_name():
    """backends.cpu.get_cpu_capability() names a SIMD level, as PyTorch's does."""
    assert backends.cpu.get_cpu_capability() in ("AVX512", "AVX2", "SVE", "NEON", "DEFAULT")


def test_cuda_seeds_reach_each_devices_generator(gpus, monkeypatch):
    """manual_seed seeds the current device's generator, manual_seed_all every device's, with
    the per-device offset dtrain.manual_seed uses (so both give its streams)."""
    seeded = []

    class Generator:
        def __init__(self, device):
            self.device = device

        def manual_seed(self, seed):
            seeded.append((str(self.device), seed))

    monkeypatch.setattr(sys.modules["dtrain.tensor.random"], "default_generator", Generator)
    cuda.set_device(1)
    cuda.manual_seed(10)
    assert seeded == [("cuda:1", 12)]
    cuda.manual_seed_all(10)
    assert seeded[1:] == [("cuda:0", 11), ("cuda:1", 12)]
