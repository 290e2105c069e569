import os

import pytest

# The tests import their shared modules (helpers, comm_helpers, emulation) as top-level
# modules: tests/ is on sys.path through pyproject's [tool.pytest.ini_options] pythonpath.
# The processes they start (rank scripts, tests/emulation/rank_nccl.py) find them the same
# way, through PYTHONPATH (comm_helpers.clean_env sets its own, which has tests/ too).
TESTS = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [TESTS, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != TESTS)])

if os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() not in ("", "0"):
    # N emulated GPUs (tests/emulation): installed before anything imports dtrain, and in
    # every process the tests start, through PYTHONPATH
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


@pytest.fixture
def world():
    """A world of one process (no MPI) for the test; the previous state is restored after."""
    import dtrain.comm as dist
    started = not dist.is_initialized()
    if started:
        dist.init_process_group()
    yield
    if started:
        dist.destroy_process_group()


def pytest_collection_modifyitems(config, items):
    import dtrain
    if dtrain.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (CuPy sees none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
