"""ZeroRedundancyOptimizer: zero_checks.py runs every check under ``mpiexec -n {4, 2, 1}``
(the 4-rank job first: the 2- and 1-rank jobs resume from its checkpoint); each test below
asserts one check on every rank of every job. The comparison with PyTorch's own runs at 2
ranks, where torch is installed; argument errors are checked in this process, on a world of one."""
import json
import sys

import pytest

import dtrain
import dtrain.nn as nn
from comm_helpers import assert_all_checks_passed, output, require_mpi, run
from ddp_jobs import Job, passed
from dtrain.distributed.optim import ZeroRedundancyOptimizer

CHECKS = 7  # the check_* functions of zero_checks.py
WORLD_SIZES = (4, 2, 1)  # in this order: 4 writes the checkpoint the others resume from


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero")
    found = {}
    for n in WORLD_SIZES:
        folder = root / f"{n}ranks"
        folder.mkdir()
        path = folder / "results.json"
        result = run([require_mpi(), "-n", str(n), sys.executable, "tests/parallel/zero_checks.py", str(path),
                      str(folder), str(root / "4ranks")], timeout=120)
        assert path.exists(), output(result)  # a check that failed is reported by its own test
        found[n] = Job(n, result, json.loads(path.read_text()))
    return found


def each_job(jobs, check):
    for n in WORLD_SIZES:
        passed(jobs[n].results, check)


def test_every_rank_ran_every_check(jobs):
    """Each rank of the 4-, 2- and 1-rank jobs ran all 7 checks of zero_checks.py, and all passed."""
    for n in WORLD_SIZES:
        assert_all_checks_passed(jobs[n].process, n, CHECKS)


def test_adam_float64_equals_ddp_adam(jobs):
    """20 steps of ZeroRedundancyOptimizer(Adam) + DDP on the GPT example's model end within
    1e-10 of DDP + Adam in float64, equal on every rank; the consolidated state_dict has
    Adam's own layout and values."""
    each_job(jobs, "check_adam_float64_equals_ddp")


def test_adam_float32_bucket_view_equals_ddp_adam(jobs):
    """The same in float32 within 1e-5 relative, with parameters_as_bucket_view (the
    parameters are then views of one flat buffer)."""
    each_job(jobs, "check_adam_float32_bucket_view_equals_ddp")


def test_adamw_parameter_groups(jobs):
    """The GPT example's two AdamW groups (weight decay on the matrices only) equal DDP + AdamW."""
    each_job(jobs, "check_adamw_groups_bucket_view_float64")


def test_optimizer_state_is_sharded(jobs):
    """Each rank's measured state bytes <= 1.05/N of Adam's + the largest parameter's state;
    together the ranks hold exactly Adam's, each parameter's on one rank."""
    each_job(jobs, "check_state_is_sharded")


def test_checkpoint_saved_at_4_ranks_resumes_at_2_and_1(jobs):
    """A consolidated checkpoint saved at 4 ranks loads at 4, 2 and 1 ranks with the same
    parameters and optimizer state, and the next steps end where the uninterrupted run did."""
    each_job(jobs, "check_checkpoint_resume")


def test_add_param_group_scheduler_and_closure(jobs):
    """A group added mid-run, an LR scheduler and step(closure) behave as with plain Adam."""
    each_job(jobs, "check_add_param_group_scheduler_closure")


def test_equals_pytorchs_zero_redundancy_optimizer(tmp_path):
    """At 2 ranks, against PyTorch's ZeroRedundancyOptimizer on gloo (where torch is
    installed): the same partition, parameters (1e-10) and consolidated state_dict."""
    pytest.importorskip("torch")
    path = tmp_path / "results.json"
    result = run([require_mpi(), "-n", "2", sys.executable, "tests/parallel/zero_checks.py", str(path), "--pytorch"],
                 timeout=120)
    assert_all_checks_passed(result, 2, 1)
    passed(json.loads(path.read_text()), "pytorch_equals_dtrain")


def test_one_broadcast_per_rank_per_dtype(jobs):
    """With float32 and float64 parameters, in both layouts, a step broadcasts once per rank
    per dtype it owns, and the parameters equal plain Adam's."""
    each_job(jobs, "check_one_broadcast_per_rank_per_dtype")


# ---- argument errors, in this process -------------------------------------------------
@pytest.mark.parametrize("params", [[], iter([]), [{"params": []}, {"params": iter([])}]],
                         ids=["list", "iterator", "groups"])
def test_empty_params(world, params):
    """No parameter at all is a ValueError that says so."""
    with pytest.raises(ValueError, match="ZeroRedundancyOptimizer got an empty parameter list"):
        ZeroRedundancyOptimizer(params, dtrain.optim.Adam, lr=0.1)


