"""dtrain.load on hand-crafted files: whatever a file holds, loading it either gives what
save wrote or raises CheckpointError naming the file and the reason, and never allocates
beyond the file's real size.

The crafted files here carry a recomputed, valid checksum (the SHA-256 detects corruption,
not tampering), so each error below comes from load's own checks. The helpers (``unpack``,
``repack``, ``tamper_structure``, ``add_deflate_bomb``) also serve the fault suite
(tests/faults/test_checkpoint_faults.py).
"""
import collections
import copy
import functools
import io
import json
import random
import re
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import dtrain
from dtrain.checkpoint import CheckpointManager, latest_checkpoint, load_checkpoint, save_checkpoint
from dtrain.serialization import MAX_DEPTH, CheckpointError, _checksum, load, save, save_state

META = "__dtrain__"
BOMB_BYTES = 256 << 20  # what a deflate bomb's member declares; its file is about 1000 times smaller
MEMORY_BOUND = 16 << 20  # a refused file makes load allocate less than this (traced by tracemalloc)

SAMPLE = {"w": dtrain.arange(6, dtype=dtrain.float32).reshape(3, 2), "b": dtrain.tensor([1, 2, 3, 4]),
          "od": collections.OrderedDict(a=1.5, b=[None, True, "s"]),
          "t": (1, np.float32(2.0), np.arange(6).reshape(2, 3)), 7: {"nested": [[], {}]},
          "z": dtrain.tensor(0.5)}


def saved_bytes(obj):
    buf = io.BytesIO()
    save(obj, buf)
    return buf.getvalue()


def unpack(data):
    """``(meta, {member: array})`` of a dtrain file."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return json.loads(arrays.pop(META).tobytes()), arrays


def repack(meta, arrays, raw_meta=None, deflated=(), rehash=True):
    """A dtrain file of ``meta`` and ``arrays`` with valid zip CRCs and, where ``rehash`` and
    the metadata allow it, a recomputed SHA-256 (so load's checks, not the checksum, must
    refuse what is wrong). ``raw_meta``: metadata bytes to write instead of ``meta``'s JSON;
    ``deflated``: members to store deflate-compressed."""
    if rehash:
        try:
            meta["sha256"] = _checksum(meta["structure"], [(n, arrays[n]) for n in meta["arrays"]])
        except Exception:  # metadata too broken to hash: load must refuse it on other grounds
            pass
    if raw_meta is None:
        raw_meta = json.dumps(meta).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        members = {META: np.frombuffer(raw_meta, np.uint8), **arrays}
        for name, array in members.items():
            info = zipfile.ZipInfo(f"{name}.npy")
            info.compress_type = zipfile.ZIP_DEFLATED if name in deflated else zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as m:
                if isinstance(array, bytes):  # a whole .npy member, as made by npy_member
                    m.write(array)
                else:
                    np.lib.format.write_array(m, np.asanyarray(array), allow_pickle=True)
    return out.getvalue()


def npy_member(shape, dtype, payload):
    """The bytes of a .npy member whose header declares ``shape`` and ``dtype``, then ``payload``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def add_deflate_bomb(data, key="bomb", nbytes=BOMB_BYTES):
    """``data`` (a dtrain file of a dict) plus a zero tensor of ``nbytes`` under ``key``,
    stored deflate-compressed, with the checksum recomputed: a valid-looking file that
    expands about 1000-fold."""
    meta, arrays = unpack(data)
    name = f"a{len(arrays)}"
    arrays[name] = np.zeros(nbytes // 4, np.float32)
    meta["arrays"].append(name)
    meta["structure"]["dict"].append([key, {"tensor": len(arrays) - 1, "device": "cpu"}])
    return repack(meta, arrays, deflated=[name])


def tamper_structure(data):
    """``data`` with the index of its first tensor made a string, checksum recomputed."""
    meta, arrays = unpack(data)
    todo = [meta["structure"]]
    while "tensor" not in todo[-1]:  # depth first, down the entries that are dicts
        node = todo.pop()
        for kind in ("dict", "OrderedDict"):
            todo += [v for _, v in reversed(node.get(kind, [])) if isinstance(v, dict)]
        for kind in ("list", "tuple"):
            todo += [v for v in reversed(node.get(kind, [])) if isinstance(v, dict)]
    todo[-1]["tensor"] = str(todo[-1]["tensor"])
    return repack(meta, arrays)


def peak_allocation(fn):
    """``(exception raised by fn, peak bytes traced while it ran)``."""
    tracemalloc.start()
    try:
        fn()
    except Exception as e:
        return e, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    raise AssertionError("expected an exception")


def assert_refused(data, match):
    """load raises CheckpointError matching ``match``, not by the (recomputed) checksum, and
    allocates less than MEMORY_BOUND on the way."""
    error, peak = peak_allocation(lambda: load(io.BytesIO(data)))
    assert isinstance(error, CheckpointError), repr(error)
    assert re.search(match, str(error)) and "checksum mismatch" not in str(error), str(error)
    assert peak < MEMORY_BOUND, f"load allocated {peak} bytes before refusing"


def central_directory_patched(data, member, compress_size, file_size):
    """``data`` with the sizes that the zip central directory records for ``member`` replaced."""
    start = data.index(b"PK\x01\x02")  # the first entry
    while True:
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46:start + 46 + name_length] == member.encode():
            break
        extra, comment = struct.unpack_from("<HH", data, start + 30)
        start += 46 + name_length + extra + comment
    patched = bytearray(data)
    struct.pack_into("<II", patched, start + 20, compress_size, file_size)
    return bytes(patched)


