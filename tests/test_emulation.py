"""The CuPy emulation (tests/emulation) behaves as CuPy 14 does where dtrain's device logic
depends on it: device ownership and the current device, refused mixed-device and NumPy
operands, no implicit host conversion, counted host synchronisations, streams and events,
the memory pool, NCCL over MPI, and the signatures of what dtrain calls."""
import json
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import emulation
from emulation import core, device, names, signatures

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def cp():
    """The emulated ``cupy`` with at least 2 devices, device 0 current before and after."""
    n = device.N_DEVICES[0]
    mods = emulation.modules(max(n, 2))
    device.Device(0).use()
    yield mods["cupy"]
    device.Device(0).use()
    device.N_DEVICES[0] = n


def raises_peer(fn, resides, current):
    with pytest.raises(ValueError) as e:
        fn()
    assert str(e.value) == (f"The device where the array resides ({resides}) is different from the current "
                            f"device ({current}). Peer access is unavailable between these devices.")


def test_mixed_device_kernel_raises_as_cupy(cp):
    """A kernel with an operand on another device than the current one raises CuPy's ValueError
    (operators, ufuncs, routines, methods, setitem); views launch nothing and stay put; copies
    and asarray bring an array to the current device."""
    a = cp.ones(3)
    with cp.cuda.Device(1):
        b = cp.ones(3)
        assert b.device.id == 1 and (b * 2).device.id == 1
        raises_peer(lambda: a + b, 0, 1)
        raises_peer(lambda: cp.exp(a), 0, 1)
        raises_peer(lambda: cp.concatenate([a, b]), 0, 1)
        raises_peer(lambda: a.sum(), 0, 1)
        raises_peer(lambda: b.__setitem__(slice(None), a), 0, 1)
        v = a.reshape(3, 1)[1:]
        assert v.device.id == 0 and cp.moveaxis(v, 0, 1).device.id == 0
        moved = cp.asarray(a)
        assert moved.device.id == 1 and a.copy().device.id == 1 and cp.asarray(b) is b
    raises_peer(lambda: a - b, 1, 0)
    assert float((a + moved.copy()).sum()) == 6.0


def test_numpy_operands_are_refused(cp):
    """A NumPy array as a kernel operand is CuPy's TypeError; as a creation or index argument it is copied over."""
    a = cp.arange(4.0)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        a + np.ones(4)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.ones(4) * a
    assert cp.asarray(np.ones(2)).device.id == 0
    assert a[np.array([1, 3])].tolist() == [1.0, 3.0]


def test_implicit_host_conversion_raises(cp):
    """numpy.asarray of a device array is CuPy's TypeError; NumPy ufuncs and functions dispatch to the emulation."""
    a = cp.arange(3.0)
    with pytest.raises(TypeError, match=r"^Implicit conversion to a NumPy array is not allowed\. Please use "
                                        r"`\.get\(\)` to construct a NumPy array explicitly\.$"):
        np.asarray(a)
    assert isinstance(np.exp(a), cp.ndarray) and isinstance(np.concatenate([a, a]), cp.ndarray)
    assert isinstance(a.get(), np.ndarray) and isinstance(cp.asnumpy(a), np.ndarray)


def test_reductions_and_scalar_indexing_give_0d_arrays(cp):
    """a.sum(), cp.max(a), a[i, j] and comparisons of scalars are 0-d device arrays, as in CuPy."""
    a = cp.arange(6.0).reshape(2, 3)
    for r in (a.sum(), cp.max(a), a[1, 2], a.mean(axis=None), cp.linalg.norm(a)):
        assert isinstance(r, cp.ndarray) and r.shape == () and r.device.id == 0
    a[1, 2][...] = 9  # a view, as CuPy's
    assert a.get()[1, 2] == 9


def test_integer_array_indices_wrap_around(cp):
    """Out-of-range integer-array indices wrap around in reads, writes, add.at and
    take_along_axis, as CuPy's do (NumPy raises); an out-of-range scalar index raises."""
    a = cp.arange(4.0)
    i = cp.asarray([5, -6])
    assert a[i].tolist() == [1.0, 2.0]
    a[i] = 10.0
    cp.add.at(a, i, 1.0)
    assert a.tolist() == [0.0, 11.0, 11.0, 3.0]
    assert cp.take_along_axis(a, cp.asarray([4]), 0).tolist() == [0.0]
    with pytest.raises(IndexError):
        a[4]


