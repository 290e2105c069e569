"""Fault-injection tests: each module defines SCENARIOS, rendered into docs/faults.md by table.py."""
