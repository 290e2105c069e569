"""``save`` / ``load``: state_dicts and nested containers in a safe, checksummed file.

The file is a NumPy ``.npz`` archive (a zip of ``.npy`` members): one member per array,
plus the member ``__dtrain__`` holding JSON metadata: a format tag and version, the
container structure, and a SHA-256 over the structure and every array's dtype, shape and
bytes. ``numpy.load(path)`` also reads the arrays.

Loading never unpickles anything, and it checks everything before trusting it: members
must be stored uncompressed (dtrain never compresses, and a small deflated member could
expand to any size), each array's declared dtype and shape must match the bytes it stores
(so nothing is allocated beyond the file's real size), dtypes are only those ``save``
writes, and the structure must be one ``save`` writes, at most ``MAX_DEPTH`` containers
deep. Any file that breaks a rule raises :class:`CheckpointError` naming the file and the
rule. The SHA-256 detects corruption (a flipped bit, a truncated copy), not tampering:
whoever can edit the file can recompute it. What makes a hand-crafted file safe to load
is the checking above, which holds whatever the checksum says.

What is saved:
  - dict (str or int keys), OrderedDict (key order kept), list, tuple, None, bool, int,
    float, str; other dict/list/tuple subclasses are saved as the plain container;
  - dtrain Tensors of any dtype and shape (0-d and empty included): the values and dtype
    only. ``requires_grad`` and ``grad`` are not saved (state_dicts hold detached tensors),
    a Parameter loads as a plain Tensor, and tensors that share storage (tied weights,
    views) are saved as separate copies and load as independent tensors; bfloat16 (which .npy
    cannot name) is stored as its uint16 bits with a tag, so ``numpy.load`` shows those bits;
  - NumPy arrays and NumPy scalars (loaded back as such, always on the CPU).

Anything else (a whole Module, an optimizer object, any picklable object) is saved as
PyTorch saves everything: pickled, in a second format (a header line, a JSON line with a
SHA-256, then the pickle; tensors are pickled as their values, dtype, device and
requires_grad). Unpickling can run arbitrary code, so ``load`` refuses such a file unless
the caller opts in with ``weights_only=False``, as ``torch.load`` does since PyTorch 2.6.
"""
import collections
import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import reprlib  # messages quote values of crafted files: bounded in length and depth
import uuid
import zipfile

import numpy
from numpy.lib import format as npy_format

from .tensor import backend
from .tensor.tensor import Tensor

FORMAT = "dtrain"
VERSION = 1
_META = "__dtrain__"  # the metadata member; written first, so its name follows the file's first header
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"  # end-of-central-directory record: numpy writes no zip comment, so it is the last 22 bytes
_ZIP_LOCAL_HEADER = 30  # bytes before the member name in a zip local header
_DTYPE_KINDS = "biufc"  # bool, int, uint, float, complex: what .npy stores without pickle
_READ_CHUNK = 1 << 22  # bytes per read of an array member's data
MAX_DEPTH = 100  # containers nested in containers; save refuses deeper objects, so load can too
_PICKLE_MAGIC = b"DTRAIN-PICKLE\n"  # the first line of a whole-object (pickled) file
_PICKLE_FORMAT = "dtrain-pickle"


class CheckpointError(RuntimeError):
    """A file cannot be loaded: truncated, corrupted, not a dtrain file, or too new."""


class WeightsOnlyError(CheckpointError, pickle.UnpicklingError):
    """A weights-only load met a pickled whole object (``pickle.UnpicklingError``, as in PyTorch)."""