# ---- every allocation bounded by the file's real size (issue 15, defect 1) -------------------

def test_deflate_bomb_is_refused_before_allocating():
    """A member stored deflate-compressed, in a file about 1000 times smaller than the tensor
    it declares and with a valid checksum, is refused naming the member, allocating less
    than MEMORY_BOUND (it used to load as a tensor of BOMB_BYTES)."""
    data = add_deflate_bomb(saved_bytes({"w": dtrain.ones(2)}))
    assert zipfile.ZipFile(io.BytesIO(data)).getinfo("a1.npy").file_size > BOMB_BYTES > 500 * len(data)
    assert_refused(data, r"array a1 is compressed \(zip method 8\): dtrain never writes compressed members")


def test_any_compressed_member_is_refused():
    """A whole file re-packed compressed (numpy.savez_compressed, metadata included) is refused."""
    meta, arrays = unpack(saved_bytes(SAMPLE))
    buf = io.BytesIO()
    np.savez_compressed(buf, **{META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}, **arrays)
    assert_refused(buf.getvalue(), f"array {META} is compressed")


@pytest.mark.parametrize("shape, payload, match", [
    ((1 << 40,), bytes(16), r"array a0 declares float32\[1099511627776\] \(4398046511104 bytes\) but stores 16 bytes"),
    ((2,), bytes(16), r"array a0 declares float32\[2\] \(8 bytes\) but stores 16 bytes"),
    ((-4, 0), b"", r"array a0 has a negative dimension: \(-4, 0\)"),
    ((1,) * 100, bytes(4), r"array a0 unreadable \(ValueError: maximum supported dimension .* 64, found 100\)"),
], ids=["more", "less", "negative", "100 dimensions"])
def test_header_that_disagrees_with_the_stored_bytes_is_refused(shape, payload, match):
    """An array whose .npy header declares other than the bytes it stores (4 TiB in 16
    bytes, or a negative dimension), or a shape no ndarray can have, is refused before
    allocating."""
    meta, arrays = unpack(saved_bytes({"w": dtrain.zeros(4)}))
    arrays["a0"] = npy_member(shape, np.float32, payload)
    assert_refused(repack(meta, arrays, rehash=False), f"file is corrupted: {match}")


@pytest.mark.parametrize("compress_size, file_size, match", [
    (1 << 30, 1 << 30, r"array a0 claims 1073741824 bytes at offset \d+, beyond the end of the file \(\d+ bytes\)"),
    (144, 1 << 30, "array a0 is stored with 144 bytes but claims 1073741824"),
], ids=["beyond the end", "sizes differ"])
def test_zip_directory_claiming_more_than_the_file_is_refused(compress_size, file_size, match):
    """A zip directory that records a member larger than the file (or a stored member whose
    two sizes differ) is refused before anything is read."""
    data = saved_bytes({"w": dtrain.zeros(4)})
    assert zipfile.ZipFile(io.BytesIO(data)).getinfo("a0.npy").compress_size == 144  # 128 header + 16 data
    assert_refused(central_directory_patched(data, "a0.npy", compress_size, file_size), f"file is corrupted: {match}")


