"""Render docs/faults.md from the fault-injection suite's SCENARIOS lists.

    PYTHONPATH=tests python -m faults.table > docs/faults.md

Each module in MODULES defines ``SCENARIOS``: dicts with "scenario", "launcher",
"exit_code", "max_seconds" and "message", the values its tests check (the modules import
the tests' shared helpers, hence tests/ on PYTHONPATH); tests/faults/test_table.py checks
the doc is up to date.
"""
import importlib
import re
import sys

MODULES = ("test_comm_faults", "test_checkpoint_faults", "test_nonfinite_faults")
COLUMNS = (("scenario", "Scenario"), ("launcher", "Launcher"), ("exit_code", "Exit code"),
           ("max_seconds", "Exits within (s)"), ("message", "Message"))

INTRO = """# Faults: what happens when things go wrong

Generated from the fault-injection tests in `tests/faults/` (each row is one scenario a
test injects and checks: the exit code, the time from the fault to the exit, and the
message). Do not edit by hand: regenerate with

    PYTHONPATH=tests python -m faults.table > docs/faults.md

`tests/faults/test_table.py` fails when this file and the suite disagree.

Exit codes: `75` (`dtrain.preemption.EXIT_PREEMPTED`, EX_TEMPFAIL) means the run was asked
to stop (SIGTERM), saved a checkpoint at a step boundary and exited cleanly: resume it with
`--resume auto`. `1` is an error (an exception, or a rank that failed), `128 + N` a death
by signal N (137: SIGKILL, 143: an unhandled SIGTERM); the launcher passes on the exit code
of the failing rank.

On a collective timeout every rank writes its threads' stacks and its last 32 collectives
(number, call, call site) to `$DTRAIN_RUN_DIR/dtrain-hang-<job>/rank<N>.stacks.txt` and
`rank<N>.history.json` (`DTRAIN_RUN_DIR` defaults to the temporary folder; without a shared
filesystem each node keeps its own ranks' files), and the report says where the ranks' calls
first differ and where each rank is. Collectives that disagree (dtype, op, root, size) are
caught by a sampled check on by default (calls 1, 2, 4, ... then every 64th of each group;
`DTRAIN_CHECK_EVERY=N`, 0 turns it off; `DTRAIN_DEBUG=1` checks every call).

"""


def scenarios():
    """``[(module name, scenario dict), ...]`` from every module of MODULES."""
    return [(name, s) for name in MODULES for s in importlib.import_module(f"faults.{name}").SCENARIOS]


def cell(value):
    text = re.sub(r"\\(.)", r"\1", str(value))  # messages may be regular expressions: show them plain
    return text.replace("|", "\\|").replace("\n", " ")


def render():
    """The text of docs/faults.md."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for _, s in scenarios():
        lines.append("| " + " | ".join(cell(s[key]) for key, _ in COLUMNS) + " |")
    return INTRO + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
