"""The NCCL backend's pieces that need no peers: the unique id's two forms (CuPy >= 14
bytes, <= 13 tuples), detecting a missing NCCL the way CuPy 14 reports it, the fallback to
MPI, AVG through ncclAvg or SUM + division, and the watchdog's handling of a device
operation. In-process; the tests marked gpu build an NCCL group on the current (real or
emulated) GPU with a stand-in for ``cupy.cuda.nccl``."""
import logging
import sys
import types

import numpy as np
import pytest

import dtrain.comm as dist
from comm_helpers import clean_env
from dtrain.comm import lifecycle, nccl
from dtrain.comm.process_group import ProcessGroup, ReduceOp
from dtrain.comm.watchdog import Op, Watchdog


@pytest.fixture
def lone(monkeypatch):
    """No process group, a clean environment, and the once-per-process notes forgotten."""
    if dist.is_initialized():
        dist.destroy_process_group()
    monkeypatch.setattr("os.environ", clean_env())
    monkeypatch.setattr(lifecycle, "_state_notes", {})
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


# ---- item 1: the unique id ----------------------------------------------------------------
def test_comm_id_keeps_bytes_and_tuples():
    """CuPy 14's bytes id stays bytes (``tuple(uid)`` made it a tuple of ints, which CuPy 14
    refuses); CuPy 13's tuple stays a tuple, a list becomes one; anything else is refused."""
    uid14 = bytes(range(128))
    assert nccl.comm_id(uid14) == uid14 and type(nccl.comm_id(uid14)) is bytes
    uid13 = tuple(range(-64, 64))
    assert nccl.comm_id(uid13) == uid13 and nccl.comm_id(list(uid13)) == uid13
    with pytest.raises(TypeError, match="expected bytes .CuPy >= 14. or a tuple of ints .CuPy <= 13., got str"):
        nccl.comm_id("abc")


class FakeNccl(types.SimpleNamespace):
    """``cupy.cuda.nccl`` as CuPy 14 (``bytes`` ids) or CuPy 13 (tuple ids) has it, recording
    the id given to the communicator and refusing the other form as the real ones do."""

    def __init__(self, form, version=22703, avg=True):
        super().__init__(available=True, NCCL_SUM=0, NCCL_PROD=1, NCCL_MAX=2, NCCL_MIN=3, joined=[],
                         get_version=lambda: version, **{f"NCCL_{t.upper()}": i for i, t in enumerate(
                             ("int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32",
                              "float64", "bfloat16"))})
        if avg:
            self.NCCL_AVG = 4
        made = bytes(range(128)) if form is bytes else tuple(range(-64, 64))
        self.get_unique_id = lambda: made
        joined = self.joined

        class NcclCommunicator:
            def __init__(self, ndev, commId, rank):
                if type(commId) is not form:
                    raise TypeError(f"Argument 'commId' has incorrect type (expected {form.__name__}, got "
                                    f"{type(commId).__name__})")
                joined.append(commId)

            def destroy(self):
                pass
        self.NcclCommunicator = NcclCommunicator


@pytest.fixture
def keep_device():
    """The current CUDA device as it was (an NCCL group makes its own current)."""
    from dtrain.tensor.backend import cupy
    before = cupy.cuda.Device().id
    yield
    cupy.cuda.Device(before).use()


class FakeHost:
    """The MPI group under an NCCL group of one rank."""
    ranks, gid, watchdog = [0], 0, None

    def rank(self):
        return 0

    def broadcast_object_list(self, objects, src=0):
        pass

    def destroy(self):
        pass


@pytest.mark.gpu
@pytest.mark.parametrize("form", [bytes, tuple], ids=["cupy14-bytes", "cupy13-tuple"])
def test_nccl_group_joins_with_the_id_in_its_own_form(monkeypatch, keep_device, form):
    """The communicator gets the unique id in the form get_unique_id made it: bytes on
    CuPy >= 14, a tuple on CuPy <= 13 (before the fix, CuPy 14's init always failed)."""
    fake = FakeNccl(form)
    monkeypatch.setattr(nccl, "_module", lambda: fake)
    group = nccl.NCCLProcessGroup(FakeHost(), local_rank=0)
    assert fake.joined == [fake.get_unique_id()] and type(fake.joined[0]) is form
    group.destroy()


