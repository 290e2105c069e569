"""dtrain.save / dtrain.load: round trips, file handling, atomic writes, corruption errors."""
import collections
import errno
import io
import json
import os
import pathlib
import pickle
import re

import numpy as np
import pytest

import dtrain
from dtrain.serialization import MAX_DEPTH, CheckpointError, load, save, save_state

DTYPES = [dtrain.bool, dtrain.uint8, dtrain.int8, dtrain.int16, dtrain.int32, dtrain.int64,
          dtrain.float16, dtrain.float32, dtrain.float64]
SHAPES = [(), (0,), (0, 3), (5,), (2, 3, 4)]


def roundtrip(obj, **load_kwargs):
    buf = io.BytesIO()
    save(obj, buf)
    buf.seek(0)
    return load(buf, **load_kwargs)


def assert_same_tensor(got, expected):
    assert isinstance(got, dtrain.Tensor)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got.array, expected.array)


def saved_bytes(obj):
    buf = io.BytesIO()
    save(obj, buf)
    return buf.getvalue()


def write(tmp_path, data, name="bad.pt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- round trips -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tensor_roundtrip_every_dtype_and_shape(dtype, shape):
    """A tensor of every dtype and shape (0-d and empty included) loads with equal values,
    dtype and shape."""
    values = np.random.default_rng(0).standard_normal(shape) * 50
    t = dtrain.tensor(values.astype(dtype))
    assert_same_tensor(roundtrip(t), t)


def test_nested_containers_roundtrip():
    """dict (str and int keys), OrderedDict, list, tuple, None, bool, int, float and str keep
    their values and exact types, nested in each other."""
    obj = {
        "none": None, "bools": [True, False], "ints": [0, -3, 2 ** 80], "floats": (1.0, -0.0, 1e-300),
        "str": "héllo ✓", 7: {"nested": [(), [], {}], 0: "int key"},
        "od": collections.OrderedDict([("z", 1), ("a", [2, (3, None)])]),
    }
    got = roundtrip(obj)
    assert got == obj
    assert [type(v) for v in got["bools"] + got["ints"] + list(got["floats"])] == [bool] * 2 + [int] * 3 + [float] * 3
    assert type(got["floats"]) is tuple and type(got[7]["nested"][1]) is list
    assert type(got["od"]) is collections.OrderedDict and type(got) is dict


def test_key_order_preserved():
    """dict and OrderedDict keys come back in insertion order, not sorted."""
    keys = ["b", "a", "c", 3, 1, 2]
    got = roundtrip({"d": dict.fromkeys(keys, 0), "od": collections.OrderedDict.fromkeys(keys, 0)})
    assert list(got["d"]) == keys and list(got["od"]) == keys


def test_special_floats_roundtrip():
    """inf, -inf and NaN survive as Python floats."""
    got = roundtrip([float("inf"), float("-inf"), float("nan")])
    assert got[:2] == [float("inf"), float("-inf")] and np.isnan(got[2])


def test_numpy_arrays_and_scalars_roundtrip():
    """NumPy arrays (incl. complex, non-contiguous, 0-d) and scalars load as NumPy objects
    of the same dtype and value."""
    obj = {"c": np.array([1 + 2j, 3j], dtype=np.complex64), "u64": np.arange(3, dtype=np.uint64),
           "strided": np.arange(12.0).reshape(3, 4)[:, ::2], "zero_d": np.array(5, dtype=np.int16),
           "f64": np.float64(2.5), "b": np.bool_(True)}
    got = roundtrip(obj)
    for k, v in obj.items():
        assert type(got[k]) is type(v) and got[k].dtype == v.dtype
        np.testing.assert_array_equal(got[k], v)


def test_state_dict_like_mix():
    """A state_dict-shaped object (tensors under str keys, per-param int keys) round trips."""
    w, b = dtrain.randn(4, 3), dtrain.randn(3)
    obj = collections.OrderedDict(weight=w, bias=b)
    opt = {"state": {0: {"momentum_buffer": dtrain.zeros(4, 3), "step": dtrain.tensor(3.0)}},
           "param_groups": [{"lr": 0.1, "params": [0, 1], "nesterov": False}]}
    got_model, got_opt = roundtrip((obj, opt))
    assert list(got_model) == ["weight", "bias"]
    assert_same_tensor(got_model["weight"], w)
    assert_same_tensor(got_opt["state"][0]["step"], opt["state"][0]["step"])
    assert got_opt["param_groups"] == opt["param_groups"]


def test_requires_grad_not_saved_and_loaded_tensor_is_writable():
    """A tensor saved with requires_grad loads detached, and it can be modified in place."""
    t = dtrain.randn(3, requires_grad=True)
    got = roundtrip({"t": t})["t"]
    assert not got.requires_grad and got.grad_fn is None
    got.add_(1.0)
    np.testing.assert_allclose(got.array, t.array + 1.0)


def test_shared_storage_is_saved_as_copies():
    """Two entries holding the same tensor load as independent tensors (documented)."""
    t = dtrain.randn(3)
    got = roundtrip([t, t])
    got[0].zero_()
    np.testing.assert_array_equal(got[1].array, t.array)


# ---- paths and file objects ---------------------------------------------------------------

@pytest.mark.parametrize("as_path", [str, pathlib.Path], ids=["str", "Path"])
def test_path_roundtrip(tmp_path, as_path):
    """Saving to a str or PathLike path and loading from it round trips."""
    t = dtrain.randn(2, 2)
    path = as_path(tmp_path / "m.pt")
    save({"t": t}, path)
    assert_same_tensor(load(path)["t"], t)


def test_real_file_objects(tmp_path):
    """Saving to / loading from open binary files works; numpy.load reads the file safely."""
    t = dtrain.arange(6).view(2, 3)
    with open(tmp_path / "m.pt", "wb") as f:
        save({"t": t}, f)
    with open(tmp_path / "m.pt", "rb") as f:
        assert_same_tensor(load(f)["t"], t)
    with np.load(tmp_path / "m.pt", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["a0"], t.array)


def test_bad_file_arguments(tmp_path):
    """A non-file f, or a file opened in text mode, is a TypeError saying what is expected."""
    with pytest.raises(TypeError, match="path or a binary file object, got int"):
        save({}, 3)
    with pytest.raises(TypeError, match="path or a binary file object, got int"):
        load(3)
    save({}, tmp_path / "m.pt")
    with open(tmp_path / "m.pt", encoding="latin-1") as f, pytest.raises(TypeError, match="binary mode"):
        load(f)


def test_save_into_missing_directory(tmp_path):
    """Saving into a directory that does not exist names that directory."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save({}, tmp_path / "nope" / "m.pt")


# ---- map_location --------------------------------------------------------------------------

def test_map_location_cpu_forms():
    """map_location as "cpu", a Device, or a dict sends tensors to the CPU with their dtype."""
    t = dtrain.randn(2, dtype=dtrain.float64)
    for loc in ("cpu", dtrain.device("cpu"), {"cuda:0": "cpu"}):
        got = roundtrip(t, map_location=loc)
        assert_same_tensor(got, t)
        assert got.device == "cpu"


def test_map_location_callable():
    """A callable gets the CPU tensor and the saved device string; None keeps the tensor."""
    seen = []

    def fn(tensor, location):
        seen.append(location)
        return tensor * 2 if len(seen) == 1 else None

    t = dtrain.randn(3)
    a, b = roundtrip([t, t], map_location=fn)
    assert seen == ["cpu", "cpu"]
    np.testing.assert_allclose(a.array, t.array * 2)
    np.testing.assert_array_equal(b.array, t.array)
    with pytest.raises(TypeError, match="map_location returned int"):
        roundtrip(t, map_location=lambda tensor, location: 3)


def test_map_location_errors():
    """A bad device string is rejected; CUDA without a GPU is a clear error."""
    with pytest.raises(ValueError, match="unknown device type 'gpu'"):
        roundtrip(dtrain.zeros(1), map_location="gpu")
    if not dtrain.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda:0 requested"):
            roundtrip(dtrain.zeros(1), map_location="cuda:0")


@pytest.mark.gpu
def test_map_location_cuda():
    """map_location="cuda:0" puts loaded tensors on the GPU with values and dtype kept."""
    t = dtrain.randn(3, dtype=dtrain.float64)
    got = roundtrip({"t": t}, map_location="cuda:0")["t"]
    assert got.device == "cuda:0" and got.dtype == t.dtype
    np.testing.assert_array_equal(got.cpu().array, t.array)


# ---- unsupported objects and atomic writes --------------------------------------------------

class Foo:
    pass


def test_unpicklable_object_names_it_and_keeps_old_file(tmp_path):
    """An object that is neither plain state nor picklable (it holds a lambda) is a TypeError
    naming its type, the key path that made it not plain state, and the pickling failure;
    the existing file is unchanged and no temporary file is left behind."""
    path = tmp_path / "m.pt"
    save({"good": dtrain.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"cannot save dict: .*object of type function at \['model'\]\['layer'\]\[1\]"
                                        r".*pickling it failed"):
        save({"model": {"w": dtrain.ones(3), "layer": [1, lambda: 0]}}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]


NOT_PLAIN_STATE = [
    ({("a", 1): 0}, r"cannot save dict key \('a', 1\) of type tuple at the top level"),
    ({"x": np.array([object()])}, r"cannot save array of dtype object at \['x'\]"),
    ({1, 2}, "cannot save object of type set at the top level"),
    ({"model": {"w": dtrain.ones(3), "layer": [1, Foo()]}},
     r"cannot save object of type Foo at \['model'\]\['layer'\]\[1\]"),
]


@pytest.mark.parametrize("obj, match", NOT_PLAIN_STATE)
def test_save_state_refuses_what_is_not_plain_state(tmp_path, obj, match):
    """save_state (the safe format only) refuses keys other than str/int, object arrays and
    other types by name and key path, leaving an existing file as it was."""
    path = tmp_path / "m.pt"
    save_state({"good": dtrain.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=match):
        save_state(obj, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pt"]


@pytest.mark.parametrize("obj, match", NOT_PLAIN_STATE)
def test_non_state_objects_are_pickled_and_refused_by_default(obj, match):
    """Keys other than str/int, object arrays and other types make the object pickled
    whole: the default load refuses it, naming what was not plain state and
    weights_only=False; weights_only=False loads it back."""
    data = saved_bytes(obj)
    with pytest.raises(pickle.UnpicklingError, match=match + r".*weights_only=False"):
        load(io.BytesIO(data))
    got = load(io.BytesIO(data), weights_only=False)
    assert type(got) is type(obj) and len(got) == len(obj)


def test_failure_while_writing_keeps_old_file(tmp_path, monkeypatch):
    """A save that fails after writing part of the temporary file leaves the old file
    intact and removes the temporary file."""
    path = tmp_path / "m.pt"
    save({"v": 1}, path)
    before = path.read_bytes()

    def broken_savez(fobj, **arrays):
        fobj.write(b"PK\x03\x04 half written")
        raise OSError("disk full")

    monkeypatch.setattr("dtrain.serialization.numpy.savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save({"v": 2}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]


def test_save_replaces_existing_file(tmp_path):
    """Saving over an existing file replaces it and leaves only that file."""
    path = tmp_path / "m.pt"
    save({"v": 1}, path)
    save({"v": 2}, path)
    assert load(path) == {"v": 2} and os.listdir(tmp_path) == ["m.pt"]


class FullDisk:
    """A file that accepts ``room`` bytes, then fails as a full disk does: OSError(ENOSPC)
    without a file name."""

    def __init__(self, fobj, room):
        self.fobj, self.room = fobj, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fobj.write(data)

    def __getattr__(self, name):
        return getattr(self.fobj, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fobj.close()


def test_disk_full_names_the_file(tmp_path, monkeypatch):
    """A write that fails with ENOSPC (which names no file) is an OSError with that errno
    naming the file being saved; the old file is intact and nothing else is left."""
    path = tmp_path / "m.pt"
    save({"v": 1}, path)
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode), room=100))
    with pytest.raises(OSError, match=re.escape(f"[Errno {errno.ENOSPC}] No space left on device: '{path}'")) as info:
        save({"v": dtrain.zeros(1000)}, path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pt"]


def deep(levels, make=lambda inner: {"k": inner}):
    obj = 1
    for _ in range(levels):
        obj = make(obj)
    return obj


def self_containing():
    loop = [1]
    loop.append({"again": loop})
    return loop


def write_fails(monkeypatch, error):
    """Make the next save's first write raise ``error``."""
    class Failing(FullDisk):
        def write(self, data):
            raise error

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Failing(real_fdopen(fd, mode), room=0))


