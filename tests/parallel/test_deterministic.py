"""Deterministic mode gives the same bits at 1, 2 and 4 ranks (issue 17).

deterministic_checks.py trains examples/gpt.py's GPT and the reference CNN (BatchNorm,
dropout) for 30 steps at each world size, in deterministic mode and in the default mode;
the tests compare the final parameters and buffers across world sizes."""
import sys

import numpy as np
import pytest

from comm_helpers import assert_all_checks_passed, require_mpi, run

pytestmark = pytest.mark.slow  # three MPI jobs of five 30-step trainings

WORLD_SIZES = (1, 2, 4)
CHECKS = 5  # the trainings of deterministic_checks.py


@pytest.fixture(scope="module")
def finals(tmp_path_factory):
    """Per world size, per training, the final state_dict arrays."""
    mpiexec = require_mpi()
    out = {}
    for n in WORLD_SIZES:
        folder = tmp_path_factory.mktemp(f"det{n}")
        result = run([mpiexec, "-n", str(n), sys.executable, "tests/parallel/deterministic_checks.py", str(folder)],
                     timeout=240)
        assert_all_checks_passed(result, n, CHECKS)
        out[n] = {path.stem: dict(np.load(path)) for path in folder.glob("*.npz")}
    return out


def _differences(a, b):
    assert a.keys() == b.keys()
    return {k: float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a if not np.array_equal(a[k], b[k])}


@pytest.mark.parametrize("model", ["gpt", "cnn", "cnn_12"])
def test_deterministic_mode_same_bits_at_1_2_4_ranks(finals, model):
    """In deterministic mode (micro_shard_size=2 of a global batch of 8, dropout on, the CNN with
    BatchNorm) the parameters and buffers after 30 steps are bit-identical at 1, 2 and 4 ranks;
    so with 12 micro-shards of one sample (the exact integer sum instead of the fixed tree)."""
    name = f"{model}_deterministic" if model != "cnn_12" else "cnn_deterministic_12"
    ref = finals[1][name]
    assert ref and all(np.isfinite(v).all() for v in ref.values())
    for n in WORLD_SIZES[1:]:
        differ = _differences(finals[n][name], ref)
        assert not differ, f"{model} at {n} ranks differs from 1 rank (max |difference| per entry): {differ}"


@pytest.mark.parametrize("model", ["gpt", "cnn"])
def test_default_mode_within_float_tolerance(finals, model):
    """In the default mode (plain DDP, SyncBatchNorm, no dropout) the 30-step parameters and
    buffers at 2 and 4 ranks are within 1e-5 (relative norm of all of them, float32) of 1
    rank's, and not bit-identical to the
    deterministic run's (the modes differ: dropout and micro-shard statistics)."""
    ref = _flat(finals[1][f"{model}_default"])
    for n in WORLD_SIZES[1:]:
        rel = np.linalg.norm(_flat(finals[n][f"{model}_default"]) - ref) / np.linalg.norm(ref)
        assert rel <= 1e-5, f"{model}: {n} ranks is {rel:.2e} (relative) from 1 rank"
    assert _differences(finals[1][f"{model}_default"], finals[1][f"{model}_deterministic"])


def _flat(state):
    """The floating-point entries of a state_dict as one float64 vector."""
    return np.concatenate([v.astype(np.float64).ravel() for k, v in sorted(state.items()) if v.dtype.kind == "f"])
