"""dtrain's layers import downward only, and use each other through public names.

The layers, bottom to top (a module may import its own layer and those below it):

  timing          the phase timer and trace every layer records into (it imports nothing of dtrain)
  tensor          the autograd core: Tensor, Function, ops, the backward walk
  tensor facades  torch paths over the core alone: autograd, linalg, cuda, accelerator,
                  backends, serialization (the launcher asks cuda which GPUs there are, and
                  nn/optim/data may use them too, so they sit below those)
  nn/optim/data   models, optimizers, data loading
  comm            process groups and collectives
  parallel        DDP, DataParallel, SyncBatchNorm (they use nn and comm)
  launch          the launcher and the job-level protocol it drives (preemption)
  facades         the package itself (dtrain/__init__.py wires names across layers, e.g.
                  nn.parallel and DistributedSampler's process group), torch paths above the
                  layers (distributed, multiprocessing, utils, compiler), vision, and
                  checkpoint (whole-job state, which asks comm for the rank)

A static check (ast) over every module, function-level (lazy) imports and
``importlib.import_module("...")`` included, names file:line for each: an import of a layer
above; a module that is in no layer (place it in LAYERS); a private name (``_x``) of another
unit imported or used through a module alias (``dist._abort_job``); and code outside tensor/
reading the autograd graph's internals (``fn.inputs``, ``fn.needs_input_grad``: use
``dtrain.tensor.reachable_leaves``).
"""
import ast
import pathlib
import sys

import pytest

import dtrain
from dtrain.data import sampler

ROOT = pathlib.Path(dtrain.__file__).parent

LAYERS = [
    ("timing", {"timing"}),
    ("tensor", {"tensor"}),
    ("tensor facades", {"autograd", "linalg", "cuda", "accelerator", "backends", "serialization"}),
    ("nn/optim/data", {"nn", "optim", "data"}),
    ("comm", {"comm"}),
    ("parallel", {"parallel"}),
    ("launch", {"launch", "preemption", "preflight"}),
    ("facades", {"__init__", "distributed", "multiprocessing", "utils", "compiler", "vision", "checkpoint", "amp"}),
]
RANK = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
GRAPH_INTERNALS = {"inputs", "needs_input_grad"}  # a Function's own (self.needs_input_grad) are its API

# Violations in files this test's author does not own, being fixed by others: (file, what).
# An entry that no longer occurs fails the test, so the list only shrinks.
KNOWN = set()


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _unit(dotted, package):
    """The unit (top-level subpackage or module; ``__init__`` for the package itself) of a
    dotted module name, or None outside the package."""
    parts = dotted.split(".")
    if parts[0] != package:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(root, dotted):
    path = root.parent.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imports(tree, name, is_package):
    """(line, module, imported names, alias) for each import in a module named ``name``."""
    anchor = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, [], (a.asname, a.name) if a.asname else (a.name.split(".")[0],) * 2
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(anchor[:len(anchor) - node.level + 1]) if node.level else ""
            yield node.lineno, ".".join(p for p in (base, node.module) if p), node.names, None
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            target = node.args[0].value
            yield node.lineno, name + target if target.startswith(".") else target, [], None


def layering_violations(root):
    """(file, line, what) for each rule broken by a module of the package at ``root``."""
    package, found = root.name, []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root.parent))
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        src = _unit(name, package)
        if src not in RANK:
            found.append((rel, 1, f"{src} is in no layer of tests/test_layering.py's LAYERS"))
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases = {}  # names bound to another unit's modules: their private attributes are off limits
        for line, module, names, alias in _imports(tree, name, is_package):
            targets = [(f"{module}.{a.name}", None, a) for a in names] if module == package else \
                [(module, a.name, a) for a in names] or [(module, None, None)]
            for dotted, imported, a in targets:
                dst = _unit(dotted, package)
                if dst is None or dst == src:
                    continue
                if dst not in RANK:
                    found.append((rel, line, f"imports {dotted}, which is in no layer"))
                elif RANK[dst] > RANK[src]:
                    found.append((rel, line, f"{src} ({LAYERS[RANK[src]][0]}) imports {dotted} "
                                             f"({LAYERS[RANK[dst]][0]}): a layer above"))
                full = f"{dotted}.{imported}" if imported else dotted
                if any(_private(p) for p in full.split(".")[1:]):
                    found.append((rel, line, f"{src} imports the private {full}"))
                if alias:
                    aliases[alias[0]] = package if alias[0] == package else alias[1]
                elif a is not None and _is_module(root, full):
                    aliases[a.asname or a.name] = full
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                chain, base = [node.attr], node.value
                while isinstance(base, ast.Attribute):
                    chain.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id in aliases:
                    used = ".".join([aliases[base.id], *reversed(chain)])
                    if _unit(used, package) != src:
                        found.append((rel, node.lineno, f"{src} uses the private {used}"))
            if src != "tensor" and isinstance(node, ast.Attribute) and node.attr in GRAPH_INTERNALS \
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                found.append((rel, node.lineno, f"reads the autograd graph's .{node.attr} "
                                                f"(use dtrain.tensor.reachable_leaves)"))
    return found


