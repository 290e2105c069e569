"""fully_shard's non-finite gradient check (dtrain/distributed/fsdp/nonfinite.py, reusing
dtrain/parallel/nonfinite.py's message, error and step hook): a NaN planted on rank 1 at step 7
is named with its rank, parameter and step in one log line from one rank; every rank skips
that step, so parameters and Adam state equal, bitwise (float64), a run without step 7;
``nonfinite="raise"`` raises on every rank; ``"ignore"`` lets the NaN through.

The multi-rank checks run in rank_fsdp_nonfinite.py under ``mpiexec -n {2, 4}``; the mode's
errors and the one-rank paths are checked in this process (conftest's world of one)."""
import logging
import sys

import numpy as np
import pytest

import dtrain
import dtrain.nn.functional as F
from comm_helpers import assert_all_checks_passed, require_mpi, run
from dtrain.distributed.fsdp import fully_shard
from dtrain.parallel.nonfinite import NonFiniteGradientError
from rank_fsdp_nonfinite import CHECKS, Plant, sharded_net, train
from rank_nonfinite import EXPECTED, PLANT_STEP, Net


@pytest.mark.parametrize("world_size", [2, 4])
def test_nan_on_rank_1_at_step_7_is_named_and_skipped_everywhere(world_size):
    """With Adam: rank 0 alone logs "step 7: non-finite gradient (nan) on rank 1 in 'mid.weight';
    all ranks skip this step"; every rank's full parameters and own Adam state equal, bitwise, the
    run without step 7; inf on the two last ranks in the root's own group names the lower and
    lists the other; "raise" raises that message on every rank; "ignore" lets the NaN through."""
    result = run([require_mpi(), "-n", str(world_size), sys.executable, "tests/parallel/rank_fsdp_nonfinite.py"],
                 timeout=120)
    assert_all_checks_passed(result, world_size, CHECKS)


def test_one_rank_skips_the_step_and_logs(world, caplog):
    """One rank: the NaN at step 7 is logged naming rank 0 and skipped; parameters and Adam
    state equal the run without step 7."""
    with caplog.at_level(logging.WARNING, logger="dtrain.parallel"):
        model, opt = train(True, plant_ranks=(0,))
    assert [r.getMessage() for r in caplog.records] == [EXPECTED.replace("rank 1", "rank 0")]
    reference, ref_opt = train(False, skip_step=PLANT_STEP)
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert a.numpy().tobytes() == b.numpy().tobytes(), name
    for p, q in zip(model.parameters(), reference.parameters()):
        for key, v in opt.state[p].items():
            assert np.asarray(getattr(v, "numpy", lambda: v)()).tobytes() == \
                np.asarray(getattr(ref_opt.state[q][key], "numpy", lambda: ref_opt.state[q][key])()).tobytes(), key


def test_raise_on_one_rank(world):
    with pytest.raises(NonFiniteGradientError, match=r"^step 7: non-finite gradient \(nan\) on rank 0 in 'mid.weight'; "
                                                     r"fully_shard\(nonfinite='raise'\) ends the job$"):
        train(True, plant_ranks=(0,), nonfinite="raise")


def test_accumulated_nonfinite_gradient_is_still_caught(world, caplog):
    """A second backward without zero_grad() after a non-finite one: its own gradients are
    finite, but .grad still holds the NaN: the check (on the shards' .grad after the
    reduction) catches it and says so, and the step is skipped again."""
    model = sharded_net()
    opt = dtrain.optim.Adam(model.parameters(), lr=1e-2)
    mask = np.zeros((16, 16))
    mask[0, 0] = np.nan
    handle = model.mid.register_forward_hook(lambda m, a, out: out + Plant.apply(m.weight, mask=mask), prepend=True)
    x, y = dtrain.from_numpy(np.ones((4, 6))), dtrain.from_numpy(np.zeros(4, np.int64))
    with caplog.at_level(logging.WARNING, logger="dtrain.parallel"):
        F.cross_entropy(model(x), y).backward()
        handle.remove()
        before = [p.detach().numpy().copy() for p in model.parameters()]
        F.cross_entropy(model(x), y).backward()
        opt.step()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "step 0: non-finite gradient (nan) on rank 0 in 'mid.weight'; all ranks skip this step"
    assert messages[1] == ("step 1: non-finite gradient in 'mid.weight' after the reduce-scatter though every rank's "
                           "own gradients of this backward were finite: their sum overflowed, or a non-finite "
                           "gradient accumulated from an earlier backward is still in .grad; all ranks skip this step")
    assert len(messages) == 2
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    assert opt.state == {} or all(not s for s in opt.state.values())


def test_nonfinite_keyword_is_validated(world):
    """An unknown mode is refused at the call, quoting it and the allowed ones."""
    net = Net().double()
    with pytest.raises(ValueError, match=r"fully_shard: nonfinite must be one of 'skip', 'raise' or 'ignore', "
                                         r"got 'warn'"):
        fully_shard(net, nonfinite="warn")


def test_conflicting_modes_in_one_tree_are_refused(world):
    """Two different explicit modes in one tree: one backward takes one decision, so the first
    forward refuses it, naming both calls; None on the blocks takes the root's value."""
    net = Net().double()
    fully_shard(net.inp, nonfinite="raise")
    fully_shard(net.mid)
    fully_shard(net, nonfinite="skip")
    with pytest.raises(ValueError, match=r"one tree's calls ask nonfinite='skip' \(on the root\) and "
                                         r"nonfinite='raise' \(on 'inp'\): one backward takes one decision"):
        net(dtrain.from_numpy(np.ones((2, 6))))