@pytest.mark.parametrize("cls", [nn.Linear, "Adam", None], ids=["module", "string", "none"])
def test_optimizer_class_not_an_optimizer(world, cls):
    """optimizer_class must be an Optimizer subclass: the error quotes what was given."""
    with pytest.raises(TypeError, match="optimizer_class must be a subclass of dtrain.optim.Optimizer"):
        ZeroRedundancyOptimizer(nn.Linear(2, 2).parameters(), cls, lr=0.1)


def test_optimizer_instance_instead_of_class(world):
    params = list(nn.Linear(2, 2).parameters())
    with pytest.raises(TypeError, match="got Adam"):
        ZeroRedundancyOptimizer(params, dtrain.optim.Adam(params), lr=0.1)


def test_overlap_with_ddp_is_not_supported(world):
    with pytest.raises(NotImplementedError, match="overlap_with_ddp=True"):
        ZeroRedundancyOptimizer(nn.Linear(2, 2).parameters(), dtrain.optim.Adam, overlap_with_ddp=True)


def test_state_dict_before_consolidation_and_wrong_layout(world):
    """state_dict needs consolidate_state_dict first; a state of other groups is refused
    naming both layouts, and one with state for a parameter no group lists; a bad target
    rank is named."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    opt = ZeroRedundancyOptimizer(model.parameters(), dtrain.optim.Adam, lr=0.1)
    with pytest.raises(RuntimeError, match=r"consolidate_state_dict\(to=0\)"):
        opt.state_dict()
    with pytest.raises(ValueError, match="to=1 is not a rank of the group"):
        opt.consolidate_state_dict(to=1)
    other = dtrain.optim.Adam(model[0].parameters()).state_dict()
    with pytest.raises(ValueError, match=r"1 parameter groups of \[2\] parameters, but the optimizer has 1 of \[4\]"):
        opt.load_state_dict(other)
    stray = {"state": {7: {}}, "param_groups": [{"lr": 0.1, "params": [0, 1, 2, 3]}]}
    with pytest.raises(ValueError, match=r"state for parameters \[7\], which none of its parameter groups lists"):
        opt.load_state_dict(stray)


def test_bad_hyperparameter_is_the_local_optimizers_error(world):
    with pytest.raises(ValueError, match="lr"):
        ZeroRedundancyOptimizer(nn.Linear(2, 2).parameters(), dtrain.optim.Adam, lr=-1.0)


def test_an_empty_group_is_allowed(world):
    """Only no parameter at all is an error: an empty first group is kept, with its settings."""
    model = nn.Linear(3, 2)
    opt = ZeroRedundancyOptimizer([{"params": []}, {"params": model.parameters(), "lr": 0.2}], dtrain.optim.SGD,
                                  lr=0.1)
    model(dtrain.randn(2, 3)).sum().backward()
    before = model.bias.detach().numpy().copy()
    opt.step()
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
    assert abs(before - 0.2 * 2 - model.bias.detach().numpy()).max() < 1e-6  # the bias gradient: 2 rows


def test_world_of_one_is_plain_adam(world):
    """On one rank the optimizer is the local one: same steps, same state_dict, and loading
    it back restores the state."""
    dtrain.manual_seed(0)
    a = nn.Linear(4, 3).double()
    b = nn.Linear(4, 3).double()
    b.load_state_dict(a.state_dict())
    zero = ZeroRedundancyOptimizer(a.parameters(), dtrain.optim.Adam, parameters_as_bucket_view=True, lr=0.1)
    plain = dtrain.optim.Adam(b.parameters(), lr=0.1)
    x = dtrain.randn(5, 4, dtype=dtrain.float64)
    for model, opt in ((a, zero), (b, plain)):
        for _ in range(3):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    assert all((p.detach().numpy() == q.detach().numpy()).all() for p, q in zip(a.parameters(), b.parameters()))
    zero.consolidate_state_dict()
    mine, theirs = zero.state_dict(), plain.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    assert {k: sorted(v) for k, v in mine["state"].items()} == {k: sorted(v) for k, v in theirs["state"].items()}
    assert float(mine["state"][0]["step"]) == 3.0
    fresh = ZeroRedundancyOptimizer(a.parameters(), dtrain.optim.Adam, lr=0.5)
    fresh.load_state_dict(theirs)
    assert fresh.param_groups[0]["lr"] == 0.1 and float(fresh.optim.state[a.weight]["step"]) == 3.0


@pytest.mark.gpu
def test_mixed_devices(world):
    """Parameters on two devices: a ValueError naming both and where each first appears."""
    params = [dtrain.zeros(2, requires_grad=True), dtrain.zeros(2, device="cuda:0", requires_grad=True)]
    with pytest.raises(ValueError, match=r"one device, got parameters on cpu \(first at parameter 0\), "
                                         r"cuda:0 \(first at parameter 1\)"):
        ZeroRedundancyOptimizer(params, dtrain.optim.Adam, lr=0.1)
