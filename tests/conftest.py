import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests import their shared helpers as plain modules

if os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() not in ("", "0"):
    # N emulated GPUs (tests/emulation): installed before anything imports dtrain, and in
    # every process the tests start, through PYTHONPATH (comm_helpers sets its own: kept first)
    import emulation
    emulation.install(emulation.requested())
    os.environ["PYTHONPATH"] = emulation.child_env(os.environ)["PYTHONPATH"]
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "comm"))
    import comm_helpers
    _clean_env = comm_helpers.clean_env
    comm_helpers.clean_env = lambda **extra: emulation.child_env(_clean_env(**extra))


def pytest_collection_modifyitems(config, items):
    import dtrain
    if dtrain.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (CuPy sees none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
