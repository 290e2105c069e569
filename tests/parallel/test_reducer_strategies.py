"""The Reducer's strategies (dtrain/parallel/bucket_reduction.py) one by one, and DDP's
buckets of different sizes taking turns in the shared-memory all-reduce's window."""
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from comm_helpers import clean_env, output, require_mpi, run
from dtrain.parallel import DistributedDataParallel as DDP
from dtrain.parallel.bucket_reduction import Bucket, BucketCopy, InPlaceCoalesced, SingleRank, choose_strategy
from dtrain.parallel.comm_hooks import Future, allreduce_hook, fp16_compress_hook


def reducer_like(world_size, hook=allreduce_hook, as_view=False):
    return SimpleNamespace(hook=hook, world_size=world_size, as_view=as_view, group=None, params=[],
                           div_factor=world_size, hook_state=None, buckets=[], nonfinite=None)


def test_strategy_follows_hook_world_size_and_bucket_view():
    """One rank with the default hook: SingleRank (even with gradient_as_bucket_view); several
    ranks with the default hook: InPlaceCoalesced; a comm hook or gradient_as_bucket_view: BucketCopy."""
    assert type(choose_strategy(reducer_like(1))) is SingleRank
    assert type(choose_strategy(reducer_like(1, as_view=True))) is SingleRank
    assert type(choose_strategy(reducer_like(4))) is InPlaceCoalesced
    assert type(choose_strategy(reducer_like(4, as_view=True))) is BucketCopy
    assert type(choose_strategy(reducer_like(1, hook=fp16_compress_hook))) is BucketCopy
    assert choose_strategy(reducer_like(4)).scale == 0.25


def test_in_place_coalesced_reduces_grads_where_they_are(world):
    """A contiguous .grad is reduced in its own array (same object, no copy); a non-contiguous
    one and a missing one go through their bucket slots and are written back, the missing one
    as a new array (zeros: an unused parameter contributes nothing)."""
    params = [dtrain.zeros(3, 4, requires_grad=True), dtrain.zeros(4, 3, requires_grad=True),
              dtrain.zeros(5, requires_grad=True)]
    contiguous = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    strided = np.arange(12.0, dtype=np.float32).reshape(3, 4).T  # (4, 3), not C-contiguous
    params[0].grad, params[1].grad = dtrain.from_numpy(contiguous), dtrain.from_numpy(strided)
    bucket = Bucket(0, [0, 1, 2], params)
    strategy = InPlaceCoalesced(None, params, scale=0.5)  # one rank: the sum is this rank's values x 0.5
    for slot, p in enumerate(params):
        strategy.stage(bucket, slot, p.grad)
    strategy.launch(bucket)
    strategy.write_back(bucket, strategy.finish(bucket), used=None)
    assert params[0].grad.array is contiguous
    np.testing.assert_array_equal(contiguous, np.arange(12.0).reshape(3, 4) * 0.5)
    assert params[1].grad.array is strided  # written back into its own array
    np.testing.assert_array_equal(strided, np.arange(12.0).reshape(3, 4).T * 0.5)
    np.testing.assert_array_equal(params[2].grad.numpy(), np.zeros(5))
    assert not np.shares_memory(params[2].grad.array, bucket.buffer)


def test_in_place_coalesced_leaves_grads_unused_everywhere(world):
    """With find_unused_parameters' counts, a parameter no rank used keeps .grad as it was."""
    params = [dtrain.zeros(2, requires_grad=True), dtrain.zeros(2, requires_grad=True)]
    params[0].grad = dtrain.from_numpy(np.array([2.0, 4.0], np.float32))
    bucket = Bucket(0, [0, 1], params)
    strategy = InPlaceCoalesced(None, params, scale=1.0)
    for slot, p in enumerate(params):
        strategy.stage(bucket, slot, p.grad)
    strategy.launch(bucket)
    strategy.write_back(bucket, strategy.finish(bucket), used=np.array([1, 0]))
    np.testing.assert_array_equal(params[0].grad.numpy(), [2.0, 4.0])
    assert params[1].grad is None


def doubling_hook(state, bucket):
    buf = bucket.buffer()
    buf *= 2
    return Future(None, buf)


def test_bucket_copy_with_hook_and_bucket_view(world):
    """A comm hook's result is written back; with gradient_as_bucket_view every .grad is a view
    of its bucket's buffer, holding the hook's values."""
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    plain = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    plain.load_state_dict(model.state_dict())
    ddp = DDP(model, gradient_as_bucket_view=True)
    ddp.register_comm_hook(None, doubling_hook)
    x = dtrain.tensor(np.random.default_rng(0).standard_normal((5, 4)))
    ddp(x).sum().backward()
    plain(x).sum().backward()
    assert isinstance(ddp.reducer.strategy, BucketCopy)
    buffers = [b.buffer for b in ddp.reducer.buckets]
    for p, q in zip(ddp.module.parameters(), plain.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), 2 * q.grad.numpy(), rtol=1e-15)
        assert sum(np.shares_memory(p.grad.array, buf) for buf in buffers) == 1


# Every all-reduce through shared memory (DTRAIN_SHM_MIN_BYTES=0): DDP's buckets of different
# sizes take turns in one window (a barrier at every change of layout keeps the calls apart).
SHARED_WINDOW_JOB = """
import numpy as np
import dtrain, dtrain.comm as dist, dtrain.nn as nn
from dtrain.parallel import DistributedDataParallel as DDP
dist.init_process_group()
rank, n = dist.get_rank(), dist.get_world_size()
dtrain.manual_seed(0)
model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 4)).double()
reference = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 4)).double()
reference.load_state_dict(model.state_dict())
ddp = DDP(model, bucket_cap_mb=0.0005)  # buckets of 2 to 3 sizes
rng = np.random.default_rng(0)
for step in range(4):
    xs = [dtrain.tensor(rng.standard_normal((6, 30))) for _ in range(n)]
    ddp.zero_grad(); reference.zero_grad()
    ddp(xs[rank]).sum().backward()
    (sum(reference(x).sum() for x in xs) / n).backward()
    assert len({b.buffer.size for b in ddp.reducer.buckets}) >= 2, ddp.reducer.bucket_indices()
    for p, q in zip(ddp.module.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12, atol=1e-15)
print(f"rank {rank}: ok")
dist.destroy_process_group()
"""


@pytest.mark.parametrize("n", [2, 4])
def test_ddp_buckets_take_turns_in_the_shared_memory_window(n):
    """DDP's gradients equal the single-process average over 4 steps at 2 and 4 ranks while
    buckets of 2 or 3 sizes alternate in the shared-memory all-reduce's one window."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", str(n), sys.executable, "-c", SHARED_WINDOW_JOB], timeout=120,
                 env=clean_env(DTRAIN_SHM_MIN_BYTES="0"))
    assert result.returncode == 0, output(result)
    # the ranks' lines may interleave
    assert sorted(int(r) for r in re.findall(r"rank (\d+): ok", result.stdout)) == list(range(n)), output(result)
