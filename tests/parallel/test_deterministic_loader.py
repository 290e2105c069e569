"""The ordinary program is deterministic across world sizes: DistributedSampler + DataLoader
(shuffle) + DistributedDataParallel(micro_shard_size=2) in deterministic mode (issue 17).

sampler_layout_checks.py trains the reference CNN (BatchNorm, dropout) for 30 steps through
the loader at 4 ranks and at 2 (straight, with gradient accumulation, and resumed from the
4-rank job's step-17 checkpoint), and here in one process at 1 rank (resumed from the 2-rank
job's checkpoint); the final states are compared with ``array_equal``.
"""
import sys

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from comm_helpers import assert_all_checks_passed, require_mpi, run
from dtrain.data import DataLoader, DistributedSampler, TensorDataset
from dtrain.parallel import DistributedDataParallel as DDP

import sampler_layout_checks as layout

# parameters only: BatchNorm's running statistics are updated once per forward, so a split
# into more accumulated forwards changes them (docs/reproducibility.md), not the parameters


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """The 4-rank job, then the 2-rank one resumed from its checkpoint: {world size: folder}."""
    mpiexec = require_mpi()
    out = {}
    for n, checks in ((4, 2), (2, 4)):
        folder = out[n] = tmp_path_factory.mktemp(f"loader{n}")
        resume = [str(out[4] / "stop17.ckpt")] if n == 2 else []
        result = run([mpiexec, "-n", str(n), sys.executable, "tests/parallel/sampler_layout_checks.py", str(folder),
                      *resume], timeout=180)
        assert_all_checks_passed(result, n, checks)
    return out


def _load(path):
    return dict(np.load(path))


def _differ(a, b):
    assert a.keys() == b.keys()
    return [k for k in a if not np.array_equal(a[k], b[k])]


def test_cnn_through_the_loader_same_bits_at_1_2_4_ranks(jobs, world, tmp_path):
    """Final state bit-identical at 1, 2 and 4 ranks, straight and across the resumes 4 -> 2
    -> 1 (step 17, mid-epoch), and with two accumulated forwards per step (at 1 and 2 ranks):
    parameters and BatchNorm's running statistics (one update per step from all its micro-shards,
    however they are split into passes)."""
    for name, fn, args in layout.checks(str(tmp_path), str(jobs[2] / "stop17.ckpt")):
        fn(*args)
    ref = _load(tmp_path / "straight.npz")
    assert np.isfinite(np.concatenate([v.ravel() for v in ref.values()])).all()
    runs = {(4, "straight"): jobs[4], (2, "straight"): jobs[2], (2, "resumed"): jobs[2], (1, "resumed"): tmp_path}
    for (n, name), folder in runs.items():
        assert not _differ(ref, _load(folder / f"{name}.npz")), f"{name} at {n} ranks"
    for accumulated in (tmp_path / "accumulated.npz", jobs[2] / "accumulated.npz"):
        assert not _differ(ref, _load(accumulated)), f"{accumulated.parent.name}: accumulated"


def test_a_last_batch_that_is_no_whole_number_of_micro_shards_is_named(world):
    """An epoch's last partial batch (9 samples, batch_size 4: 1 row left) cannot be cut into
    micro-shards of 2: DDP's error names the rows and the size, and drop_last as the way out."""
    data = TensorDataset(dtrain.randn(9, 3))
    loader = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, shuffle=True))
    net = DDP(nn.Linear(3, 2), micro_shard_size=2)
    shapes = []
    with pytest.raises(ValueError, match=r"batch has 1 rows .* not a multiple of 2.*drop_last=True"):
        for (x,) in loader:
            shapes.append(x.shape[0])
            net(x).sum().backward()
    assert shapes == [4, 4, 1]
