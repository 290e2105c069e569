import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests import their shared helpers as plain modules


def pytest_collection_modifyitems(config, items):
    import dtrain
    if dtrain.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (CuPy sees none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
