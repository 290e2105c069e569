"""Installs the CuPy emulation in a process the tests start, when DTRAIN_CUPY_EMULATION is set
(Python imports ``sitecustomize`` at startup from PYTHONPATH; see tests/emulation)."""
import os
import sys

if os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() not in ("", "0"):
    # The one sys.path change in the tests, on purpose: this file runs at interpreter start in
    # processes whose PYTHONPATH may hold only this boot folder (emulation.child_env's, as
    # benchmarks/gpu_check.py gives its ranks), so it finds its package beside it, and takes
    # the entry out again so the process's path stays as it was given.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    import emulation
    del sys.path[0]
    emulation.install(emulation.requested())