def fsync_fails(monkeypatch):
    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "fsync", fsync)


SAVE_ERRORS = [
    ("fsync fails", fsync_fails, save, {"w": dtrain.ones(3)}, OSError, "Input/output error: '.*m.pt'"),
    ("interrupted", lambda mp: write_fails(mp, KeyboardInterrupt()), save, {"w": dtrain.ones(3)},
     KeyboardInterrupt, None),
    ("too deep", None, save, deep(MAX_DEPTH + 1), ValueError, f"nested deeper than {MAX_DEPTH} levels"),
    ("too deep, lists", None, save_state, deep(MAX_DEPTH + 1, lambda inner: [inner]), ValueError,
     rf"nested deeper than {MAX_DEPTH} levels \(at \[0\]\[0\]\[0\]\[0\]\.\.\. {MAX_DEPTH} levels down"),
    ("contains itself", None, save, self_containing(), ValueError, "does a container contain itself"),
    ("string array", None, save_state, {"s": np.array(["a"])}, TypeError, "cannot save array of dtype <U1"),
    ("datetime array", None, save_state, {"d": np.array(["2024-01-01"], "M8[D]")}, TypeError,
     r"cannot save array of dtype datetime64\[D\]"),
    ("unpicklable", None, save, {"f": lambda: 0}, TypeError, "pickling it failed"),
]


