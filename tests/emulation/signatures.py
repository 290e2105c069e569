"""Signatures of the CuPy functions dtrain calls, for comparing the emulation with real CuPy.

``python tests/emulation/signatures.py`` prints, as JSON, the signature of each of
:func:`called_names` in whichever ``cupy`` that process imports (the real package when the
emulation is not installed): ``{name: [[param, default-or-null], ...] | "why not"}``.
"""
import inspect
import json
import os
import re
import sys

DTRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "dtrain")
# what dtrain calls on objects the scan below cannot see the type of (streams, events,
# pools, arrays, the RandomState behind backend._CupyRNG, the NCCL module's functions)
INDIRECT = ["cupy.cuda.Device.use", "cupy.cuda.Device.synchronize", "cupy.cuda.Stream.synchronize",
            "cupy.cuda.Stream.wait_event", "cupy.cuda.Event.record", "cupy.cuda.Event.synchronize",
            "cupy.cuda.MemoryPool.used_bytes", "cupy.cuda.MemoryPool.total_bytes",
            "cupy.cuda.MemoryPool.free_all_blocks", "cupy.cuda.PinnedMemoryPool.free_all_blocks",
            "cupy.ndarray.get", "cupy.ndarray.astype", "cupy.ndarray.copy", "cupy.ndarray.item",
            "cupy.ndarray.view", "cupy.ndarray.reshape", "cupy.ndarray.tolist",
            "cupy.random.RandomState", "cupy.random.RandomState.standard_normal",
            "cupy.random.RandomState.random_sample", "cupy.random.RandomState.randint",
            "cupy.random.RandomState.permutation", "cupy.cuda.nccl.NcclCommunicator",
            "cupy.cuda.nccl.get_unique_id", "cupy.cuda.nccl.groupStart", "cupy.cuda.nccl.groupEnd",
            "cupyx.scipy.special.erf", "cupy.lib.stride_tricks.as_strided", "cupy.add.at"]


def called_names():
    """Dotted names of what dtrain calls in CuPy: a scan of its sources plus :data:`INDIRECT`."""
    found = set(INDIRECT)
    patterns = [(r"\bxp\.([A-Za-z_][\w.]*)\(", "cupy."), (r"\bcupy\.([A-Za-z_][\w.]*)\(", "cupy."),
                (r"\bcupyx\.([A-Za-z_][\w.]*)\(", "cupyx."), (r"get_array_module\([^()]*\)\.(\w+)\(", "cupy."),
                (r"\bself\.comm\.(\w+)\(", "cupy.cuda.nccl.NcclCommunicator.")]
    for folder, _, files in os.walk(DTRAIN):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                text = open(path).read()
                for pattern, prefix in patterns:
                    if "nccl" in prefix and not path.endswith(os.path.join("comm", "nccl.py")):
                        continue  # elsewhere self.comm is an mpi4py communicator
                    found.update(prefix + m for m in re.findall(pattern, text))
    return sorted(found)


def resolve(modules, name):
    obj = modules[name.split(".")[0]]
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def _from_doc(obj):
    """Parameters from a Cython docstring's first line, e.g. "f(self, int device_id=-1) -> int"."""
    first = (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
    m = re.match(r"^[\w.]*\((.*)\)", first)
    if m is None:
        return None
    params = []
    for p in filter(None, (p.strip() for p in m.group(1).split(","))):
        decl, _, default = p.partition("=")
        pname = decl.split()[-1].lstrip("*")
        if pname not in ("self", "/", "\\*", "*", ""):
            params.append([pname, default.strip() or None])
    return params


def signature(obj):
    """``[[param, default-repr-or-None], ...]`` (no self), or a string saying why not."""
    target = obj
    if inspect.isclass(obj):
        doc = _from_doc(obj)
        if doc is not None and (obj.__doc__ or "").strip().startswith(obj.__name__ + "("):
            return doc
        target = obj.__init__
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        doc = _from_doc(target)
        return doc if doc is not None else f"no signature and no signature line in the docstring of {obj!r}"
    return [["**kwargs" if p.kind is p.VAR_KEYWORD else p.name, None if p.default is p.empty else repr(p.default)]
            for p in sig.parameters.values() if p.name != "self" and p.kind is not p.VAR_POSITIONAL]


def signatures(modules, names):
    out = {}
    for name in names:
        try:
            obj = resolve(modules, name)
        except AttributeError as e:
            out[name] = f"missing: {e}"
            continue
        if isinstance(obj, type) and obj.__module__ == "numpy" or not callable(obj):
            continue  # dtypes and constants are NumPy's own in both
        out[name] = signature(obj)
    return out


if __name__ == "__main__":
    import cupy
    import cupy.cuda.nccl  # noqa: F401
    import cupy.lib.stride_tricks  # noqa: F401
    import cupyx
    import cupyx.scipy.special  # noqa: F401
    wanted = sys.argv[1:] or called_names()
    found = signatures({"cupy": cupy, "cupyx": cupyx}, wanted)
    if not cupy.cuda.nccl.available:  # CuPy without the NCCL library has no NcclCommunicator to read
        found.update({n: "not loadable here: cupy.cuda.nccl.available is False" for n in wanted
                      if n.startswith("cupy.cuda.nccl.")})
    print(json.dumps({"version": cupy.__version__, "signatures": found}))
