"""ZeRO-2, ``DistributedDataParallel(..., gradient_sharding=True)`` with a
ZeroRedundancyOptimizer: zero2_checks.py runs every check under ``mpiexec -n {1, 2, 4}``;
each test below asserts one check on every rank of every job. Argument errors are checked
in this process, on a world of one."""
import json
import os
import sys

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from comm_helpers import assert_all_checks_passed, clean_env, output, require_mpi, run
from ddp_jobs import Job, passed
from dtrain.distributed.optim import ZeroRedundancyOptimizer
from dtrain.parallel import DistributedDataParallel as DDP
from dtrain.parallel.bucket_reduction import Bucket, shard_layout

CHECKS = 8  # the check_* functions of zero2_checks.py
NCCL_CHECKS = 4  # zero2_checks.NCCL_CHECKS
EMULATED = os.environ.get("DTRAIN_CUPY_EMULATION", "").strip() not in ("", "0")
WORLD_SIZES = (1, 2, 4)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero2")
    return {n: rank_job(n, root / f"results{n}.json") for n in WORLD_SIZES}


def rank_job(world_size, path, *args, env=None):
    """zero2_checks.py run on ``world_size`` ranks, writing its results to ``path``."""
    result = run([require_mpi(), "-n", str(world_size), sys.executable, "tests/parallel/zero2_checks.py", str(path),
                  *args], timeout=180, env=env)
    assert path.exists(), output(result)  # a check that failed is reported by its own test
    return Job(world_size, result, json.loads(path.read_text()))


def each_job(jobs, check):
    for job in jobs.values():
        passed(job.results, check)


def test_every_rank_ran_every_check(jobs):
    """Each rank of the 1-, 2- and 4-rank jobs ran all 8 checks of zero2_checks.py, and all passed."""
    for n, job in jobs.items():
        assert_all_checks_passed(job.process, n, CHECKS)


def test_clip_grad_norm_is_the_whole_gradients(jobs):
    """clip_grad_norm_ under ZeRO-2 returns DDP's norm (all-reduced from the ranks' owned
    gradients; 2, inf and 1) and clips the owned gradients to DDP's clipped ones (1e-12)."""
    each_job(jobs, "check_clip_grad_norm_equals_ddp")


def test_owned_gradients_equal_ddp(jobs):
    """Each rank's .grad are DDP's averages on the parameters its ZeroRedundancyOptimizer
    steps (1e-12 in float64, 1e-5 in float32), None on the others; every parameter has one owner."""
    each_job(jobs, "check_gradients_equal_ddp_on_owned_parameters")


def test_adam_float64_equals_ddp_adam(jobs):
    """20 steps of ZeRO-2 + ZeroRedundancyOptimizer(Adam) on the GPT example's model end
    within 1e-10 of DDP + Adam in float64, equal on every rank."""
    each_job(jobs, "check_adam_float64_equals_ddp_adam")


def test_adam_float32_bucket_views_equals_ddp_adam(jobs):
    """The same in float32 with both bucket views and several buckets: 1e-5 relative at 1 and
    2 ranks; at 4, 1e-4 (the float32 noise of MPI's reduce-scatter summing in another order
    than the all-reduce), and bit for bit with the reduce-scatter done as an all-reduce."""
    each_job(jobs, "check_adam_float32_bucket_views_equals_ddp_adam")


def test_no_sync_accumulation(jobs):
    """A micro-batch under no_sync() then one synchronized: the owned gradients are DDP's."""
    each_job(jobs, "check_no_sync_accumulation_equals_ddp")


def test_gradient_bytes_are_sharded(jobs):
    """After backward a rank holds <= 1/N of DDP's gradient bytes plus the largest parameter's."""
    each_job(jobs, "check_gradient_bytes_are_sharded")


def test_backward_without_zero_optimizer(jobs):
    """On several ranks, backward before any ZeroRedundancyOptimizer names what to build, and
    with one over only some parameters names those without an owner."""
    each_job(jobs, "check_backward_without_zero_optimizer")


