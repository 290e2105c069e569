"""``save`` / ``load``: state_dicts and nested containers in a safe, checksummed file.

The file is a NumPy ``.npz`` archive (a zip of ``.npy`` members): one member per array,
plus the member ``__dtrain__`` holding JSON metadata: a format tag and version, the
container structure, and a SHA-256 over the structure and every array's dtype, shape and
bytes. Loading never unpickles anything (``allow_pickle=False``), so a file from an
untrusted source can at worst fail to load. ``numpy.load(path)`` also reads the arrays.

What is saved:
  - dict (str or int keys), OrderedDict (key order kept), list, tuple, None, bool, int,
    float, str; other dict/list/tuple subclasses are saved as the plain container;
  - dtrain Tensors of any dtype and shape (0-d and empty included): the values and dtype
    only. ``requires_grad`` and ``grad`` are not saved (state_dicts hold detached tensors),
    a Parameter loads as a plain Tensor, and tensors that share storage (tied weights,
    views) are saved as separate copies and load as independent tensors;
  - NumPy arrays and NumPy scalars (loaded back as such, always on the CPU).
"""
import collections
import contextlib
import hashlib
import io
import json
import os
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


class CheckpointError(RuntimeError):
    """A file cannot be loaded: truncated, corrupted, not a dtrain file, or too new."""


def save(obj, f):
    """Save ``obj`` (a state_dict or nested container of tensors) to ``f``.

    A path is written atomically: to a temporary file in the same directory, flushed and
    fsync'ed, then renamed over ``f``; a failed or interrupted save leaves an existing
    file untouched and removes the temporary file. A file object is written in place.

    Args:
        obj: dict / OrderedDict (str or int keys), list, tuple, None, bool, int, float,
            str, dtrain Tensor, NumPy array or scalar, nested in any way.
        f: a path (str or os.PathLike) or a binary file object open for writing.

    Raises:
        TypeError: ``obj`` holds an unsupported object; the message names its key path.

    Example:
        >>> dtrain.save({"w": dtrain.randn(3, 2), "step": 10}, "state.pt")
    """
    arrays = []
    structure = _encode(obj, [], arrays)  # fails before any file is touched
    names = [f"a{i}" for i in range(len(arrays))]
    meta = {"format": FORMAT, "version": VERSION, "arrays": names, "structure": structure,
            "sha256": _checksum(structure, zip(names, arrays))}
    members = {_META: numpy.frombuffer(json.dumps(meta).encode(), dtype=numpy.uint8)}
    members.update(zip(names, arrays))  # the metadata member comes first in the zip

    def write(fobj):
        numpy.savez(fobj, **members)

    if isinstance(f, (str, bytes, os.PathLike)):
        _atomic_write(os.fspath(f), write)
    elif hasattr(f, "write"):
        write(f)
    else:
        raise TypeError(f"save: f must be a path or a binary file object, got {type(f).__name__}")


def load(f, map_location=None, weights_only=True):
    """Load an object written by :func:`save`.

    Tensors come back detached (``requires_grad=False``) with their saved dtype and shape,
    on the CPU unless ``map_location`` says otherwise (unlike PyTorch, the device a tensor
    was saved from is not restored by default). NumPy arrays always load on the CPU.

    Args:
        f: a path (str or os.PathLike) or a binary file object open for reading.
        map_location: where tensors go: None (the CPU); a device ("cpu", "cuda:0", a
            Device); a dict from the saved device string to a device (devices not in it
            go to the CPU); or a callable ``fn(cpu_tensor, saved_device_str)`` that
            returns the Tensor to use (or None to keep the CPU tensor).
        weights_only: accepted for PyTorch compatibility. The format only ever holds
            containers, numbers, strings and arrays, so loading is always weights-only.

    Returns:
        The saved object, with the same container types and key order.

    Raises:
        CheckpointError: the file is truncated, corrupted (checksum mismatch), not a
            dtrain file, or of an unknown format version; the message names the file.

    Example:
        >>> state = dtrain.load("state.pt", map_location="cpu")
    """
    place = _placer(map_location)
    name = file_name(f)
    if isinstance(f, (str, bytes, os.PathLike)):
        with open(f, "rb") as fobj:
            structure, arrays = _read(fobj, name)
    elif hasattr(f, "read"):
        data = f.read()
        if not isinstance(data, bytes):
            raise TypeError(f"load: file {name} must be opened in binary mode ('rb'), "
                            f"read() gave {type(data).__name__}")
        structure, arrays = _read(io.BytesIO(data), name)
    else:
        raise TypeError(f"load: f must be a path or a binary file object, got {type(f).__name__}")
    try:
        return _decode(structure, arrays, place)
    except (KeyError, IndexError, ValueError) as e:  # only a hand-made file with a valid checksum gets here
        raise CheckpointError(f"{name}: file is corrupted: bad structure entry ({e!r})") from e


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
            return _read_meta(zf, name).get("sha256")