def test_host_synchronisations_are_counted(cp):
    """Device work counts nothing; every way to the host counts one, with its kind and caller."""
    a = cp.arange(4.0)
    emulation.syncs.reset()
    b = (a * 2 + 1).sum(axis=0)
    cp.cuda.get_current_stream().record()
    assert emulation.syncs.count == 0
    a.get(), cp.asnumpy(b), b.item(), float(b), bool(b > 0), a.tolist(), a[a > 1], cp.nonzero(a)
    cp.cuda.Device().synchronize()
    kinds = [k for k, _ in emulation.syncs.events]
    assert kinds == ["get", "get", "item", "float", "bool", "tolist", "boolean mask", "nonzero",
                     "Device.synchronize"]
    assert all(where.startswith(__file__) for _, where in emulation.syncs.events)
    emulation.syncs.reset()
    assert emulation.syncs.count == 0


def test_current_device_is_per_thread(cp):
    """Device(i) as a context manager and .use() set this thread's current device only; allocation follows it."""
    seen = []
    cp.cuda.Device(1).use()
    t = threading.Thread(target=lambda: seen.append((cp.cuda.Device().id, cp.zeros(1).device.id)))
    t.start()
    t.join()
    assert seen == [(0, 0)] and cp.zeros(1).device.id == 1
    with cp.cuda.Device(0):
        assert cp.cuda.runtime.getDevice() == 0 and cp.empty(2).device.id == 0
    assert cp.cuda.Device().id == 1


def test_device_queries(cp):
    """getDeviceCount is the emulated count; a device index past it fails as CUDA's invalid ordinal."""
    n = cp.cuda.runtime.getDeviceCount()
    assert n >= 2 and cp.cuda.runtime.getDeviceProperties(1)["major"] == 9
    with pytest.raises(RuntimeError, match="cudaErrorInvalidDevice: invalid device ordinal"):
        cp.cuda.Device(n).use()
    with pytest.raises(RuntimeError, match="cudaErrorInvalidDevice"):
        cp.cuda.runtime.getDeviceProperties(n)


def test_streams_and_events_record_order(cp):
    """Kernels are logged on the current stream; an event marks a position; wait_event is logged."""
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        assert cp.cuda.get_current_stream() is s
        cp.ones(2) + 1  # two kernels: the fill and the add
        e = cp.cuda.Event()
        e.record()
    assert cp.cuda.get_current_stream() is not s and e.stream is s and e.position == 2 and e.done
    other = cp.cuda.Stream()
    other.wait_event(e)
    assert [k for k, _ in s.log] == ["launch", "launch", "record"] and list(other.log) == [("wait", e)]
    with cp.cuda.Device(1):
        with pytest.raises(RuntimeError, match=r"stream is created on \(0\) does not match with the current device"):
            with s:
                pass


def test_unordered_stream_access_raises(cp):
    """Reading, on one stream or on the host, memory another stream wrote raises unless an event
    wait or a synchronize orders the two, as a GPU would otherwise see unfinished data."""
    side = cp.cuda.Stream(non_blocking=True)
    with side:
        a = cp.arange(3.0) * 2
    with pytest.raises(device.StreamOrderError, match="get on <Stream 0 .*reads memory that <Stream"):
        a.get()
    with pytest.raises(device.StreamOrderError, match="add on"):
        a + 1
    cp.cuda.get_current_stream().wait_event(side.record())
    assert (a + 1).tolist() == [1.0, 3.0, 5.0]
    with side:
        a[...] = 0
    side.synchronize()
    assert a.tolist() == [0.0, 0.0, 0.0]


def test_memory_pool_counts_bytes_per_device(cp):
    """used_bytes grows by an allocation on the current device only; freed bytes stay cached until free_all_blocks."""
    pool = cp.get_default_memory_pool()
    with cp.cuda.Device(1):
        before, other = pool.used_bytes(), device.POOL.used[0]
        a = cp.zeros(1000, dtype=cp.float32)
        assert pool.used_bytes() == before + 4000 and device.POOL.used[0] == other
        del a
        assert pool.used_bytes() == before and pool.total_bytes() >= before + 4000
        pool.free_all_blocks()
        assert pool.total_bytes() == before