def save(obj, f, pickle_module=pickle, pickle_protocol=2):
    """Save ``obj`` to ``f``: a state_dict or nested container of tensors in the safe
    format, anything else (a whole Module, any picklable object) pickled.

    A path is written atomically: to a temporary file in the same directory, flushed and
    fsync'ed, then renamed over ``f``; a failed or interrupted save leaves an existing
    file untouched and removes the temporary file. A file object is written in place.

    Args:
        obj: dict / OrderedDict (str or int keys), list, tuple, None, bool, int, float,
            str, dtrain Tensor, NumPy array or scalar, nested in any way: a file that
            ``load`` reads by default. Any other picklable object: a pickled file that
            only ``load(..., weights_only=False)`` reads.
        f: a path (str or os.PathLike) or a binary file object open for writing.
        pickle_module: the module whose ``Pickler`` pickles a whole object (as PyTorch).
        pickle_protocol: the pickle protocol of a whole object (PyTorch's default, 2).

    Raises:
        TypeError: a whole object cannot be pickled (e.g. it holds a lambda).
        ValueError: containers nest deeper than ``MAX_DEPTH`` (or one contains itself).
        OSError: writing failed (e.g. the disk is full); the message names the file.
        When a save to a path raises, the directory is left as it was (an existing file
        unchanged, no temporary file).

    Example:
        >>> dtrain.save({"w": dtrain.randn(3, 2), "step": 10}, "state.pt")
        >>> dtrain.save(model, "model.pt")   # whole: dtrain.load("model.pt", weights_only=False)
    """
    try:
        write = _state_writer(obj)  # fails before any file is touched
    except TypeError as e:
        write = _pickled_writer(obj, str(e), pickle_module, pickle_protocol)
    _write_to(f, write)


def save_state(obj, f):
    """Save ``obj`` in the safe format only, as :func:`save` saves plain state; anything
    that is not plain state is a TypeError naming its key path instead of a pickled file.
    For files that must load with the default ``weights_only=True`` (e.g. checkpoints).

    Example:
        >>> save_state(model.state_dict(), "weights.pt")
    """
    _write_to(f, _state_writer(obj))


def _state_writer(obj):
    arrays = []
    structure = _encode(obj, [], arrays)
    names = [f"a{i}" for i in range(len(arrays))]
    meta = {"format": FORMAT, "version": VERSION, "arrays": names, "structure": structure,
            "sha256": _checksum(structure, zip(names, arrays))}
    members = {_META: numpy.frombuffer(json.dumps(meta).encode(), dtype=numpy.uint8)}
    members.update(zip(names, arrays))  # the metadata member comes first in the zip

    def write(fobj):
        numpy.savez(fobj, **members)
    return write


def _write_to(f, write):
    if isinstance(f, (str, bytes, os.PathLike)):
        _atomic_write(os.fspath(f), write)
    elif hasattr(f, "write"):
        write(f)
    else:
        raise TypeError(f"save: f must be a path or a binary file object, got {type(f).__name__}")


def load(f, map_location=None, pickle_module=pickle, *, weights_only=None):
    """Load an object written by :func:`save`.

    Tensors come back with their saved dtype and shape, on the CPU unless ``map_location``
    says otherwise (unlike PyTorch, the device a tensor was saved from is not restored by
    default). NumPy arrays always load on the CPU.

    Args:
        f: a path (str or os.PathLike) or a binary file object open for reading.
        map_location: where tensors go: None (the CPU); a device ("cpu", "cuda:0", a
            Device); a dict from the saved device string to a device (devices not in it
            go to the CPU); or a callable ``fn(cpu_tensor, saved_device_str)`` that
            returns the Tensor to use (or None to keep the CPU tensor).
        pickle_module: the module whose ``Unpickler`` reads a whole object.
        weights_only: True (the default, also for None): read only the safe format
            (containers, numbers, strings, arrays; tensors come back detached) and refuse
            a pickled whole object. False: also unpickle whole objects; unpickling can
            execute arbitrary code, so pass it only for files from a trusted source.

    Returns:
        The saved object, with the same container types and key order.

    Raises:
        WeightsOnlyError: the file holds a pickled whole object and weights_only is not False.
        CheckpointError: the file is truncated, corrupted (checksum mismatch), breaks a
            rule of the format (a compressed member, an array whose header disagrees with
            its size, a dtype or structure save never writes), is not a dtrain file, or is
            of an unknown format version; the message names the file and the reason.

    Example:
        >>> state = dtrain.load("state.pt", map_location="cpu")
        >>> model = dtrain.load("model.pt", weights_only=False)   # a trusted whole model
    """
    place = _placer(map_location)
    weights_only = True if weights_only is None else weights_only
    name = file_name(f)
    if isinstance(f, (str, bytes, os.PathLike)):
        with open(f, "rb") as fobj:
            return _load_from(fobj, name, place, weights_only, pickle_module)
    if not hasattr(f, "read"):
        raise TypeError(f"load: f must be a path or a binary file object, got {type(f).__name__}")
    data = f.read()
    if not isinstance(data, bytes):
        raise TypeError(f"load: file {name} must be opened in binary mode ('rb'), "
                        f"read() gave {type(data).__name__}")
    return _load_from(io.BytesIO(data), name, place, weights_only, pickle_module)


