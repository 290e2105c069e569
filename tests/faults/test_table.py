"""docs/faults.md is the table rendered from the fault suites' SCENARIOS, not hand-written."""
import os

from faults import table

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "faults.md")
KEYS = {"scenario", "launcher", "exit_code", "max_seconds", "message"}


def test_scenarios_are_well_formed():
    """Every scenario has exactly the five keys, an exit code (an int, or a description such
    as "non-zero") and a positive time limit."""
    found = table.scenarios()
    assert found, "no SCENARIOS found"
    for module, s in found:
        assert set(s) == KEYS, f"{module}: {s}"
        assert isinstance(s["exit_code"], (int, str)) and s["max_seconds"] > 0, f"{module}: {s}"


def test_doc_is_the_rendered_table():
    """docs/faults.md equals `PYTHONPATH=tests python -m faults.table` output (regenerate it if not)."""
    with open(DOC) as f:
        assert f.read() == table.render(), \
            "docs/faults.md is stale: run PYTHONPATH=tests python -m faults.table > docs/faults.md"