# ---- dtypes: load refuses what save refuses (issue 15, defect 12) -----------------------------

REFUSED_DTYPES = [np.array(["ab", "c"]), np.array([b"ab"]), np.array(["2024-01-01"], "M8[D]"),
                  np.array([5], "m8[s]"), np.zeros(2, [("x", "<f4"), ("y", "<i4")]), np.zeros(2, "V4"),
                  np.array([object()])]


@pytest.mark.parametrize("array", REFUSED_DTYPES, ids=lambda a: a.dtype.str)
def test_dtypes_save_refuses_are_refused_by_load(array):
    """Strings, bytes, datetimes, timedeltas, structured, void and object arrays: save_state
    refuses them, and a crafted file holding one (checksum recomputed) is refused by load."""
    with pytest.raises(TypeError, match=f"cannot save array of dtype {re.escape(str(array.dtype))}"):
        save_state({"x": array}, io.BytesIO())
    meta, arrays = unpack(saved_bytes({"x": np.zeros(2)}))
    arrays["a0"] = array
    assert_refused(repack(meta, arrays), rf"file is corrupted: array a0 unreadable \(dtype "
                                         rf"{re.escape(str(array.dtype))}: dtrain saves only bool, integer, "
                                         "floating-point and complex arrays\\)")


# ---- crafted metadata with a recomputed checksum (issue 15, defect 5) -------------------------

def structure_slots(meta):
    """Setters of every place in ``meta``'s structure that holds an entry, the root included."""
    slots, todo = [functools.partial(meta.__setitem__, "structure")], [meta["structure"]]
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            continue
        for pair in node.get("dict", []) + node.get("OrderedDict", []):
            slots.append(functools.partial(pair.__setitem__, 1))
            todo.append(pair[1])
        for items in (node.get("list", []), node.get("tuple", [])):
            for i, item in enumerate(items):
                slots.append(functools.partial(items.__setitem__, i))
                todo.append(item)
    return slots


def nested(levels):
    node = 1
    for _ in range(levels):
        node = {"list": [node]}
    return node


# entries save never writes, wherever they stand (a0 is SAMPLE's 3x2 "w")
BAD_ENTRIES = [
    {}, [], [1, 2], {"tensor": "0", "device": "cpu"}, {"tensor": True, "device": "cpu"},
    {"tensor": -1, "device": "cpu"}, {"tensor": 10 ** 30, "device": "cpu"}, {"tensor": 0}, {"tensor": 0, "device": 7},
    {"tensor": 1, "device": "cpu", "grad": None}, {"ndarray": 1.5}, {"ndarray": None}, {"numpy_scalar": 0},
    {"dict": 5}, {"dict": [[1]]}, {"dict": [["k"]]}, {"dict": [[["unhashable"], 1]]}, {"dict": [[1.5, 1]]},
    {"dict": [[None, 1]]}, {"dict": [["k", 1], ["k", 2]]}, {"OrderedDict": {"k": 1}}, {"list": {}},
    {"list": "abc"}, {"tuple": None}, {"set": []}, {"list": [], "tuple": []}, {"list": [], "extra": 1},
    {"dict": [["k", {"bogus": 1}]]}, {"list": [{"tensor": {"x": 1}, "device": "cpu"}]}, nested(MAX_DEPTH + 1),
]
RAW_METADATA = [b"", b"\xff\xfe{", b'{"format": "dtrain", "vers', b"[" * 100_000, b'{"a":' * 50_000, b"null",
                b"NaN", b'["dtrain", 1]', b"{" + b"}" * 3]
DROP = object()