def _load_from(fobj, name, place, weights_only, pickle_module):
    if fobj.read(len(_PICKLE_MAGIC)) == _PICKLE_MAGIC:
        return _load_pickled(fobj, name, place, weights_only, pickle_module)
    fobj.seek(0)
    structure, arrays = _read(fobj, name)
    return _decode(structure, arrays, place)


def stored_checksum(path):
    """The SHA-256 that :func:`save` recorded in the file at ``path``, read from its metadata
    alone (cheap: no array is read, so nothing is verified; :func:`load` verifies).

    Two processes that loaded files with the same stored checksum loaded the same content.

    Raises:
        CheckpointError: the file is not a readable dtrain file.
    """
    name = file_name(path)
    with open(path, "rb") as fobj:
        try:
            zf = zipfile.ZipFile(fobj)
        except Exception as e:  # see _read: a damaged zip fails in many ways
            raise CheckpointError(f"{name}: not a readable dtrain file ({type(e).__name__}: {e})") from e
        with zf:
            if f"{_META}.npy" not in zf.namelist():
                raise CheckpointError(f"{name}: not a dtrain checkpoint (an .npz archive without dtrain metadata)")
            return _read_meta(_Archive(zf, fobj, name)).get("sha256")


def file_name(f):
    """How messages name ``f``, a path or a file object."""
    if isinstance(f, (str, bytes, os.PathLike)):
        return os.fsdecode(f)
    return getattr(f, "name", None) or repr(f)


# ---- encoding: Python objects <-> JSON structure + a list of arrays ----------------------

def _path_str(path):
    return "".join(f"[{k!r}]" for k in path) if path else "the top level"


def _array_node(kind, array, path, arrays):
    bf16 = array.dtype.name == "bfloat16"  # ml_dtypes' kind "V": .npy has no such type; its uint16 bits, tagged
    if bf16:
        array = array.view(numpy.uint16)
    if array.dtype.kind not in _DTYPE_KINDS:
        raise TypeError(f"cannot save array of dtype {array.dtype} at {_path_str(path)}: "
                        "only bool, integer, floating-point and complex dtypes are supported")
    arrays.append(numpy.asarray(array, order="C"))  # not ascontiguousarray: it makes 0-d arrays 1-d
    return {kind: len(arrays) - 1, "dtype": "bfloat16"} if bf16 else {kind: len(arrays) - 1}


def _array_of(node, kind, arrays):
    """The array of an array entry; a bfloat16-tagged one viewed back from its uint16 bits."""
    array = arrays[node[kind]]
    if "dtype" not in node:
        return array
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError("loading a bfloat16 array needs the ml_dtypes package: pip install dtrain[bf16] "
                          "(or pip install ml_dtypes)") from None
    return array.view(ml_dtypes.bfloat16)