@pytest.mark.gpu
def test_nccl_group_binds_local_rank_modulo_device_count(monkeypatch, keep_device):
    """Local rank r uses GPU r % device_count: with one GPU visible per rank (SLURM's GPU
    binding) every local rank uses device 0 instead of failing."""
    import dtrain
    fake = FakeNccl(bytes)
    monkeypatch.setattr(nccl, "_module", lambda: fake)
    n = dtrain.cuda.device_count()
    group = nccl.NCCLProcessGroup(FakeHost(), local_rank=n + 1)
    assert group.device == 1 % n
    group.destroy()


# ---- item 2: NCCL missing ---------------------------------------------------------------
def without_nccl(monkeypatch):
    """CuPy 14 without the NCCL library: ``cupy.cuda.nccl`` imports, with available = False,
    and ``cupy.cuda.nccl_enabled`` does not exist."""
    from dtrain.tensor.backend import cupy
    module = types.ModuleType("cupy.cuda.nccl")
    module.available = False
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", module)
    monkeypatch.setattr(cupy.cuda, "nccl", module, raising=False)
    monkeypatch.delattr(cupy.cuda, "nccl_enabled", raising=False)


@pytest.mark.gpu
def test_nccl_available_false_means_missing(monkeypatch):
    """``nccl.available = False`` (CuPy 14's report of a missing NCCL) is detected: the
    backend names the pip command, and is_nccl_available() is False."""
    without_nccl(monkeypatch)
    assert nccl._module() is None
    assert "CuPy cannot load NCCL; install it with `pip install nvidia-nccl-cu12`" in nccl.missing()
    assert not dist.is_nccl_available()


@pytest.mark.gpu
def test_default_backend_falls_back_to_mpi_with_one_note(lone, monkeypatch, caplog):
    """With GPUs but no NCCL, the default backend is "mpi", with one warning that says why
    (once per process, however many groups are made)."""
    without_nccl(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="dtrain.comm.lifecycle"):
        assert lifecycle._resolve_backend(None) == "mpi"
        assert lifecycle._resolve_backend(None) == "mpi"
    notes = [r.getMessage() for r in caplog.records if "using backend 'mpi'" in r.getMessage()]
    assert len(notes) == 1 and "CuPy cannot load NCCL" in notes[0], notes


@pytest.mark.gpu
def test_explicit_nccl_without_nccl_is_a_clear_error(lone, monkeypatch):
    """backend="nccl" with GPUs but no NCCL library fails at once, saying what to install
    (not an AttributeError from deep inside the backend)."""
    without_nccl(monkeypatch)
    with pytest.raises(dist.DistBackendError, match=r"backend 'nccl' is not usable: CuPy cannot load NCCL; "
                                                    r"install it with `pip install nvidia-nccl-cu12`"):
        dist.init_process_group("nccl")


