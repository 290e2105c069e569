"""DDP's non-finite gradient check (dtrain/parallel/nonfinite.py): a NaN planted on rank 1 at
step 7 is named with its rank, parameter and step in one log line from one rank; every rank
skips that step, so the replicas stay bitwise equal to each other and to a run without step 7
(each reduction strategy: in-place coalesced, bucket copy, a comm hook, ZeRO-2's reduce-scatter,
one rank); ``nonfinite="raise"`` ends the job; ``"ignore"`` keeps the old behaviour.

The multi-rank checks run in rank_nonfinite.py under ``mpiexec -n {2, 4}``; the whole jobs
("raise" exits 1 within seconds with the message; "skip" logs to stderr and exits 0) are the
fault suite's rows, tests/faults/test_nonfinite_faults.py."""
import logging
import sys

import numpy as np
import pytest

import dtrain
from comm_helpers import assert_all_checks_passed, require_mpi, run
from dtrain.optim.optimizer import register_optimizer_step_pre_hook
from dtrain.parallel import DistributedDataParallel as DDP
from rank_nonfinite import EXPECTED, PLANT_STEP, STEPS, Net, train

CHECKS = 14  # rank_nonfinite.CHECKS
GPU_CHECKS = 4  # rank_nonfinite.GPU_CHECKS


@pytest.mark.parametrize("world_size", [2, 4])
def test_nan_on_rank_1_at_step_7_is_named_and_skipped_everywhere(world_size):
    """On every strategy (in-place coalesced with SGD momentum and with Adam, bucket copy, an
    fp16 comm hook, ZeRO-2): rank 0 alone logs "step 7: non-finite gradient (nan) on rank 1 in
    'mid.weight'; all ranks skip this step"; every rank's parameters (and Adam's step count and
    moments) equal, bitwise, a run that leaves step 7 out, and equal rank 0's; inf on the two
    last ranks names the lower and lists the other; under join() a rank without data, shadowing,
    takes part in the search and logs; "ignore" lets the NaN into the weights and logs nothing."""
    result = run([require_mpi(), "-n", str(world_size), sys.executable, "tests/parallel/rank_nonfinite.py",
                  "checks"], timeout=120)
    assert_all_checks_passed(result, world_size, CHECKS)


@pytest.mark.gpu
def test_nan_is_named_and_skipped_over_nccl():
    """The same on GPUs over NCCL (rank r on GPU r; on a CPU, the tests' CuPy emulation): the
    in-place all-reduce with SGD and Adam, the bucket copy and the fp16 hook skip step 7 alike
    and name rank 1's 'mid.weight'."""
    if dtrain.cuda.device_count() < 1:
        pytest.skip("needs a GPU (or DTRAIN_CUPY_EMULATION=2)")
    result = run([require_mpi(), "-n", "2", sys.executable, "tests/parallel/rank_nonfinite.py", "nccl"], timeout=180)
    assert_all_checks_passed(result, 2, GPU_CHECKS)


def test_one_rank_skips_the_step_and_logs(world, caplog):
    """One rank (the SingleRank strategy: no reduction, the gradients checked where they are):
    the NaN at step 7 is logged and skipped; the weights equal the run without step 7."""
    with caplog.at_level(logging.WARNING, logger="dtrain.parallel"):
        model, _ = train(True, plant_ranks=(0,))
    assert [r.getMessage() for r in caplog.records] == [EXPECTED.replace("rank 1", "rank 0")]
    reference, _ = train(False, skip_step=PLANT_STEP)
    for (name, p), q in zip(model.module.named_parameters(), reference.parameters()):
        assert p.detach().numpy().tobytes() == q.detach().numpy().tobytes(), name


def test_skipped_step_leaves_grads_for_a_grad_scaler(world):
    """The skip keeps the non-finite averages in .grad until optimizer.step(): a GradScaler sees
    the inf itself, skips the step and lowers its scale, as without DDP."""
    dtrain.manual_seed(0)
    model = DDP(Net())
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1)
    scaler = dtrain.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    mask = np.zeros((16, 16), np.float32)
    mask[0, 0] = np.inf  # an inf in one element of mid.weight's gradient (the scaled loss overflowed there)
    loss = model(dtrain.ones(2, 6)).sum() + (model.module.mid.weight * dtrain.from_numpy(mask)).sum()
    scaler.scale(loss).backward()
    assert any(not np.isfinite(p.grad.numpy()).all() for p in model.parameters())
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 9
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)


def test_skip_drops_the_step_of_every_optimizer_holding_the_parameters(world):
    """Two optimizers over parts of one model (and one over another model): after a non-finite
    backward, both optimizers of the model update nothing, the other steps; the mark ends
    with the next synchronized backward."""
    dtrain.manual_seed(0)
    model, other = DDP(Net(), nonfinite="skip"), Net()
    head = dtrain.optim.SGD(model.module.out.parameters(), lr=0.1)
    body = dtrain.optim.SGD([*model.module.inp.parameters(), *model.module.mid.parameters()], lr=0.1)
    other_opt = dtrain.optim.SGD(other.parameters(), lr=0.1)
    for p in other.parameters():
        p.grad = dtrain.ones(*p.shape)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    x = np.ones((2, 6), np.float32)
    x[0, 0] = np.nan
    model(dtrain.from_numpy(x)).sum().backward()
    head.step(), body.step(), other_opt.step()
    assert all(p.grad is None for p in model.parameters())
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    assert all(p.grad is not None for p in other.parameters())
    model(dtrain.ones(2, 6)).sum().backward()  # a finite backward: the steps update again
    head.step()
    assert not np.array_equal(model.module.out.weight.detach().numpy(), before[-2])


def test_nonfinite_keyword_is_validated(world):
    """An unknown mode is refused in the constructor, quoting it and the allowed ones."""
    with pytest.raises(ValueError, match=r"nonfinite must be one of 'skip', 'raise' or 'ignore', got 'warn'"):
        DDP(Net(), nonfinite="warn")


def test_optimizer_step_pre_hook_runs_before_every_step_and_can_change_its_arguments():
    """register_optimizer_step_pre_hook (torch.optim.optimizer's): called with (optimizer, args,
    kwargs) before every optimizer class's step (the base one's and LBFGS's own); its (args,
    kwargs) replace the step's; remove() unregisters it."""
    p = dtrain.zeros(2, requires_grad=True)
    p.grad = dtrain.ones(2)
    seen = []

    def hook(optimizer, args, kwargs):
        seen.append(type(optimizer).__name__)
        if isinstance(optimizer, dtrain.optim.LBFGS):
            return (), {"closure": lambda: (p * p).sum()}  # the step gets a closure it was not given
        return None
    handle = register_optimizer_step_pre_hook(hook)
    try:
        dtrain.optim.SGD([p], lr=1.0).step()
        dtrain.optim.LBFGS([p]).step(None)
    finally:
        handle.remove()
    dtrain.optim.Adam([p]).step()
    assert seen == ["SGD", "LBFGS"]
    assert STEPS > PLANT_STEP  # the rank script's schedule plants inside the run
