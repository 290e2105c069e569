"""Rank script for test_fsdp_nonfinite.py: fully_shard's non-finite check with a NaN (or inf)
planted in one rank's gradient at one step.

    mpiexec -n N python tests/parallel/rank_fsdp_nonfinite.py   # every check, rank_harness report

rank_nonfinite.py's Net (float64) with fully_shard on ``inp``, on ``mid`` and on the root
(which owns ``out``), Adam; rank r trains on its own batches. The NaN is planted on rank 1 at step 7 by :class:`Plant`
(one element of the weight's gradient, as rank_nonfinite.py's ``(weight * mask).sum()``).
The reference run leaves step 7 out entirely; both are compared bitwise: the full parameters
(gathered) and this rank's Adam state (its shards' moments and step count).
"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain.distributed.fsdp import fully_shard  # noqa: E402
from dtrain.parallel.nonfinite import NonFiniteGradientError  # noqa: E402
from rank_harness import RankChecks  # noqa: E402
from rank_nonfinite import B, D, EXPECTED, K, PLANT_RANK, PLANT_STEP, STEPS, Net, Records  # noqa: E402

CHECKS = 4


def sharded_net(**options):
    dtrain.manual_seed(0)
    net = Net().double()
    fully_shard(net.inp)
    fully_shard(net.mid)
    return fully_shard(net, **options)


class Plant(dtrain.autograd.Function):
    """0 in forward; in backward, the incoming gradient times ``mask`` into ``w``'s gradient
    (so one element turns non-finite there and nowhere else). Added to a module's output
    inside its forward, while fully_shard has the full parameters installed: they exist only
    then, and backward gathers them again before that gradient arrives."""

    def forward(self, w, mask):
        self.mask = mask
        return w.reshape(-1)[:1].sum() * 0  # a finite zero (w is finite)

    def backward(self, g):
        return g * self.mask


def train(plant, skip_step=None, value=float("nan"), where="mid.weight", plant_ranks=(PLANT_RANK,), **options):
    """STEPS steps of Adam on the sharded Net; ``plant``: add ``value`` to ``where``'s gradient
    (element 0) on ``plant_ranks`` at PLANT_STEP; ``skip_step``: leave that step out."""
    model = sharded_net(**options)
    opt = dtrain.optim.Adam(model.parameters(), lr=1e-2)
    rank = dist.get_rank()
    rng = np.random.default_rng(100 + rank)
    xs, ys = rng.standard_normal((STEPS, B, D)), rng.integers(0, K, (STEPS, B))
    owner, name = where.split(".")

    def plant_term(module, args, output):
        if plant and step == PLANT_STEP and rank in plant_ranks:
            weight = getattr(module, name)
            mask = np.zeros(weight.shape)
            mask.reshape(-1)[0] = value
            return output + Plant.apply(weight, mask=mask)
        return None
    getattr(model, owner).register_forward_hook(plant_term, prepend=True)  # before fully_shard reshards
    for step in range(STEPS):
        if step == skip_step:
            continue
        opt.zero_grad()
        loss = F.cross_entropy(model(dtrain.from_numpy(xs[step])), dtrain.from_numpy(ys[step]))
        loss.backward()
        opt.step()
    return model, opt


def snapshot(model, opt):
    """The full parameters (gathered: collective) and this rank's Adam state, as bytes."""
    params = {n: v.numpy().tobytes() for n, v in model.state_dict().items()}
    state = {(k, key): np.asarray(v.numpy() if hasattr(v, "numpy") else v).tobytes()
             for k, p in enumerate(opt.param_groups[0]["params"]) for key, v in sorted(opt.state[p].items())}
    return params, state


def assert_logged(records, expected):
    want = [expected] if dist.get_rank() == 0 else []
    assert records.messages == want, f"logged {records.messages}, expected {want}"
    records.messages.clear()


def check_skip_adam(records):
    """rank 0 alone logs the DDP line; every rank's full parameters and own Adam state equal,
    bitwise, the run without step 7 (Adam's step count included), and the ranks agree."""
    model, opt = train(True)
    assert_logged(records, EXPECTED)
    params, state = snapshot(model, opt)
    for n, a in params.items():
        assert np.isfinite(np.frombuffer(a)).all(), f"{n} is not finite"
    reference = snapshot(*train(False, skip_step=PLANT_STEP))
    assert params == reference[0], f"parameters differ from the run without step {PLANT_STEP}"
    assert state == reference[1], f"Adam state differs from the run without step {PLANT_STEP}"
    assert any(key == "step" for _, key in state), "no Adam state"
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, params)
    assert all(p == everyone[0] for p in everyone), "the ranks' parameters differ"


def check_inf_on_two_ranks_in_the_root_group(records):
    """inf on the two last ranks in out.bias (the root's own group): the lower is named, the other listed."""
    n = dist.get_world_size()
    train(True, value=float("inf"), where="out.bias", plant_ranks=(n - 2, n - 1))
    assert_logged(records, f"step {PLANT_STEP}: non-finite gradient (inf) on rank {n - 2} in 'out.bias' (also on "
                           f"ranks [{n - 1}]); all ranks skip this step")


def check_raise(records):
    """nonfinite="raise": every rank raises from backward at step 7 with the message; nothing logged."""
    try:
        train(True, nonfinite="raise")
    except NonFiniteGradientError as e:
        want = f"{EXPECTED.split(';')[0]}; fully_shard(nonfinite='raise') ends the job"
        assert str(e) == want, f"raised {e}, expected {want}"
    else:
        raise AssertionError("nonfinite='raise' did not raise")
    assert records.messages == [], records.messages


def check_ignore(records):
    """nonfinite="ignore": the NaN reaches the weights (as PyTorch's FSDP), nothing is logged."""
    model, _ = train(True, nonfinite="ignore")
    assert records.messages == [], records.messages
    assert np.isnan(model.state_dict()["mid.weight"].numpy()).any(), "the NaN did not reach the weights"


def main():
    checks = RankChecks()
    records = Records()
    for check in (check_skip_adam, check_inf_on_two_ranks_in_the_root_group, check_raise, check_ignore):
        checks.run(check.__name__, check, records)
    assert len(checks.results) == CHECKS
    checks.finish()


if __name__ == "__main__":
    sys.exit(main())
