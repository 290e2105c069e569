"""dtrain.distributed.checkpoint.state_dict in one process (a world of one, conftest's
``world`` fixture): the layout by
parameter name, DDP's prefix left out, the options against torch's own get_state_dict, and
each misuse a clear error. The resharding across world sizes is checked under mpiexec by
fsdp_checks.py (test_fsdp.py); the flat optimizer layout under fully_shard at 2 ranks by
state_dict_checks.py (the last tests here)."""
import json
import sys
import warnings

import numpy as np
import pytest

try:  # the test oracle: the comparisons with torch skip without it, the rest runs
    import torch
    import torch.distributed.checkpoint.state_dict as torch_sd
except ModuleNotFoundError as missing:
    if missing.name != "torch":
        raise
    torch = torch_sd = None

import dtrain
import dtrain.nn as nn
from comm_helpers import assert_all_checks_passed, output, require_mpi, run
from ddp_jobs import passed
from dtrain.distributed.checkpoint import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                           get_state_dict, set_model_state_dict, set_optimizer_state_dict,
                                           set_state_dict)
from dtrain.distributed.fsdp import fully_shard
from dtrain.distributed.optim import ZeroRedundancyOptimizer
from dtrain.parallel import DistributedDataParallel as DDP

FULL = StateDictOptions(full_state_dict=True)
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch (the test oracle) is not installed")


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
    model = mlp()
    opt = stepped(model)
    with pytest.raises(TypeError, match="options must be a StateDictOptions, got dict"):
        get_state_dict(model, opt, options={"full_state_dict": True})
    with pytest.raises(ValueError, match=r"the optimizer state dict is empty \(.*broadcast_from_rank0=True"):
        set_optimizer_state_dict(model, opt, {})


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


@needs_torch
def test_ignore_frozen_params_and_cpu_offload(world):
    """ignore_frozen_params leaves the parameters with requires_grad=False out of the model's
    state dict and leaves the optimizer's as it is (its group still names the frozen one), as
    torch's, so it loads back into the same optimizer; cpu_offload gives copies (a later step
    does not change them)."""
    model = mlp()
    model[0].weight.requires_grad_(False)
    opt = stepped(model)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    model_sd, optim_sd = get_state_dict(model, opt, options=options)
    twin, twin_opt = torch_twin(model, [{"params": list(model.parameters())}])
    twin[0].weight.requires_grad_(False)
    theirs = torch_sd.get_state_dict(twin, twin_opt, options=torch_sd.StateDictOptions(ignore_frozen_params=True))
    assert list(model_sd) == list(theirs[0]) == ["0.bias", "2.weight", "2.bias"]
    assert optim_sd["param_groups"][0]["params"] == theirs[1]["param_groups"][0]["params"] == \
        ["0.weight", "0.bias", "2.weight", "2.bias"]
    set_optimizer_state_dict(model, opt, optim_sd, options=options)
    before = model_sd["2.weight"].numpy().copy(), optim_sd["state"]["2.weight"]["exp_avg"].numpy().copy()
    model(dtrain.randn(4, 3)).sum().backward()
    opt.step()
    np.testing.assert_array_equal(model_sd["2.weight"].numpy(), before[0])
    np.testing.assert_array_equal(optim_sd["state"]["2.weight"]["exp_avg"].numpy(), before[1])


# ---- against torch's own get_state_dict, and the flat optimizer layout -------------------------
FLAT = StateDictOptions(flatten_optimizer_state_dict=True)
X = np.random.RandomState(0).randn(4, 3)


def torch_twin(model, groups):
    """torch's mlp() in float64 with ``model``'s weights, and a torch Adam over the same
    ``groups`` (dicts of ``model``'s parameters and their settings)."""
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    twin.load_state_dict({k: torch.tensor(v.detach().numpy()) for k, v in model.state_dict().items()})
    by_id = {id(p): q for p, q in zip(model.parameters(), twin.parameters())}
    return twin, torch.optim.Adam([{**g, "params": [by_id[id(p)] for p in g["params"]]} for g in groups], lr=0.1)


def step(model, opt):
    """One Adam step of ``model`` (dtrain's or torch's) on X."""
    x = dtrain.tensor(X) if isinstance(model, nn.Module) else torch.tensor(X)
    model(x).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()


def two_groups(model):
    return [{"params": [model[0].weight], "lr": 0.5}, {"params": [model[0].bias, *model[2].parameters()]}]


