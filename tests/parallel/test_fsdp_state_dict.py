"""dtrain.distributed.checkpoint.state_dict in one process (a world of one, conftest's
``world`` fixture): the layout by
parameter name, DDP's prefix left out, and each misuse a clear error. The resharding across
world sizes is checked under mpiexec by fsdp_checks.py (test_fsdp.py)."""
import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from dtrain.distributed.checkpoint import (StateDictOptions, get_optimizer_state_dict, get_state_dict,
                                           set_optimizer_state_dict, set_state_dict)
from dtrain.distributed.fsdp import fully_shard
from dtrain.distributed.optim import ZeroRedundancyOptimizer
from dtrain.parallel import DistributedDataParallel as DDP

FULL = StateDictOptions(full_state_dict=True)


def stepped(model, groups=None):
    """``model`` after one Adam step (``groups``: parameter groups instead of all parameters)."""
    opt = dtrain.optim.Adam(groups or model.parameters(), lr=0.1)
    model(dtrain.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    return opt


def mlp():
    dtrain.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_named_layout_and_ddp_prefix(world):
    """The optimizer state is keyed by parameter name, the groups list names; a DDP-wrapped
    model gives the same names as the plain one (no "module."), and its whole state has the
    parameters' shapes."""
    ddp = DDP(mlp())
    opt = stepped(ddp, [{"params": [ddp.module[0].weight], "lr": 0.5},
                        {"params": [ddp.module[0].bias, *ddp.module[2].parameters()]}])
    model_sd, optim_sd = get_state_dict(ddp, opt, options=FULL)
    assert list(model_sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [g["params"] for g in optim_sd["param_groups"]] == [["0.weight"], ["0.bias", "2.weight", "2.bias"]]
    assert optim_sd["param_groups"][0]["lr"] == 0.5
    assert tuple(optim_sd["state"]["2.weight"]["exp_avg"].shape) == (2, 4)


def test_full_state_of_a_sharded_model_loads_into_a_plain_one(world):
    """At one rank, fully_shard's shards are the parameters flattened: the whole state has
    the parameters' shapes and a plain model + Adam loads it to the same state."""
    model = mlp()
    fully_shard(model)
    opt = stepped(model)
    assert [tuple(p.shape) for p in model.parameters()] == [(12,), (4,), (8,), (2,)]
    model_sd, optim_sd = get_state_dict(model, opt, options=FULL)
    plain = mlp()
    plain_opt = dtrain.optim.Adam(plain.parameters(), lr=0.3)
    set_state_dict(plain, plain_opt, model_state_dict=model_sd, optim_state_dict=optim_sd, options=FULL)
    assert plain_opt.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(plain_opt.state[plain[0].weight]["exp_avg"].numpy(),
                                  opt.state[model[0].weight]["exp_avg"].numpy().reshape(4, 3))


def test_options_refused(world):
    with pytest.raises(ValueError, match="full_state_dict must be True when broadcast_from_rank0 is True"):
        StateDictOptions(broadcast_from_rank0=True)
    with pytest.raises(NotImplementedError, match="flatten_optimizer_state_dict"):
        StateDictOptions(flatten_optimizer_state_dict=True)
    model = mlp()
    opt = stepped(model)
    with pytest.raises(TypeError, match="options must be a StateDictOptions, got dict"):
        get_state_dict(model, opt, options={"full_state_dict": True})
    with pytest.raises(NotImplementedError, match="submodules"):
        get_optimizer_state_dict(model, opt, submodules={model[0]})


def test_zero_redundancy_optimizer_is_refused(world):
    """ZeroRedundancyOptimizer's state is spread by owner: the error says how to save it."""
    model = mlp()
    zero = ZeroRedundancyOptimizer(model.parameters(), dtrain.optim.Adam, lr=0.1)
    with pytest.raises(TypeError, match=r"consolidate_state_dict\(to=0\)"):
        get_optimizer_state_dict(model, zero)


def test_optimizer_over_other_parameters(world):
    """An optimizer holding a parameter the model does not have: a ValueError naming its group and shape."""
    model = mlp()
    opt = dtrain.optim.Adam([*model.parameters(), nn.Parameter(dtrain.zeros(5, 7))], lr=0.1)
    with pytest.raises(ValueError, match=r"parameter group 0 holds a parameter of shape \(5, 7\) that is not one"):
        get_optimizer_state_dict(model, opt)


def test_groups_or_shapes_that_differ(world):
    """Loading into other parameter groups, or state of other shapes: a ValueError naming the
    group or the parameter, the entry and both shapes."""
    model = mlp()
    _, optim_sd = get_state_dict(model, stepped(model), options=FULL)
    split = mlp()
    two_groups = dtrain.optim.Adam([{"params": split[0].parameters()}, {"params": split[2].parameters()}])
    with pytest.raises(ValueError, match=r"parameter group 0 \(2 parameters, first '0.weight'\) is not one group"):
        set_optimizer_state_dict(split, two_groups, optim_sd, options=FULL)
    wider = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    fully_shard(wider)
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter '0.weight' has shape \(4, 3\), but the parameter "
                                         r"has shape \(5, 3\)"):
        set_optimizer_state_dict(wider, dtrain.optim.Adam(wider.parameters()), optim_sd, options=FULL)


def test_ignore_frozen_params_and_cpu_offload(world):
    """ignore_frozen_params leaves the parameters with requires_grad=False out of both state
    dicts; cpu_offload gives copies (a later step does not change them)."""
    model = mlp()
    model[0].weight.requires_grad_(False)
    opt = stepped(model)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    model_sd, optim_sd = get_state_dict(model, opt, options=options)
    assert list(model_sd) == ["0.bias", "2.weight", "2.bias"]
    assert optim_sd["param_groups"][0]["params"] == ["0.bias", "2.weight", "2.bias"]
    before = model_sd["2.weight"].numpy().copy(), optim_sd["state"]["2.weight"]["exp_avg"].numpy().copy()
    model(dtrain.randn(4, 3)).sum().backward()
    opt.step()
    np.testing.assert_array_equal(model_sd["2.weight"].numpy(), before[0])
    np.testing.assert_array_equal(optim_sd["state"]["2.weight"]["exp_avg"].numpy(), before[1])