def file_name(f):
    """How messages name ``f``, a path or a file object."""
    if isinstance(f, (str, bytes, os.PathLike)):
        return os.fsdecode(f)
    return getattr(f, "name", None) or repr(f)


# ---- encoding: Python objects <-> JSON structure + a list of arrays ----------------------

def _path_str(path):
    return "".join(f"[{k!r}]" for k in path) if path else "the top level"


def _array_node(kind, array, path, arrays):
    if array.dtype.kind not in _DTYPE_KINDS:
        raise TypeError(f"cannot save array of dtype {array.dtype} at {_path_str(path)}: "
                        "only bool, integer, floating-point and complex dtypes are supported")
    arrays.append(numpy.asarray(array, order="C"))  # not ascontiguousarray: it makes 0-d arrays 1-d
    return {kind: len(arrays) - 1}


def _encode(obj, path, arrays):
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
        return place(Tensor._wrap(arrays[node["tensor"]]), node["device"])
    if "ndarray" in node:
        return arrays[node["ndarray"]]
    if "numpy_scalar" in node:
        return arrays[node["numpy_scalar"]][()]
    for kind, make in (("dict", dict), ("OrderedDict", collections.OrderedDict)):
        if kind in node:
            return make((k, _decode(v, arrays, place)) for k, v in node[kind])
    for kind, make in (("list", list), ("tuple", tuple)):
        if kind in node:
            return make(_decode(v, arrays, place) for v in node[kind])
    raise ValueError(f"unknown entry {node!r}")


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
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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
        meta = _read_meta(zf, name)
        arrays = [_read_member(zf, n, name) for n in meta["arrays"]]
    if _checksum(meta["structure"], zip(meta["arrays"], arrays)) != meta.get("sha256"):
        raise CheckpointError(f"{name}: checksum mismatch: file is corrupted")
    return meta["structure"], arrays


def _read_member(zf, member, name):
    try:
        with zf.open(f"{member}.npy") as m:
            return npy_format.read_array(m, allow_pickle=False)
    except zipfile.BadZipFile as e:
        if "CRC" in str(e):
            raise CheckpointError(f"{name}: checksum mismatch: file is corrupted (zip CRC of {member})") from e
        raise CheckpointError(f"{name}: file is corrupted: array {member} unreadable ({e})") from e
    except Exception as e:  # a corrupted .npy header can fail in many ways (even MemoryError)
        raise CheckpointError(f"{name}: file is corrupted: array {member} unreadable ({type(e).__name__}: {e})") from e


def _read_meta(zf, name):
    raw = _read_member(zf, _META, name)
    try:
        meta = json.loads(raw.tobytes().decode())
    except ValueError as e:
        raise CheckpointError(f"{name}: file is corrupted: metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not a dtrain checkpoint (metadata has no '{FORMAT}' format tag)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{name}: unknown format version {meta.get('version')!r}: this dtrain reads "
                              f"version {VERSION} (was the file written by a newer dtrain?)")
    if not isinstance(meta.get("arrays"), list) or "structure" not in meta:
        raise CheckpointError(f"{name}: file is corrupted: metadata lacks 'arrays' or 'structure'")
    return meta