@pytest.mark.parametrize("setup, saver, obj, error, match", [case[1:] for case in SAVE_ERRORS],
                         ids=[case[0] for case in SAVE_ERRORS])
def test_a_failed_save_leaves_the_directory_as_it_was(tmp_path, monkeypatch, setup, saver, obj, error, match):
    """Whatever makes a save fail (fsync, an interrupt, an object save refuses; a full disk:
    test_disk_full_names_the_file), the error says why and the directory listing and the
    existing file are as before."""
    path = tmp_path / "m.pt"
    save({"v": 1}, path)
    before = (sorted(os.listdir(tmp_path)), path.read_bytes())
    if setup is not None:
        setup(monkeypatch)
    with pytest.raises(error, match=match):
        saver(obj, path)
    monkeypatch.undo()
    assert (sorted(os.listdir(tmp_path)), path.read_bytes()) == before


@pytest.mark.parametrize("make, containers", [(lambda inner: {"k": inner}, 1), (lambda inner: [inner], 1),
                                              (lambda inner: collections.OrderedDict(k=(inner,)), 2)],
                         ids=["dict", "list", "OrderedDict of tuple"])
def test_nesting_save_writes_is_nesting_load_reads(make, containers):
    """MAX_DEPTH nested containers save and load back equal (dicts nest deepest in the JSON
    metadata); one level more is refused by save, before writing (and a crafted one by
    load: see test_checkpoint_untrusted.py)."""
    obj = deep(MAX_DEPTH // containers, make)
    assert roundtrip(obj) == obj
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH} levels"):
        saved_bytes(deep(MAX_DEPTH // containers + 1, make))


# ---- corrupted and foreign files -------------------------------------------------------------

@pytest.mark.parametrize("keep", [0, 3, 40, 0.5, -1])
def test_truncated_file(tmp_path, keep):
    """A file cut anywhere (empty, inside the signature, mid-way, last byte) is 'truncated'."""
    data = saved_bytes({"w": dtrain.randn(8, 8)})
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path = write(tmp_path, data[:cut])
    with pytest.raises(CheckpointError, match=f"{path}: file is truncated"):
        load(path)


def test_bit_flip_in_array_data(tmp_path):
    """One flipped bit in a tensor's bytes is reported as a checksum mismatch."""
    w = dtrain.arange(64, dtype=dtrain.float64)
    data = bytearray(saved_bytes({"w": w}))
    data[data.index(w.array.tobytes()) + 100] ^= 0x08
    path = write(tmp_path, bytes(data))
    with pytest.raises(CheckpointError, match=f"{path}: checksum mismatch: file is corrupted"):
        load(path)


def rewrite(data, change):
    """Re-pack a saved file with valid zip CRCs after ``change(meta, arrays)``."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    meta = json.loads(members.pop("__dtrain__").tobytes())
    change(meta, members)
    out = io.BytesIO()
    np.savez(out, __dtrain__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **members)
    return out.getvalue()


def test_checksum_catches_changed_array_with_valid_zip(tmp_path):
    """An array changed with the zip container rebuilt consistently (so zip CRCs pass)
    still fails the SHA-256 check."""
    data = rewrite(saved_bytes({"w": dtrain.zeros(4)}), lambda meta, arrays: arrays["a0"].__setitem__(0, 1.0))
    path = write(tmp_path, data)
    with pytest.raises(CheckpointError, match="checksum mismatch: file is corrupted"):
        load(path)


def test_checksum_catches_changed_structure(tmp_path):
    """A changed container value in the metadata fails the checksum."""
    data = rewrite(saved_bytes({"step": 1}), lambda meta, arrays: meta["structure"]["dict"][0].__setitem__(1, 2))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load(write(tmp_path, data))


def test_unknown_format_version(tmp_path):
    """A file from a newer format version is refused with both version numbers."""
    data = rewrite(saved_bytes({"step": 1}), lambda meta, arrays: meta.update(version=99))
    path = write(tmp_path, data)
    with pytest.raises(CheckpointError, match=f"{path}: unknown format version 99: this dtrain reads version 1"):
        load(path)


@pytest.mark.parametrize("data", [
    pickle.dumps({"w": [1.0, 2.0]}),
    b"just some text\n" * 10,
], ids=["pickle", "text"])
def test_not_a_dtrain_file(tmp_path, data):
    """A pickle or text file is 'not a dtrain checkpoint'."""
    path = write(tmp_path, data)
    with pytest.raises(CheckpointError, match=f"{path}: not a dtrain checkpoint"):
        load(path)


def test_plain_npz_is_not_a_dtrain_file(tmp_path):
    """An .npz written by numpy.savez (no dtrain metadata) is 'not a dtrain checkpoint'."""
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.ones(3))
    with pytest.raises(CheckpointError, match="not a dtrain checkpoint"):
        load(path)


class Exploit:
    ran = []

    def __reduce__(self):
        return (Exploit.ran.append, ("pwned",))


def test_pickled_member_is_never_unpickled(tmp_path):
    """A file whose array member is a pickled object array fails to load without running
    the pickle."""
    def smuggle(meta, arrays):
        arrays["a0"] = np.array([Exploit()], dtype=object)  # numpy.savez pickles it

    data = rewrite(saved_bytes({"w": dtrain.zeros(1)}), smuggle)
    with pytest.raises(CheckpointError, match="file is corrupted: array a0 unreadable"):
        load(write(tmp_path, data))
    assert Exploit.ran == []


def test_every_single_bit_flip_is_detected_or_harmless():
    """Flipping any one byte of a small file either raises CheckpointError or (for zip
    header fields such as timestamps) loads exactly the saved content; nothing else."""
    obj = {"w": dtrain.randn(3, 2), "n": [1, 2.5]}
    data = saved_bytes(obj)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x41
        try:
            got = load(io.BytesIO(bytes(bad)))
        except CheckpointError:
            continue
        assert got["n"] == obj["n"], f"byte {i}"
        np.testing.assert_array_equal(got["w"].array, obj["w"].array, err_msg=f"byte {i}")


# ---- whole objects (pickled, behind weights_only=False) --------------------------------------

class TiedNet(dtrain.nn.Module):
    """A model with a buffer-holding layer and a weight tied between two layers."""

    def __init__(self):
        super().__init__()
        self.embed = dtrain.nn.Linear(4, 4, bias=False)
        self.bn = dtrain.nn.BatchNorm1d(4)
        self.head = dtrain.nn.Linear(4, 4, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x):
        return self.head(self.bn(self.embed(x)))


def trained_net():
    dtrain.manual_seed(0)
    net = TiedNet()
    net(dtrain.randn(8, 4)).sum().backward()  # moves the BatchNorm running stats, fills grads
    return net.eval()


def assert_same_model(got, net):
    assert type(got) is TiedNet and not got.training
    assert list(got.state_dict()) == list(net.state_dict())
    for (name, a), b in zip(got.state_dict().items(), net.state_dict().values()):
        np.testing.assert_array_equal(a.array, b.array, err_msg=name)
    assert got.head.weight is got.embed.weight, "the tie is kept"
    assert all(type(p) is dtrain.nn.Parameter and p.requires_grad and p.grad is None for p in got.parameters())


def test_whole_module_roundtrip(tmp_path):
    """A whole Module saved with dtrain.save(model, path) loads with weights_only=False as
    the same class, in eval mode, with equal parameters and buffers, the tied weight one
    Parameter, no gradients, the same outputs, and it trains."""
    net = trained_net()
    dtrain.save(net, tmp_path / "model.pt")
    got = dtrain.load(tmp_path / "model.pt", weights_only=False)
    assert_same_model(got, net)
    x = dtrain.randn(5, 4)
    np.testing.assert_array_equal(got(x).array, net(x).array)
    got.train()(x).sum().backward()
    assert got.embed.weight.grad is not None and got.embed.weight.grad.shape == (4, 4)


def test_whole_module_refused_by_default_without_unpickling(tmp_path):
    """The default load (weights_only None or True) of a pickled file raises
    pickle.UnpicklingError (a CheckpointError too) naming the file, the saved type,
    weights_only=False and the risk; nothing in the file is unpickled."""
    dtrain.save(trained_net(), tmp_path / "model.pt")
    for kwargs in ({}, {"weights_only": None}, {"weights_only": True}):
        with pytest.raises(pickle.UnpicklingError, match=rf"{tmp_path / 'model.pt'}: weights-only load refused: "
                                                        r".*TiedNet.*arbitrary code execution.*weights_only=False"):
            dtrain.load(tmp_path / "model.pt", **kwargs)
    dtrain.save({"x": Exploit()}, tmp_path / "exploit.pt")
    with pytest.raises(CheckpointError, match="weights_only=False"):
        dtrain.load(tmp_path / "exploit.pt")
    assert Exploit.ran == []


def test_state_dict_keeps_the_safe_format():
    """A state_dict is still written as the .npz format (not pickled), and weights_only=False
    reads that format too."""
    net = trained_net()
    data = saved_bytes(net.state_dict())
    assert data[:4] == b"PK\x03\x04"
    got = load(io.BytesIO(data), weights_only=False)
    assert list(got) == list(net.state_dict())


def test_whole_object_map_location():
    """map_location applies to the tensors of a pickled object: a callable gets each CPU
    tensor with its saved device string, and what it returns is used (a Parameter stays a
    Parameter, with its requires_grad); "cpu" and a dict keep them on the CPU."""
    net = trained_net()
    seen = []

    def double(t, saved):
        seen.append(saved)
        return t * 2

    got = roundtrip(net, map_location=double, weights_only=False)
    assert set(seen) == {"cpu"} and len(seen) == len(net.state_dict()) - 1  # the tied weight once
    np.testing.assert_array_equal(got.embed.weight.array, 2 * net.embed.weight.array)
    assert type(got.embed.weight) is dtrain.nn.Parameter and got.embed.weight.requires_grad
    for loc in ("cpu", {"cuda:0": "cpu"}):
        assert_same_model(roundtrip(net, map_location=loc, weights_only=False), net)


@pytest.mark.gpu
def test_whole_object_map_location_cuda():
    """map_location="cuda:0" puts a whole model's parameters and buffers on the GPU."""
    net = trained_net()
    got = roundtrip(net, map_location="cuda:0", weights_only=False)
    assert {str(t.device) for t in got.state_dict().values()} == {"cuda:0"}
    np.testing.assert_array_equal(got.embed.weight.cpu().array, net.embed.weight.array)


def test_whole_object_corruption_detected():
    """A changed byte in a pickled file's payload is a checksum mismatch, found before
    anything is unpickled; a damaged header is 'corrupted'."""
    data = bytearray(saved_bytes(trained_net()))
    bad = bytearray(data)
    bad[-10] ^= 0x41
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load(io.BytesIO(bytes(bad)), weights_only=False)
    bad = bytearray(data)
    bad[len(b"DTRAIN-PICKLE\n") + 2] ^= 0x41
    with pytest.raises(CheckpointError, match="file is corrupted: unreadable header"):
        load(io.BytesIO(bytes(bad)), weights_only=False)
