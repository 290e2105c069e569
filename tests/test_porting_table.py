"""The README's "Porting from PyTorch" table stays true: every dtrain name in it resolves, and
every PyTorch name beside it exists in PyTorch (where PyTorch is installed)."""
import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\|\s*`([\w.]+)`\s*\|\s*`([\w.]+)`\s*\|")


def table_rows():
    text = README.read_text()
    section = text.split("## Porting from PyTorch", 1)[1].split("\n## ", 1)[0]
    return [m.groups() for line in section.splitlines() if (m := ROW.match(line))]


def resolve(dotted):
    """The object at ``a.b.c``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {dotted!r} imports")


def test_table_has_rows():
    """The section exists and lists the module paths a rename must find."""
    rows = table_rows()
    assert len(rows) >= 20, rows
    theirs = {t for t, _ in rows}
    for path in ("torch.utils.data", "torch.distributed", "torch.multiprocessing", "torch.nn.parallel",
                 "torchvision.datasets"):
        assert path in theirs, f"{path} is missing from the porting table"


@pytest.mark.parametrize("torch_name,dtrain_name", table_rows())
def test_dtrain_name_resolves(torch_name, dtrain_name):
    """Each dtrain entry of the table imports (modules) or is an attribute (names)."""
    assert resolve(dtrain_name) is not None


@pytest.mark.parametrize("torch_name,dtrain_name", [r for r in table_rows() if not r[0].startswith("torchvision")])
def test_torch_name_exists(torch_name, dtrain_name):
    """Each PyTorch entry of the table is a real PyTorch name (the table is about PyTorch, not
    about names we made up)."""
    pytest.importorskip("torch")
    assert resolve(torch_name) is not None