def test_accumulating_onto_averages_is_refused(jobs):
    """A second synchronized backward without zero_grad raises naming zero_grad; zeroing in
    place is enough."""
    each_job(jobs, "check_accumulating_onto_averages_is_refused")


@pytest.mark.gpu
@pytest.mark.parametrize("world_size", [2, 4])
def test_over_nccl(world_size, tmp_path):
    """Over the NCCL backend, each rank on its GPU (on a CPU: the tests' CuPy emulation, one
    emulated GPU per rank): the owned gradients are DDP's, 20 steps of Adam end within
    1e-10 of DDP + Adam in float64, the gradient bytes are sharded, and clip_grad_norm_ is
    DDP's (its all-reduce on the device)."""
    require_mpi()
    if not EMULATED and dtrain.cuda.device_count() < world_size:
        pytest.skip(f"NCCL needs one GPU per rank: {world_size} ranks, {dtrain.cuda.device_count()} GPU(s)")
    env = clean_env(DTRAIN_CUPY_EMULATION=str(world_size)) if EMULATED else None
    job = rank_job(world_size, tmp_path / "results.json", "--backend", "nccl", env=env)
    assert_all_checks_passed(job.process, world_size, NCCL_CHECKS)
    assert sorted(job.results) == sorted(["check_gradients_equal_ddp_on_owned_parameters",
                                          "check_adam_float64_equals_ddp_adam", "check_gradient_bytes_are_sharded",
                                          "check_clip_grad_norm_equals_ddp"])


# ---- the layout and argument errors, in this process -----------------------------------
def test_shard_layout_groups_by_owner_and_pads():
    """Slots are grouped by owner, rank 0's first, in slot order within an owner; each
    owner's segment is padded to the largest."""
    params = [dtrain.zeros(3, requires_grad=True), dtrain.zeros(2, requires_grad=True),
              dtrain.zeros(2, 2, requires_grad=True)]
    bucket = Bucket(0, [0, 1, 2], params, allocate=False)
    assert bucket.buffer is None
    assert shard_layout(bucket, owners=[1, 0, 1], world_size=2) == ([7, 0, 10], 7)
    assert shard_layout(bucket, owners=[0, 0, 0], world_size=3) == ([0, 3, 5], 9)


def test_comm_hook_is_refused(world):
    ddp = DDP(nn.Linear(3, 2), gradient_sharding=True)
    with pytest.raises(RuntimeError, match="comm hook cannot be combined with gradient_sharding=True"):
        ddp.register_comm_hook(None, lambda state, bucket: None)


def test_find_unused_parameters_is_refused(world):
    with pytest.raises(ValueError, match="gradient_sharding=True does not support find_unused_parameters"):
        DDP(nn.Linear(3, 2), gradient_sharding=True, find_unused_parameters=True)


def test_join_is_refused(world):
    ddp = DDP(nn.Linear(3, 2), gradient_sharding=True)
    with pytest.raises(NotImplementedError, match="join is not supported with gradient_sharding=True"):
        ddp.join()


def test_one_rank_with_zero_optimizer_is_adam(world):
    """On one rank every gradient is this rank's: ZeRO-2 + ZeroRedundancyOptimizer(Adam)
    steps as plain Adam, bit for bit."""
    dtrain.manual_seed(0)
    a, b = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    b.load_state_dict(a.state_dict())
    ddp = DDP(a, gradient_sharding=True)
    zero = ZeroRedundancyOptimizer(ddp.parameters(), dtrain.optim.Adam, lr=0.1)
    plain = dtrain.optim.Adam(b.parameters(), lr=0.1)
    for x in [dtrain.randn(5, 4, dtype=dtrain.float64) for _ in range(3)]:
        for model, opt in ((ddp, zero), (b, plain)):
            opt.zero_grad()
            model(x).tanh().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
