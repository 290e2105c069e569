"""Installs the CuPy emulation in a process the tests start, when DTRAIN_CUPY_EMULATION is set
(Python imports ``sitecustomize`` at startup from PYTHONPATH; see tests/emulation)."""
import os
import sys

if os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() not in ("", "0"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    import emulation
    del sys.path[0]
    emulation.install(emulation.requested())
