"""Rank script: SyncBatchNorm where one rank's batch is empty, run by
test_sync_batchnorm_empty.py as ``mpiexec -n 2 python tests/parallel/rank_sync_batchnorm_empty.py``.

The rank without samples contributes a zero count; the statistics come from the other rank
(as PyTorch's SyncBatchNorm). Each check compares, in float64, against one process's
BatchNorm on the concatenated batch (which is the non-empty rank's batch): the outputs, the
running statistics on every rank, the input gradient, and the weight and bias gradients
summed over the ranks (what DDP would average); every value on every rank is finite. The
checks run and report through tests/rank_harness.py (``rank R: all 4 checks passed``).
"""
import numpy as np

import dtrain
import dtrain.comm as dist
import dtrain.nn as nn
from dtrain.parallel import SyncBatchNorm
from rank_harness import RankChecks, rel

checks = RankChecks(backend="mpi")
RANK = checks.rank
C, STEPS = 3, 3


def close(name, got, want):
    assert np.all(np.isfinite(got)), f"rank {RANK}: {name} is not finite: {got}"
    assert got.shape == want.shape, f"rank {RANK}: {name} has shape {got.shape}, expected {want.shape}"
    err = rel(got, want)
    assert err <= 1e-12, f"rank {RANK}: {name} differs from BatchNorm on the concatenated batch by {err:.3g}"


def summed(a):
    a = np.array(a)
    dist.all_reduce(a)
    return a


def empty_batch_on(empty_rank, trailing, momentum=0.1):
    """Rank ``empty_rank`` has no samples of shape (C, *trailing); the other has 5."""
    bn = SyncBatchNorm(C, momentum=momentum).double()
    ref = nn.BatchNorm1d(C, momentum=momentum).double() if len(trailing) < 2 else nn.BatchNorm2d(C).double()
    with dtrain.no_grad():
        for module in (bn, ref):
            module.weight.copy_(dtrain.tensor(np.linspace(0.5, 2.0, C)))
            module.bias.copy_(dtrain.tensor(np.linspace(-1.0, 1.0, C)))
    rng = np.random.default_rng(7)
    for step in range(STEPS):
        batch = rng.standard_normal((5, C, *trailing)) * 3 + 1
        mix = rng.standard_normal(batch.shape)  # the loss sum(out * mix) gives every output its own gradient
        mine = batch[:0] if RANK == empty_rank else batch
        x, ref_x = dtrain.tensor(mine, requires_grad=True), dtrain.tensor(batch, requires_grad=True)
        out, ref_out = bn(x), ref(ref_x)
        (out * dtrain.tensor(mix[:len(mine)])).sum().backward()
        (ref_out * dtrain.tensor(mix)).sum().backward()
        close(f"output of step {step}", out.detach().numpy(), ref_out.detach().numpy()[:len(mine)])
        close(f"input gradient of step {step}", x.grad.numpy(), ref_x.grad.numpy()[:len(mine)])
        for name in ("weight", "bias"):
            got = summed(getattr(bn, name).grad.numpy())
            close(f"{name} gradient (summed over ranks) after step {step}", got, getattr(ref, name).grad.numpy())
        for name in ("running_mean", "running_var"):
            close(f"{name} after step {step}", getattr(bn, name).numpy(), getattr(ref, name).numpy())
    assert int(bn.num_batches_tracked) == STEPS, f"num_batches_tracked {int(bn.num_batches_tracked)}, expected {STEPS}"


checks.run("empty batch on rank 1, (N, C) input", empty_batch_on, 1, ())
checks.run("empty batch on rank 0, (N, C, L) input", empty_batch_on, 0, (4,))
checks.run("empty batch on rank 1, (N, C, H, W) input", empty_batch_on, 1, (2, 3))
checks.run("empty batch on rank 0, cumulative average (momentum None)", empty_batch_on, 0, (), None)
checks.finish()