def _encode(obj, path, arrays):
    if isinstance(obj, (dict, list, tuple)) and len(path) >= MAX_DEPTH:
        raise ValueError(f"cannot save containers nested deeper than {MAX_DEPTH} levels (at "
                         f"{_path_str(path[:4])}... {len(path)} levels down; does a container contain itself?)")
    if isinstance(obj, Tensor):
        node = _array_node("tensor", backend.asnumpy(obj.array), path, arrays)
        node["device"] = str(obj.device)
        return node
    if isinstance(obj, numpy.ndarray):
        return _array_node("ndarray", obj, path, arrays)
    if isinstance(obj, numpy.generic):  # before float: numpy.float64 subclasses float
        return _array_node("numpy_scalar", numpy.asarray(obj), path, arrays)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)):
                raise TypeError(f"cannot save dict key {k!r} of type {type(k).__name__} at {_path_str(path)}: "
                                "keys must be str or int")
        kind = "OrderedDict" if isinstance(obj, collections.OrderedDict) else "dict"
        return {kind: [[k, _encode(v, path + [k], arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return {kind: [_encode(v, path + [i], arrays) for i, v in enumerate(obj)]}
    raise TypeError(f"cannot save object of type {type(obj).__name__} at {_path_str(path)}: "
                    "supported are dict, OrderedDict, list, tuple, None, bool, int, float, str, "
                    "Tensor and numpy arrays")


def _decode(node, arrays, place):
    if not isinstance(node, dict):
        return node
    if "tensor" in node:
        return place(Tensor._wrap(_array_of(node, "tensor", arrays)), node["device"])
    if "ndarray" in node:
        return _array_of(node, "ndarray", arrays)
    if "numpy_scalar" in node:
        return _array_of(node, "numpy_scalar", arrays)[()]
    for kind, make in (("dict", dict), ("OrderedDict", collections.OrderedDict)):
        if kind in node:
            return make([(k, _decode(v, arrays, place)) for k, v in node[kind]])
    kind, items = next(iter(node.items()))  # _check_node let only a list or a tuple get here
    return (tuple if kind == "tuple" else list)([_decode(v, arrays, place) for v in items])


_ARRAY_NODES = {"tensor": {"tensor", "device"}, "ndarray": {"ndarray"}, "numpy_scalar": {"numpy_scalar"}}
_CONTAINER_NODES = ("dict", "OrderedDict", "list", "tuple")


def _check_node(node, path, arrays, used):
    """Raise ValueError unless ``node`` is a structure entry that ``_encode`` writes, with its
    arrays at ``arrays`` (each used once: their indices go into the set ``used``)."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return
    kinds = [k for k in node if k in _ARRAY_NODES or k in _CONTAINER_NODES] if isinstance(node, dict) else []
    if len(kinds) != 1:
        raise ValueError(f"at {_path_str(path)}: {type(node).__name__} {reprlib.repr(node)} is no entry dtrain writes")
    kind = kinds[0]
    if set(node) - ({"dtype"} if kind in _ARRAY_NODES else set()) != _ARRAY_NODES.get(kind, {kind}):
        raise ValueError(f"at {_path_str(path)}: the {kind} entry has the keys {reprlib.repr(sorted(node))}, "
                         f"expected {sorted(_ARRAY_NODES.get(kind, {kind}))}")
    if kind in _ARRAY_NODES:
        index = node[kind]
        if type(index) is not int or not 0 <= index < len(arrays) or index in used:
            raise ValueError(f"at {_path_str(path)}: {kind} index {reprlib.repr(index)} is not an unused array "
                             f"index in [0, {len(arrays) - 1}]")
        used.add(index)
        if "dtype" in node and (node["dtype"] != "bfloat16" or arrays[index].dtype != numpy.uint16):
            raise ValueError(f"at {_path_str(path)}: the dtype tag {reprlib.repr(node['dtype'])} over an array of "
                             f"dtype {arrays[index].dtype}: dtrain tags only bfloat16, stored as uint16")
        if kind == "tensor" and not isinstance(node["device"], str):
            raise ValueError(f"at {_path_str(path)}: the device {reprlib.repr(node['device'])} is not a string")
        if kind == "numpy_scalar" and arrays[index].ndim != 0:
            raise ValueError(f"at {_path_str(path)}: a numpy scalar's array has shape {arrays[index].shape}")
        return
    if len(path) >= MAX_DEPTH:
        raise ValueError(f"containers nest deeper than {MAX_DEPTH} levels (save refuses such objects)")
    items = node[kind]
    if not isinstance(items, list):
        raise ValueError(f"at {_path_str(path)}: the {kind} entry holds {type(items).__name__} "
                         f"{reprlib.repr(items)}, not a list")
    if kind in ("list", "tuple"):
        for i, item in enumerate(items):
            _check_node(item, path + [i], arrays, used)
        return
    keys = set()
    for pair in items:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))):
            raise ValueError(f"at {_path_str(path)}: the {kind} item {reprlib.repr(pair)} is not a "
                             "[str or int key, value] pair")
        if pair[0] in keys:
            raise ValueError(f"at {_path_str(path)}: the {kind} has the key {reprlib.repr(pair[0])} twice")
        keys.add(pair[0])
        _check_node(pair[1], path + [pair[0]], arrays, used)


def _placer(map_location):
    """``place(cpu_tensor, saved_device_str) -> Tensor`` for a ``map_location``."""
    if map_location is None:
        return lambda t, saved: t
    if isinstance(map_location, dict):
        table = {str(backend.Device(k)): backend.Device(v) for k, v in map_location.items()}
        return lambda t, saved: _to(t, table.get(saved, backend.CPU))
    if callable(map_location):
        def place(t, saved):
            out = map_location(t, saved)
            if out is None:
                return t
            if not isinstance(out, Tensor):
                raise TypeError(f"load: map_location returned {type(out).__name__} for a tensor saved on {saved}: "
                                "expected a Tensor or None")
            return out
        return place
    device = backend.Device(map_location)
    return lambda t, saved: _to(t, device)


def _to(t, device):
    return t if device == backend.CPU else Tensor._wrap(backend.to_device(t.array, device))


# ---- whole objects: pickled, tensors by value ------------------------------------------------

def _pickled_writer(obj, reason, pickle_module, protocol):
    """``write(fobj)`` of ``obj`` pickled, after the header; pickles now, before any file is touched."""
    buf = io.BytesIO()
    tensors = {}  # id -> key: a tensor met twice (tied weights) is stored once and loads as one

    class TensorPickler(pickle_module.Pickler):
        def persistent_id(self, o):
            if not isinstance(o, Tensor):
                return None
            if id(o) in tensors:
                return ("tensor", tensors[id(o)][0], None)
            tensors[id(o)] = (len(tensors), o)  # holds o, so its id is not reused meanwhile
            return ("tensor", len(tensors) - 1,
                    (type(o), backend.asnumpy(o.array), str(o.device), o.requires_grad))

    try:
        TensorPickler(buf, protocol).dump(obj)
    except Exception as e:  # pickling fails in many ways (PicklingError, TypeError, AttributeError)
        raise TypeError(f"save: cannot save {type(obj).__name__}: it is not plain state ({reason}) and "
                        f"pickling it failed ({type(e).__name__}: {e})") from e
    payload = buf.getvalue()
    header = {"format": _PICKLE_FORMAT, "version": VERSION, "type": f"{type(obj).__module__}.{type(obj).__qualname__}",
              "reason": reason, "sha256": hashlib.sha256(payload).hexdigest()}

    def write(fobj):
        fobj.write(_PICKLE_MAGIC + json.dumps(header).encode() + b"\n")
        fobj.write(payload)
    return write


def _load_pickled(fobj, name, place, weights_only, pickle_module):
    line = fobj.readline()
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise CheckpointError(f"{name}: file is corrupted: unreadable header of a pickled dtrain file") from e
    if not isinstance(header, dict) or header.get("format") != _PICKLE_FORMAT:
        raise CheckpointError(f"{name}: file is corrupted: unreadable header of a pickled dtrain file "
                              f"(no '{_PICKLE_FORMAT}' format tag)")
    if not (isinstance(header.get("type"), str) and isinstance(header.get("reason"), str)):
        raise CheckpointError(f"{name}: file is corrupted: unreadable header of a pickled dtrain file "
                              f"(its 'type' and 'reason' are not strings)")
    if weights_only:
        raise WeightsOnlyError(
            f"{name}: weights-only load refused: the file holds a whole pickled {header.get('type')}, and "
            f"unpickling it can result in arbitrary code execution (dtrain.save pickled it because it is not "
            f"plain state: {header.get('reason')}). "
            f"If you got the file from a trusted source, load it with dtrain.load(f, weights_only=False); to "
            f"get a file that loads safely, save model.state_dict() instead of the model.")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{name}: unknown format version {reprlib.repr(header.get('version'))}: this dtrain "
                              f"reads version {VERSION} (was the file written by a newer dtrain?)")
    payload = fobj.read()
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"{name}: checksum mismatch: file is corrupted")
    tensors = {}

    class TensorUnpickler(pickle_module.Unpickler):
        def persistent_load(self, pid):
            _, key, saved = pid
            if saved is not None:
                cls, array, device, requires_grad = saved
                placed = place(Tensor._wrap(array), device)
                t = cls.__new__(cls)
                t._init(placed.array, requires_grad)
                tensors[key] = t
            return tensors[key]

    return TensorUnpickler(io.BytesIO(payload)).load()


# ---- the file: checksum, atomic write, validating read -----------------------------------

def _checksum(structure, named_arrays):
    h = hashlib.sha256(json.dumps(structure, sort_keys=True).encode())
    for name, a in named_arrays:
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(numpy.ascontiguousarray(a).reshape(-1).view(numpy.uint8))
    return h.hexdigest()


def _atomic_write(path, write):
    directory, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path}: directory {directory} does not exist")
    tmp = os.path.join(directory, f".{base}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 lets the umask set the permissions, as a plain open() would
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fobj:
            write(fobj)
            fobj.flush()
            os.fsync(fobj.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # write() on a full disk names no file
            raise (OSError(e.errno, e.strerror, path) if e.errno is not None
                   else OSError(f"cannot save {path}: {e}")) from e
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX only)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _read(fobj, name):
    """Validate and read a seekable file: returns ``(structure, arrays)``."""
    head = fobj.read(_ZIP_LOCAL_HEADER + len(_META) + 4)
    if head[:len(_ZIP_MAGIC)] != _ZIP_MAGIC:
        if _ZIP_MAGIC.startswith(head):  # shorter than the 4-byte signature
            raise CheckpointError(f"{name}: file is truncated ({len(head)} bytes)")
        raise CheckpointError(f"{name}: not a dtrain checkpoint (not an .npz archive)")
    fobj.seek(0)
    try:
        zf = zipfile.ZipFile(fobj)
    except Exception as e:  # a damaged zip directory fails in many ways (even NotImplementedError)
        fobj.seek(-min(fobj.seek(0, io.SEEK_END), 22), io.SEEK_END)
        if not fobj.read().startswith(_ZIP_END):
            raise CheckpointError(f"{name}: file is truncated (the end of the archive is missing)") from e
        raise CheckpointError(f"{name}: file is corrupted: unreadable archive directory ({e})") from e
    with zf:
        if f"{_META}.npy" not in zf.namelist():
            if head[_ZIP_LOCAL_HEADER:] == f"{_META}.npy".encode():
                raise CheckpointError(f"{name}: file is corrupted: the archive directory lost the metadata entry")
            raise CheckpointError(f"{name}: not a dtrain checkpoint (an .npz archive without dtrain metadata)")
        archive = _Archive(zf, fobj, name)
        meta = _read_meta(archive)
        arrays = [archive.array(n) for n in meta["arrays"]]
    structure, used = meta["structure"], set()
    try:
        _check_node(structure, [], arrays, used)
    except ValueError as e:
        raise CheckpointError(f"{name}: file is corrupted: bad structure {e}") from e
    if len(used) != len(arrays):
        unused = [n for i, n in enumerate(meta["arrays"]) if i not in used]
        raise CheckpointError(f"{name}: file is corrupted: arrays {reprlib.repr(unused)} are not in the structure")
    if _checksum(structure, zip(meta["arrays"], arrays)) != meta.get("sha256"):
        raise CheckpointError(f"{name}: checksum mismatch: file is corrupted")
    return structure, arrays


class _Archive:
    """The ``.npy`` members of an open dtrain archive, read so that no allocation exceeds the
    file's real size: a member must be stored (not compressed), lie inside the file, and
    hold exactly the bytes its header declares. (Members cannot overlap: zipfile checks
    that each one's local header carries its name.)"""

    def __init__(self, zf, fobj, name):
        self.zf, self.name = zf, name
        self.file_size = fobj.seek(0, io.SEEK_END)

    def array(self, member):
        """The array of the member ``<member>.npy``."""
        try:
            info = self.zf.getinfo(f"{member}.npy")
        except KeyError:
            raise CheckpointError(f"{self.name}: file is corrupted: array {member} is missing") from None
        self._check_stored(info, member)
        try:
            with self.zf.open(info) as m:
                shape, fortran_order, dtype = self._header(m, member)
                size = math.prod(shape) * dtype.itemsize
                if size != info.file_size - m.tell():
                    raise CheckpointError(
                        f"{self.name}: file is corrupted: array {member} declares {dtype}{list(shape)} "
                        f"({size} bytes) but stores {info.file_size - m.tell()} bytes")
                data = self._data(m, size, member)
            # inside the try: a header can declare what no ndarray can be (e.g. over 64 dimensions)
            return numpy.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")
        except CheckpointError:
            raise
        except zipfile.BadZipFile as e:
            if "CRC" in str(e):
                raise CheckpointError(f"{self.name}: checksum mismatch: file is corrupted (zip CRC of {member})") from e
            raise CheckpointError(f"{self.name}: file is corrupted: array {member} unreadable ({e})") from e
        except Exception as e:  # a damaged member fails in many ways (EOFError, zlib's, struct's)
            raise CheckpointError(f"{self.name}: file is corrupted: array {member} unreadable "
                                  f"({type(e).__name__}: {e})") from e

    def _data(self, m, size, member):
        """The next ``size`` bytes of ``m`` in one buffer of that size (bounded: ``size`` is what
        the member stores, inside the file), read in chunks to hold no second copy."""
        data = bytearray(size)
        view, done = memoryview(data), 0
        while done < size:
            chunk = m.read(min(size - done, _READ_CHUNK))
            if not chunk:
                raise CheckpointError(f"{self.name}: file is truncated (array {member})")
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        return data

    def _check_stored(self, info, member):
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"{self.name}: array {member} is compressed (zip method {info.compress_type}): dtrain never "
                f"writes compressed members and refuses them, as a small one can expand to any size")
        if info.file_size != info.compress_size:  # the same for a stored member
            raise CheckpointError(f"{self.name}: file is corrupted: array {member} is stored with "
                                  f"{info.compress_size} bytes but claims {info.file_size}")
        if info.header_offset + info.compress_size > self.file_size:
            raise CheckpointError(
                f"{self.name}: file is corrupted: array {member} claims {info.compress_size} bytes at offset "
                f"{info.header_offset}, beyond the end of the file ({self.file_size} bytes)")

    def _header(self, m, member):
        """``(shape, fortran_order, dtype)`` from a member's .npy header, refusing dtypes save never writes."""
        version = npy_format.read_magic(m)
        if version not in ((1, 0), (2, 0)):  # numpy.savez writes 1.0, or 2.0 for a header over 64 KiB
            raise CheckpointError(f"{self.name}: file is corrupted: array {member} has .npy version {version}")
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(m)
        if dtype.kind not in _DTYPE_KINDS:
            raise CheckpointError(f"{self.name}: file is corrupted: array {member} unreadable (dtype {dtype}: "
                                  f"dtrain saves only bool, integer, floating-point and complex arrays)")
        if any(n < 0 for n in shape):
            raise CheckpointError(f"{self.name}: file is corrupted: array {member} has a negative dimension: {shape}")
        return shape, fortran_order, dtype


def _read_meta(archive):
    name = archive.name
    raw = archive.array(_META)
    try:
        meta = json.loads(raw.tobytes().decode())
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise CheckpointError(f"{name}: file is corrupted: metadata is not valid JSON ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not a dtrain checkpoint (metadata has no '{FORMAT}' format tag)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{name}: unknown format version {reprlib.repr(meta.get('version'))}: this dtrain "
                              f"reads version {VERSION} (was the file written by a newer dtrain?)")
    names = meta.get("arrays")
    if not isinstance(names, list) or "structure" not in meta:
        raise CheckpointError(f"{name}: file is corrupted: metadata lacks 'arrays' (a list) or 'structure'")
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise CheckpointError(f"{name}: file is corrupted: the array names {reprlib.repr(names)} are not "
                              "distinct strings")
    return meta