def meta_changes(names):
    """``(key, value)`` changes to the metadata that make it invalid (DROP: delete the key)."""
    return [("format", "torch"), ("format", None), ("format", DROP), ("version", 2), ("version", "1"),
            ("version", None), ("version", [1]), ("version", DROP), ("arrays", "a0"), ("arrays", None),
            ("arrays", [0]), ("arrays", [names]), ("arrays", [names[0]] * len(names)), ("arrays", names[:-1]),
            ("arrays", names + ["zz"]), ("arrays", DROP), ("structure", DROP)]


def fuzz_case(rng, family, data):
    """One crafted file of ``family`` made from ``data`` (SAMPLE saved), and what was done."""
    meta, arrays = unpack(data)
    names = list(meta["arrays"])
    if family == "entry":
        slot, entry = rng.choice(structure_slots(meta)), copy.deepcopy(rng.choice(BAD_ENTRIES))
        slot(entry)
        return repack(meta, arrays), f"entry {str(entry)[:60]}"
    if family == "metadata field":
        key, value = rng.choice(meta_changes(names))
        meta.pop(key) if value is DROP else meta.__setitem__(key, value)
        return repack(meta, arrays), f"{key} = {'dropped' if value is DROP else repr(value)[:60]}"
    if family == "raw metadata":
        raw = rng.choice(RAW_METADATA)
        return repack(meta, arrays, raw_meta=raw), f"metadata bytes {raw[:30]!r}"
    # "array member": a refused dtype, a header that disagrees with the bytes, or too many dimensions
    name = rng.choice(names)
    array = arrays[name]
    arrays[name] = rng.choice([REFUSED_DTYPES[rng.randrange(len(REFUSED_DTYPES))],
                               npy_member(array.shape + (rng.randrange(2, 1 << 20),), array.dtype, b""),
                               npy_member((1 << 40,), np.float64, array.tobytes()),
                               npy_member((1,) * 65, array.dtype, array.tobytes()[:array.itemsize])])
    return repack(meta, arrays), f"member {name}"


FUZZ_FAMILIES = ("entry", "metadata field", "raw metadata", "array member")
FUZZ_CASES = 400


