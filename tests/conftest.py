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

    @pytest.fixture(autouse=True)
    def _current_device_restored():
        """A test that calls set_device (or init_process_group in-process) leaves the next one
        on GPU 0, as a fresh process would be."""
        yield
        import dtrain
        if dtrain.cuda.is_available():
            dtrain.cuda.set_device(0)


def pytest_collection_modifyitems(config, items):
    import dtrain
    if dtrain.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (CuPy sees none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