def test_data_pointers_map_back_to_the_array(cp):
    """array.data.ptr of a view addresses the array's memory on its device."""
    a = cp.arange(10, dtype=cp.float32)
    view, dev = core.lookup(a[3:].data.ptr, 4, np.float32)
    assert dev == 0 and view.tolist() == [3, 4, 5, 6]
    view[0] = -1
    assert a[3].item() == -1


def test_nccl_over_mpi_two_ranks():
    """At 2 ranks: every collective and a grouped send/recv match NumPy; a tuple id and a buffer
    on another device are refused as CuPy 14 / NCCL refuse them; a recv that would deadlock a
    GPU (both ranks receiving first) is reported, not hung on."""
    pytest.importorskip("mpi4py")
    from dtrain.launch import find_mpiexec
    mpiexec = find_mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec")
    env = {k: v for k, v in os.environ.items() if k != emulation.ENV}
    result = subprocess.run([mpiexec, "-n", "2", sys.executable, os.path.join(HERE, "emulation", "rank_nccl.py")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "rank 0: ok" in result.stdout and "rank 1: ok" in result.stdout


def _compare(name, real, emulated_obj):
    """A list of differences between CuPy's parameters ``real`` and the emulation's object."""
    if isinstance(emulated_obj, core.ufunc):
        positional = [p for p, d in real if d is None]
        return [] if len(positional) in (0, emulated_obj.nin) else \
            [f"{name}: CuPy takes {positional}, the emulation {emulated_obj.nin} input(s)"]
    if getattr(emulated_obj, "__wrapped__", None) is not None:  # NumPy's, taking the keywords recorded for CuPy
        recorded = list(names.SIGNATURES.get(name, ()))
        return [] if recorded == [p for p, _ in real] else \
            [f"{name}: CuPy {[p for p, _ in real]}, recorded in tests/emulation/names.py {recorded}"]
    ours = signatures.signature(emulated_obj)
    if isinstance(ours, str):
        return [f"{name}: {ours}"]
    return [] if ours == real else [f"{name}: CuPy {real}, emulation {ours}"]


def test_signatures_match_real_cupy():
    """Every CuPy function dtrain calls has, in the emulation, real CuPy 14's parameters (names,
    order, defaults); NumPy-backed ones take CuPy's parameters at the same places. Runs where
    the real cupy package imports (no GPU needed); entries CuPy's build cannot introspect are
    listed in a warning."""
    env = {k: v for k, v in os.environ.items() if k != emulation.ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p != emulation.BOOT)
    found = subprocess.run([sys.executable, "-W", "ignore", os.path.join(HERE, "emulation", "signatures.py")],
                           env=env, capture_output=True, text=True, timeout=120)
    if found.returncode != 0:
        pytest.skip(f"the real cupy does not import here: {found.stderr.strip().splitlines()[-1:]}")
    real = json.loads(found.stdout)
    assert real["version"].split(".")[0] == "14", real["version"]
    mods = emulation.modules()
    problems, skipped = [], []
    for name, params in sorted(real["signatures"].items()):
        if isinstance(params, str):
            (skipped if not params.startswith("missing") else problems).append(f"{name}: {params}")
            continue
        try:
            obj = signatures.resolve(mods, name)
        except AttributeError:
            method = name.rsplit(".", 1)[-1]
            if name.startswith("cupy.ndarray.") and hasattr(np.ndarray, method):
                obj = core.ndarray.__getattr__(mods["cupy"].zeros(0), method)  # NumPy's method, through the emulation
                obj.__wrapped__ = getattr(np.ndarray, method)
                with pytest.raises(TypeError, match="unexpected keyword"):
                    obj(not_cupys=1)
            else:
                problems.append(f"{name}: missing in the emulation")
                continue
        problems += _compare(name, params, obj)
    assert not problems, "\n".join(problems)
    if skipped:
        warnings.warn(f"not introspectable in CuPy {real['version']}, not compared: {skipped}")