def test_fuzzed_metadata_is_always_a_checkpoint_error():
    """FUZZ_CASES files, each SAMPLE's file with one random change that save never writes
    (an entry anywhere in the structure, a metadata field, the metadata bytes, an array
    member), checksum recomputed: every one raises CheckpointError naming the file (never
    RecursionError, TypeError, ...), before the checksum is compared, allocating less than
    MEMORY_BOUND."""
    rng, data = random.Random(15), saved_bytes(SAMPLE)
    counts = collections.Counter()
    for i in range(FUZZ_CASES):
        family = FUZZ_FAMILIES[i % len(FUZZ_FAMILIES)]
        bad, what = fuzz_case(rng, family, data)
        buf = io.BytesIO(bad)
        buf.name = f"case{i}.pt"
        error, peak = peak_allocation(lambda: load(buf))
        assert isinstance(error, CheckpointError), f"case {i} ({family}: {what}): {error!r}"
        assert str(error).startswith(f"case{i}.pt: ") and "checksum mismatch" not in str(error), (what, str(error))
        assert peak < MEMORY_BOUND, f"case {i} ({what}) allocated {peak} bytes"
        counts[family] += 1
    assert counts == {family: FUZZ_CASES // len(FUZZ_FAMILIES) for family in FUZZ_FAMILIES}
    assert load(io.BytesIO(data)).keys() == SAMPLE.keys()  # the unchanged file loads


JSON_CHARACTERS = '[]{}",:0123456789-.eEtrufalsnNI '
TEXT_EDITS = 400


def edited_text(rng, text):
    """``text`` with one random edit: a span deleted, a character inserted or replaced, or a
    span repeated."""
    at, length = rng.randrange(len(text)), rng.randrange(1, 6)
    edit = rng.randrange(4)
    if edit == 0:
        return text[:at] + text[at + length:]
    if edit == 1:
        return text[:at] + rng.choice(JSON_CHARACTERS) + text[at:]
    if edit == 2:
        return text[:at] + rng.choice(JSON_CHARACTERS) + text[at + 1:]
    return text[:at + length] + text[at:]


def as_saved(structure):
    """``structure`` as JSON with every tensor's device left out (load does not restore it)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "device"}
        return [strip(v) for v in node] if isinstance(node, list) else node
    return json.dumps(strip(structure), sort_keys=True)


def test_random_metadata_edits_load_only_what_save_writes():
    """TEXT_EDITS random edits of SAMPLE's metadata text (checksum recomputed whenever the
    result parses): each either raises CheckpointError or loads an object that saves back
    to the same structure, i.e. a file save could have written; never anything else."""
    rng, data = random.Random(1515), saved_bytes(SAMPLE)
    meta, arrays = unpack(data)
    text, outcomes = json.dumps(meta), collections.Counter()
    for i in range(TEXT_EDITS):
        edited = edited_text(rng, text)
        try:
            changed = json.loads(edited)
        except ValueError:
            bad = repack(meta, arrays, raw_meta=edited.encode(), rehash=False)
        else:
            bad = repack(changed, arrays) if isinstance(changed, dict) else repack(meta, arrays, edited.encode())
        try:
            got = load(io.BytesIO(bad))
        except CheckpointError:
            outcomes["CheckpointError"] += 1
            continue
        assert as_saved(unpack(saved_bytes(got))[0]["structure"]) == as_saved(changed["structure"]), edited
        outcomes["loaded what save writes"] += 1
    assert sum(outcomes.values()) == TEXT_EDITS and outcomes["CheckpointError"] > TEXT_EDITS // 2, outcomes


def test_structure_deeper_than_max_depth_is_refused_at_load():
    """A crafted structure one container deeper than save writes (checksum recomputed) is
    refused, and metadata JSON nested 100000 deep is too (json itself would recurse)."""
    meta, arrays = unpack(saved_bytes([]))
    meta["structure"] = nested(MAX_DEPTH + 1)
    assert_refused(repack(meta, arrays), f"bad structure containers nest deeper than {MAX_DEPTH} levels")
    assert_refused(repack(meta, arrays, raw_meta=b"[" * 100_000), r"metadata is not valid JSON \(RecursionError")
    meta["structure"] = nested(MAX_DEPTH)
    assert load(io.BytesIO(repack(meta, arrays))) == save_and_load_nested(MAX_DEPTH)


def save_and_load_nested(levels):
    obj = 1
    for _ in range(levels):
        obj = [obj]
    buf = io.BytesIO()
    save(obj, buf)
    return load(io.BytesIO(buf.getvalue()))


# ---- checkpoints: malformed content, and resume="auto" skipping it (issue 15, defect 5) -------

def checkpoint_dict(tmp_path):
    """The dict a real checkpoint file holds."""
    save_checkpoint(tmp_path / "real.ckpt", dtrain.nn.Linear(3, 2), epoch=1, step=5)
    return load(tmp_path / "real.ckpt")


BAD_CHECKPOINTS = [
    (lambda c: c.pop("rng"), r"file is corrupted: the checkpoint lacks \['rng'\]"),
    (lambda c: c.update(model=5), "file is corrupted: the model state is int 5, not a dict or None"),
    (lambda c: c.update(optimizer=[1]), r"file is corrupted: the optimizer state is list \[1\], not a dict or None"),
    (lambda c: c["rng"].pop("python"), "file is corrupted: the RNG states are .*, not a dict with the keys"),
    (lambda c: c.update(rng=[1, 2, 3]), r"file is corrupted: the RNG states are \[1, 2, 3\]"),
    (lambda c: c["rng"].update(numpy=("MT19937", np.zeros(3, np.uint32), 0, 0, 0.0)),
     r"file is corrupted: the numpy RNG state .* does not restore \(IndexError"),
    (lambda c: c["rng"].update(python=[3, [1]]), r"file is corrupted: the python RNG state .* does not restore"),
    (lambda c: c["rng"].update(dtrain={"seed": "x", "state": None}),
     r"file is corrupted: the dtrain RNG state .* does not restore \(ValueError"),
    (lambda c: c["rng"].update(dtrain="state"), "file is corrupted: the dtrain RNG state 'state' does not restore"),
    (lambda c: c.update(dtrain_checkpoint=np.array([1, 1])), r"unknown checkpoint version array\(\[1, 1\]\)"),
    (lambda c: c.update(dtrain_checkpoint="1"), "unknown checkpoint version '1'"),
]


@pytest.mark.parametrize("change, match", BAD_CHECKPOINTS, ids=range(len(BAD_CHECKPOINTS)))
def test_malformed_checkpoint_content_is_a_checkpoint_error(tmp_path, change, match):
    """A well-formed file whose checkpoint dict lacks a part or holds one that cannot be
    restored (a state that is no dict, an RNG state a generator refuses, a version that is
    an array) is a CheckpointError naming the file, before anything is restored."""
    ckpt = checkpoint_dict(tmp_path)
    change(ckpt)
    path = tmp_path / "bad.ckpt"
    save_state(ckpt, path)
    state = np.random.get_state()
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))}: {match}"):
        load_checkpoint(path, dtrain.nn.Linear(3, 2))
    assert np.array_equal(np.random.get_state()[1], state[1])  # no RNG was touched


def test_resume_auto_skips_crafted_files_and_uses_the_newest_good_one(tmp_path):
    """Of ckpt-1 (good), ckpt-2 (a deflate bomb), ckpt-3 (crafted structure, checksum
    recomputed) and ckpt-4 (an RNG state that does not restore), resume="auto" and
    latest_checkpoint warn once per bad file, naming it and the reason, and pick ckpt-1."""
    manager = CheckpointManager(tmp_path, keep_last=None)
    model = dtrain.nn.Linear(3, 2)
    paths = [manager.save(step, model) for step in (1, 2, 3, 4)]
    with open(paths[1], "rb") as f:
        bomb = add_deflate_bomb(f.read())
    with open(paths[1], "wb") as f:
        f.write(bomb)
    with open(paths[2], "rb") as f:
        tampered = tamper_structure(f.read())
    with open(paths[2], "wb") as f:
        f.write(tampered)
    ckpt = load(paths[3])
    ckpt["rng"]["numpy"] = ("MT19937", [1, 2])
    save_state(ckpt, paths[3])
    reasons = {paths[1]: "array a[0-9]+ is compressed", paths[2]: "bad structure at .*tensor index '[0-9]+'",
               paths[3]: "the numpy RNG state .* does not restore"}
    for find in (lambda: manager.load(dtrain.nn.Linear(3, 2))["path"], lambda: latest_checkpoint(tmp_path)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert find() == paths[0]
        messages = [str(w.message) for w in caught]
        assert len(messages) == 3 and all(w.category is RuntimeWarning for w in caught), messages
        for message, (path, reason) in zip(messages, reversed(reasons.items())):  # newest first
            assert re.match(f"skipping checkpoint {re.escape(path)}: {re.escape(path)}: .*{reason}", message), message


# ---- the pickled format's header ------------------------------------------------------------

@pytest.mark.parametrize("header, match", [
    (b"[" * 100_000, "unreadable header of a pickled dtrain file$"),
    (b"null", r"unreadable header of a pickled dtrain file \(no 'dtrain-pickle' format tag\)"),
    (b'["dtrain-pickle"]', r"unreadable header of a pickled dtrain file \(no 'dtrain-pickle' format tag\)"),
    (b'{"format": "dtrain-pickle", "version": 1, "type": [[[1]]], "reason": "x"}',
     r"unreadable header of a pickled dtrain file \(its 'type' and 'reason' are not strings\)"),
], ids=["deep JSON", "null", "list", "type not a string"])
@pytest.mark.parametrize("weights_only", [True, False])
def test_crafted_pickled_header_is_a_checkpoint_error(header, match, weights_only):
    """A whole-object file whose header line is JSON nested 100000 deep, not an object, or
    has a non-string type is 'corrupted' (not RecursionError, nor a message quoting the
    crafted value), whether or not the caller opted in to unpickling."""
    buf = io.BytesIO(b"DTRAIN-PICKLE\n" + header + b"\n" + bytes(8))
    buf.name = "whole.pt"
    with pytest.raises(CheckpointError, match=f"^whole.pt: file is corrupted: {match}") as info:
        load(buf, weights_only=weights_only)
    assert type(info.value) is CheckpointError