def test_no_gpu_default_is_mpi_without_a_note(lone, monkeypatch, caplog):
    """Without a GPU the default backend is "mpi" and nothing is logged (nothing to explain)."""
    monkeypatch.setattr(nccl, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(sys.modules["dtrain.tensor.backend"], "cuda_device_count", lambda: 0)
    with caplog.at_level(logging.WARNING, logger="dtrain.comm.lifecycle"):
        assert lifecycle._resolve_backend(None) == "mpi"
    assert not [r for r in caplog.records if "using backend 'mpi'" in r.getMessage()]


# ---- item 9: AVG ---------------------------------------------------------------------------
def test_ncclavg_needs_nccl_2_10():
    """ncclAvg is used from NCCL 2.10 (version 21000) on, and only if CuPy names it."""
    assert nccl.has_avg(FakeNccl(bytes, version=22703))
    assert nccl.has_avg(FakeNccl(bytes, version=21000))
    assert not nccl.has_avg(FakeNccl(bytes, version=20907))
    assert not nccl.has_avg(FakeNccl(bytes, avg=False))


class Pair(ProcessGroup):
    """A group of 2 whose backend reduces AVG itself or not."""

    def __init__(self, native):
        super().__init__("test", 0, [0, 1])
        self.native = native

    def _native_avg(self, buf):
        return self.native


def test_avg_plan():
    """AVG is the backend's own where it has one; else SUM with the division in the buffer's
    dtype: before the sum for 16-bit floats in all_reduce (their sum overflows: 2 x 40000 >
    65504), after it otherwise."""
    half, single = np.full(3, 40000, np.float16), np.full(3, 3, np.float32)
    assert Pair(True)._averaging(half, ReduceOp.AVG, ReduceOp.SUM, before_ok=True) == (None, None, ReduceOp.AVG)
    before, after, op = Pair(False)._averaging(half, ReduceOp.AVG, ReduceOp.SUM, before_ok=True)
    assert after is None and op is ReduceOp.SUM
    before()
    total = half + half  # what the SUM then gives on 2 ranks
    assert np.isfinite(total).all() and total[0] == 40000, total
    before, after, op = Pair(False)._averaging(single, ReduceOp.AVG, ReduceOp.SUM, before_ok=True)
    assert before is None and op is ReduceOp.SUM
    after()
    assert single[0] == 1.5
    assert Pair(False)._averaging(single, ReduceOp.MAX, ReduceOp.MAX) == (None, None, ReduceOp.MAX)


# ---- item 7: the watchdog and device operations ------------------------------------------------
class Event:
    def __init__(self, done=False):
        self.done = done


class Communicator:
    def __init__(self, error=None):
        self.error, self.aborted = error, False

    def check_async_error(self):
        if self.error is not None:
            raise self.error

    def abort(self):
        self.aborted = True


class Group:
    """What an Op needs of its group."""
    ranks, timeout, watchdog, seq, last_op = [0, 1], 0.05, None, 0, ""

    def rank(self):
        return 0


def bare_watchdog():
    """A Watchdog without its thread, recording what it would report."""
    dog = Watchdog.__new__(Watchdog)
    dog.ops, dog.fired, dog.reports = set(), False, []
    dog.on_timeout = lambda line, detail: dog.reports.append(line)
    return dog


def device_op(dog, event, comm, seq=3):
    group = Group()
    group.watchdog = dog
    op = Op(group, "all_reduce", [np.zeros(4, np.float32)], seq, False)
    op.watch_device(comm)
    op.event = event
    return op


def test_device_op_is_watched_until_its_event_has_passed():
    """A device operation is watched from before its launch (which may block) and after its
    call returned, until its event has passed."""
    dog = bare_watchdog()
    event = Event()
    op = device_op(dog, None, Communicator())
    assert op in dog.ops and not dog._device_done(op)
    op.event = event
    assert op in dog.ops and not dog._device_done(op)
    event.done = True
    assert dog._device_done(op) and op not in dog.ops and not dog.reports


def test_async_error_aborts_the_communicator_and_names_the_op():
    """An asynchronous NCCL error (a dead peer) aborts the communicator, so a host sync on
    the stream returns, and the report names the op, its number, the ranks and the error."""
    dog = bare_watchdog()
    comm = Communicator(RuntimeError("NCCL_ERROR_REMOTE_ERROR: remote process exited"))
    op = device_op(dog, Event(), comm)
    assert dog._device_done(op) and comm.aborted
    assert dog.reports == ["DistBackendError: all_reduce(float32[4]) (collective #3 on ranks [0, 1]) failed on "
                           "rank 0: the NCCL communicator reports RuntimeError: NCCL_ERROR_REMOTE_ERROR: remote "
                           "process exited (a peer may have died); the communicator was aborted"]


def test_device_op_timeout_aborts_first():
    """Past the group's timeout a device operation's communicator is aborted before the job
    is ended, with the MPI path's report (op, number, ranks, timeout)."""
    dog = bare_watchdog()
    comm = Communicator()
    op = device_op(dog, Event(), comm)
    dog._expire(op, 0.05)
    assert comm.aborted and len(dog.reports) == 1
    assert dog.reports[0].startswith("DistTimeoutError: all_reduce(float32[4]) (collective #3 on ranks [0, 1]) "
                                     "did not finish within 0.05 s on rank 0; "), dog.reports


@pytest.mark.gpu
def test_refused_op_is_not_left_watched(monkeypatch, keep_device):
    """An operation NCCL never got (a dtype it cannot move) raises at once and leaves nothing
    for the watchdog, which would otherwise end the job a timeout later; a launched one is
    numbered and watched."""
    from dtrain.tensor.backend import cupy
    fake = FakeNccl(bytes)
    fake.NcclCommunicator.allReduce = lambda self, *args: None
    monkeypatch.setattr(nccl, "_module", lambda: fake)
    host = FakeHost()
    host.watchdog = bare_watchdog()
    host.watchdog.groups = {}
    group = nccl.NCCLProcessGroup(host, local_rank=0)
    with pytest.raises(TypeError, match="the NCCL backend cannot move dtype int16"):
        group.all_reduce(cupy.ones(3, cupy.int16))
    assert not host.watchdog.ops
    group.all_reduce(cupy.ones(3, cupy.float32))
    (op,) = host.watchdog.ops
    assert op.seq == group.seq and str(group.last_op) == "all_reduce(float32[3])" and op.event is not None
    group.destroy()