def same(ours, theirs):
    """The same keys in the same order, equal values (tensors within 1e-12 of torch's)."""
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            np.testing.assert_allclose(ours[key].numpy(), value.numpy(), rtol=1e-12, err_msg=key)
        else:
            assert ours[key] == value, (key, ours[key], value)


@needs_torch
def test_flat_optimizer_state_is_torchs(world):
    """flatten_optimizer_state_dict: after the same Adam step over the same two groups, the flat
    dict has torch's keys in torch's order ("state.<name>.<key>", "param_groups.<name>.<setting>")
    and its values; loaded into a fresh model and Adam of other settings, the next step equals
    the original's exactly (and torch's within 1e-12)."""
    model = mlp().double()
    opt = dtrain.optim.Adam(two_groups(model), lr=0.1)
    twin, twin_opt = torch_twin(model, two_groups(model))
    step(model, opt)
    step(twin, twin_opt)
    flat = get_optimizer_state_dict(model, opt, options=FLAT)
    same(flat, torch_sd.get_optimizer_state_dict(twin, twin_opt,
                                                 options=torch_sd.StateDictOptions(flatten_optimizer_state_dict=True)))
    assert len(flat) == 4 * 3 + 4 * 11 and flat["param_groups.0.weight.lr"] == 0.5
    fresh = mlp().double()
    fresh_opt = dtrain.optim.Adam([{"params": [fresh[0].weight]}, {"params": [fresh[0].bias, *fresh[2].parameters()]}],
                                  lr=0.01)
    set_state_dict(fresh, fresh_opt, model_state_dict=get_model_state_dict(model), optim_state_dict=flat)
    assert [g["lr"] for g in fresh_opt.param_groups] == [0.5, 0.1]
    step(model, opt)
    step(fresh, fresh_opt)
    step(twin, twin_opt)
    for p, q, t in zip(fresh.parameters(), model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
        np.testing.assert_allclose(p.detach().numpy(), t.detach().numpy(), rtol=1e-12)


def test_flat_state_loads_by_name(world):
    """A flat dict loads by the names of the optimizer's own parameters: an optimizer over the
    last layer only (a pipeline stage) takes its entries and leaves the others unread; one
    group over parameters saved with different settings, or parameters it lacks, is a
    ValueError naming them; nested state flattens to dotted keys and back; a list refused."""
    model = mlp().double()
    opt = dtrain.optim.Adam(two_groups(model), lr=0.1)
    step(model, opt)
    flat = get_optimizer_state_dict(model, opt, options=FLAT)
    stage = dtrain.optim.Adam(model[2].parameters(), lr=0.01)
    set_optimizer_state_dict(model, stage, flat)
    assert stage.param_groups[0]["lr"] == 0.1 and len(stage.state) == 2
    np.testing.assert_array_equal(stage.state[model[2].weight]["exp_avg"].numpy(),
                                  flat["state.2.weight.exp_avg"].numpy())
    with pytest.raises(ValueError, match=r"parameters '0.weight' and '0.bias' of the optimizer's parameter group 0 "
                                         r"were saved with different \['lr'\]"):
        set_optimizer_state_dict(model, dtrain.optim.Adam(model.parameters()), flat)
    with pytest.raises(ValueError, match=r"no 'param_groups.<name>.\*' entries for \['2.bias'\] \(1 of the 2 "):
        set_optimizer_state_dict(model, stage, {k: v for k, v in flat.items()
                                                if not k.startswith("param_groups.2.bias.")})
    opt.state[model[2].bias]["extra"] = {"k": dtrain.ones(2)}
    nested = get_optimizer_state_dict(model, opt, options=FLAT)
    assert "state.2.bias.extra.k" in nested
    set_optimizer_state_dict(model, stage, nested)
    assert list(stage.state[model[2].bias]["extra"]) == ["k"]
    opt.state[model[2].bias]["extra"] = [1, 2]
    with pytest.raises(NotImplementedError, match=r"the state '2.bias' holds 'extra' of type list; only tensors"):
        get_optimizer_state_dict(model, opt, options=FLAT)


@needs_torch
def test_submodules_are_deprecated_as_torchs(world):
    """submodules: torch's FutureWarning, once per call; the model's entries of those
    submodules, with or without their prefix, as torch's keys; the optimizer's state whole (as
    torch's); a module outside the model a ValueError. A state dict keyed by submodules loads
    under their names, with torch's FutureWarning (one keyed by another module: a ValueError)."""
    model = mlp()
    opt = stepped(model)
    twin, twin_opt = torch_twin(model, [{"params": list(model.parameters())}])
    for keep in (True, False):
        options = StateDictOptions(keep_submodule_prefixes=keep)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model_sd, optim_sd = get_state_dict(model, opt, submodules={model[2]}, options=options)
        with pytest.warns(FutureWarning, match="Getting submodules only"):
            theirs = torch_sd.get_state_dict(twin, twin_opt, submodules={twin[2]},
                                             options=torch_sd.StateDictOptions(keep_submodule_prefixes=keep))
        assert [(w.category, w.filename) for w in caught] == [(FutureWarning, __file__)]
        assert "Getting submodules only model/optim state_dict is deprecated" in str(caught[0].message)
        assert list(model_sd) == list(theirs[0]) == (["2.weight", "2.bias"] if keep else ["weight", "bias"])
        assert list(optim_sd["state"]) == list(theirs[1]["state"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match=r"1 of the 2 modules given are not submodules"):
        get_model_state_dict(model, submodules={model[0], nn.Linear(1, 1)})
    with pytest.warns(FutureWarning, match=r"Passing model_state_dict as a ``Dict\[nn.Module"):
        missing, unexpected = set_model_state_dict(model, {model[2]: {k: v * 0 for k, v in model_sd.items()}},
                                                   options=StateDictOptions(strict=False))
    assert (missing, unexpected) == (["0.weight", "0.bias"], [])
    assert not model[2].weight.detach().numpy().any()
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match=r"keyed by modules, and a Linear among its "
                                                                      r"keys is not a submodule of the model"):
        set_model_state_dict(model, {nn.Linear(4, 2): model_sd})


@needs_torch
def test_strict_asks_for_each_trainable_parameters_state(world):
    """strict (the default): a nested optimizer state that lacks a trainable parameter's entry
    is torch's RuntimeError (torch raises it for the same dict), loaded with strict=False; an
    empty one (an optimizer saved before its first step) loads. Unlike torch, reading a fresh
    optimizer's state does not step it (its state stays {}: see state_dict.py)."""
    model = mlp().double()
    opt = dtrain.optim.Adam(two_groups(model), lr=0.1)
    assert get_optimizer_state_dict(model, opt)["state"] == {} and len(opt.state) == 0
    set_optimizer_state_dict(model, dtrain.optim.Adam(two_groups(model)), get_optimizer_state_dict(model, opt))
    twin, twin_opt = torch_twin(model, two_groups(model))
    step(model, opt)
    step(twin, twin_opt)
    ours, theirs = get_optimizer_state_dict(model, opt), torch_sd.get_optimizer_state_dict(twin, twin_opt)
    del ours["state"]["2.bias"], theirs["state"]["2.bias"]
    message = r"Missing optimizer state for parameter '2.bias' in checkpoint"
    with pytest.raises(RuntimeError, match=message):
        torch_sd.set_optimizer_state_dict(twin, torch.optim.Adam(twin.parameters()), theirs)
    with pytest.raises(RuntimeError, match=message):
        set_optimizer_state_dict(model, dtrain.optim.Adam(two_groups(model)), ours)
    fresh = dtrain.optim.Adam(two_groups(model))
    set_optimizer_state_dict(model, fresh, ours, options=StateDictOptions(strict=False))
    assert model[2].bias not in fresh.state and len(fresh.state) == 3


# ---- the flat layout under fully_shard: state_dict_checks.py under mpiexec -n 2 ----------------
RANK_CHECKS = ("check_full_flat_state_is_the_plain_models", "check_flat_round_trip_from_rank0",
               "check_sharded_flat_round_trip")


@pytest.fixture(scope="module")
def flat_job(tmp_path_factory):
    """state_dict_checks.py on 2 ranks: the finished process and rank 0's results."""
    path = tmp_path_factory.mktemp("state_dict") / "results.json"
    result = run([require_mpi(), "-n", "2", sys.executable, "tests/parallel/state_dict_checks.py", str(path)],
                 timeout=120)
    assert path.exists(), output(result)  # a check that failed is reported by its own test
    return result, json.loads(path.read_text())


def test_every_rank_ran_every_flat_check(flat_job):
    """Both ranks ran the 3 checks of state_dict_checks.py, and all passed."""
    assert_all_checks_passed(flat_job[0], 2, len(RANK_CHECKS))


@pytest.mark.parametrize("check", RANK_CHECKS)
def test_flat_check(flat_job, check):
    """The check passed on both ranks (its docstring in state_dict_checks.py says what it shows)."""
    passed(flat_job[1], check)