def test_every_import_goes_downward():
    """No module of dtrain imports a layer above its own, uses another unit's private names,
    or walks the autograd graph outside tensor/; every module is in a layer."""
    assert len(list(ROOT.rglob("*.py"))) > 100, f"expected dtrain's modules under {ROOT}"
    found = layering_violations(ROOT)
    new = [f"{f}:{line}: {what}" for f, line, what in found if (f, what) not in KNOWN]
    assert not new, "imports against the layering (see this file's docstring):\n" + "\n".join(new)
    stale = KNOWN - {(f, what) for f, _, what in found}
    assert not stale, f"fixed: remove from KNOWN: {sorted(stale)}"


def test_every_top_level_unit_is_placed():
    """LAYERS names exactly the subpackages and modules that exist (no stale entries)."""
    units = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert units == set(RANK), f"in no layer: {sorted(units - set(RANK))}; gone: {sorted(set(RANK) - units)}"


def test_top_package_wires_what_lower_layers_may_not_import(monkeypatch):
    """``import dtrain`` hands data the process group (comm) DistributedSampler takes its
    defaults from, and gives nn torch.nn's names for parallel's wrappers; without a
    registered source the defaults are PyTorch's error, not an import of comm."""
    assert sampler._process_group_source[0] is dtrain.comm
    assert dtrain.nn.parallel is sys.modules["dtrain.nn.parallel"] is dtrain.parallel
    assert (dtrain.nn.DataParallel, dtrain.nn.SyncBatchNorm) == (dtrain.parallel.DataParallel,
                                                                 dtrain.parallel.SyncBatchNorm)
    monkeypatch.setattr(sampler, "_process_group_source", [None])
    with pytest.raises(RuntimeError, match="num_replicas=None requires distributed package"):
        sampler.DistributedSampler(range(4))


def _write(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_check_flags_each_rule(tmp_path):
    """The check itself flags every rule at its line (so the tests above can fail), lazy and
    import_module imports included, and passes downward imports and a Function's own
    needs_input_grad."""
    root = tmp_path / "dtrain"
    _write(root, {
        "__init__.py": "from . import parallel\nfrom .nn.norm import Norm\n",
        "tensor/__init__.py": "import numpy\nfrom ..nn import Linear\n",
        "nn/__init__.py": "from ..tensor import Tensor\n\n\ndef f():\n    from ..parallel import DDP\n",
        "nn/norm.py": "class _BatchNorm:\n    pass\n",
        "data/__init__.py": "import importlib\nimportlib.import_module('dtrain.comm')\n",
        "comm/__init__.py": "import dtrain.nn.functional as F\nfrom dtrain import tensor\n",
        "parallel/__init__.py": "from ..nn.norm import _BatchNorm\nfrom .. import comm as dist\n"
                                "dist._state.by_launcher = True\n",
        "parallel/ddp.py": "def unused(fn, self):\n    return fn.inputs, self.needs_input_grad\n",
        "launch.py": "import dtrain\nfrom . import comm, preemption\n",
        "preemption.py": "",
        "newthing.py": "",
    })
    found = sorted((f, line) for f, line, _ in layering_violations(root))
    assert found == [("dtrain/data/__init__.py", 2), ("dtrain/newthing.py", 1), ("dtrain/nn/__init__.py", 5),
                     ("dtrain/parallel/__init__.py", 1), ("dtrain/parallel/__init__.py", 3),
                     ("dtrain/parallel/ddp.py", 2), ("dtrain/tensor/__init__.py", 2)], found
    whats = {(f, line): what for f, line, what in layering_violations(root)}
    assert whats[("dtrain/nn/__init__.py", 5)] == ("nn (nn/optim/data) imports dtrain.parallel (parallel): "
                                                   "a layer above")
    assert whats[("dtrain/parallel/__init__.py", 3)] == "parallel uses the private dtrain.comm._state"
    assert "dtrain.nn.norm._BatchNorm" in whats[("dtrain/parallel/__init__.py", 1)]
