"""The flat optimizer layout (StateDictOptions(flatten_optimizer_state_dict=True)) under
fully_shard, run on every rank under ``mpiexec -n N python state_dict_checks.py RESULTS.json``.

Each check runs on all ranks through tests/rank_harness.py (each rank prints its report);
rank 0 writes ``{check: {rank: "ok" | error}}`` to RESULTS.json for test_fsdp_state_dict.py.
The model is test_fsdp_state_dict.py's mlp in float64 with fully_shard on each Linear and on
the root, and Adam over two groups; every rank steps on the same batch, so the sharded run is
the plain one (the averaged gradient is each rank's), which every rank also runs as the reference.
A check asserts only after its last collective: a rank that failed early would leave the
other waiting in an all-gather.
"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.nn as nn  # noqa: E402
from dtrain.distributed.checkpoint import (StateDictOptions, get_model_state_dict,  # noqa: E402
                                           get_optimizer_state_dict, get_state_dict, set_state_dict)
from dtrain.distributed.fsdp import fully_shard  # noqa: E402
from rank_harness import RankChecks, gathered  # noqa: E402

X = np.random.RandomState(0).randn(4, 3)
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias"]
SHAPES = {"0.weight": (4, 3), "0.bias": (4,), "2.weight": (2, 4), "2.bias": (2,)}
SETTINGS = 11  # Adam's hyperparameters in a group: lr, betas, eps, ... (torch's, the single-process test shows)
FULL_FLAT = StateDictOptions(full_state_dict=True, flatten_optimizer_state_dict=True)


def trained(shard, steps=2):
    """mlp() in float64 (fully_shard per Linear and on the root with ``shard``) and its Adam
    over two groups, after ``steps`` steps on X."""
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    if shard:
        fully_shard(model[0])
        fully_shard(model[2])
        fully_shard(model)
    opt = dtrain.optim.Adam([{"params": [model[0].weight], "lr": 0.5},
                             {"params": [model[0].bias, *model[2].parameters()]}], lr=0.1)
    train(model, opt, steps)
    return model, opt


def train(model, opt, steps=1):
    for _ in range(steps):
        model(dtrain.tensor(X)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()


def whole(model):
    """The model's whole parameters by name (gathered: collective for a fully_shard model)."""
    return {k: v.numpy().copy() for k, v in get_model_state_dict(model, options=StateDictOptions(
        full_state_dict=True)).items()}


def assert_same(ours, theirs, what):
    assert list(ours) == list(theirs), f"{what}: keys {list(ours)} != {list(theirs)}"
    for key, value in theirs.items():
        if isinstance(value, dtrain.Tensor):
            assert tuple(ours[key].shape) == tuple(value.shape), (what, key, ours[key].shape, value.shape)
            np.testing.assert_allclose(ours[key].numpy(), value.numpy(), rtol=1e-12, err_msg=f"{what}: {key}")
        else:
            assert ours[key] == value, (what, key, ours[key], value)


def check_full_flat_state_is_the_plain_models():
    """With full_state_dict, every rank's flat dict is the plain (unsharded) model's: the same
    4 x 3 state keys and 4 x 11 group keys, whole tensors of the parameters' shapes, equal
    values (1e-12)."""
    model, opt = trained(shard=True)
    flat = get_optimizer_state_dict(model, opt, options=FULL_FLAT)
    plain, plain_opt = trained(shard=False)
    reference = get_optimizer_state_dict(plain, plain_opt, options=StateDictOptions(flatten_optimizer_state_dict=True))
    assert len(flat) == len(NAMES) * (3 + SETTINGS), f"{len(flat)} entries, expected {len(NAMES) * (3 + SETTINGS)}"
    assert {k: tuple(flat[f"state.{k}.exp_avg"].shape) for k in NAMES} == SHAPES
    assert_same(flat, reference, "fully_shard's full flat state vs the plain model's")


def check_flat_round_trip_from_rank0():
    """full_state_dict + cpu_offload: the flat dict on rank 0 only ({} elsewhere); loaded into a
    fresh fully_shard model and Adam of other settings with broadcast_from_rank0, it gives back
    the same flat dict, and the next step ends at the original's parameters exactly."""
    model, opt = trained(shard=True)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, flatten_optimizer_state_dict=True)
    model_sd, flat = get_state_dict(model, opt, options=options)
    fresh, fresh_opt = trained(shard=True, steps=0)
    for group in fresh_opt.param_groups:
        group["lr"] = 0.01
    set_state_dict(fresh, fresh_opt, model_state_dict=model_sd, optim_state_dict=flat,
                   options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    lrs = [g["lr"] for g in fresh_opt.param_groups]
    loaded = get_optimizer_state_dict(fresh, fresh_opt, options=options)
    train(model, opt)
    train(fresh, fresh_opt)
    ours, theirs = whole(fresh), whole(model)
    rank = dtrain.comm.get_rank()
    assert (len(flat) > 0) == (rank == 0), f"rank {rank} got {len(flat)} entries"
    assert lrs == [0.5, 0.1], lrs
    assert_same(loaded, flat, "loaded back")
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def check_sharded_flat_round_trip():
    """full_state_dict=False: each rank's flat dict holds its own 1-D shards' state (the same
    keys on every rank); loaded into a fresh fully_shard model at the same world size, the next
    step ends at the original's parameters exactly."""
    model, opt = trained(shard=True)
    flat = get_optimizer_state_dict(model, opt, options=StateDictOptions(flatten_optimizer_state_dict=True))
    keys = gathered(sorted(flat))
    fresh, fresh_opt = trained(shard=True, steps=0)
    set_state_dict(fresh, fresh_opt, model_state_dict=get_model_state_dict(model), optim_state_dict=flat)
    shards = {k: tuple(p.shape) for k, p in model.named_parameters()}
    moments = {k: tuple(flat[f"state.{k}.exp_avg"].shape) for k in NAMES}
    train(model, opt)
    train(fresh, fresh_opt)
    ours, theirs = whole(fresh), whole(model)
    assert moments == shards, (moments, shards)
    assert all(k == keys[0] for k in keys), "the ranks' flat dicts have different keys"
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def main(path):
    """Run every check_* function on this rank; rank 0 writes each check's result per rank."""
    checks = RankChecks()
    for name in [name for name in globals() if name.startswith("check_")]:
        checks.run(name, globals()[name])
    checks.report(path)


if __name__ == "__main__":
    main(sys.argv[1])
