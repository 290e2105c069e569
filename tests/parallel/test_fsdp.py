"""fully_shard: fsdp_checks.py runs every check under ``mpiexec -n {2, 4, 1}``, in that
order: each job saves a checkpoint and resumes from the one before it (2 from its own, 4
from 2's, 1 from 4's; a fourth, 2-rank job resumes from 4's). Each test below asserts one
check on every rank of every job. Argument errors are checked in this process, on a world
of one."""
import json
import sys

import numpy as np

import pytest

import dtrain
import dtrain.nn as nn
from comm_helpers import assert_all_checks_passed, output, require_mpi, run
from ddp_jobs import Job, passed
from dtrain.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from dtrain.parallel import DistributedDataParallel as DDP

CHECKS = 10  # the check_* functions of fsdp_checks.py (PROPERTIES below)
WORLD_SIZES = (2, 4, 1)  # in this order: each job resumes from the checkpoint of the one before
each_world_size = pytest.mark.parametrize("n", WORLD_SIZES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fsdp")


@pytest.fixture(scope="module")
def jobs(folder):
    """The finished 2-, 4- and 1-rank jobs, by world size."""
    found, previous = {}, 2
    for n in WORLD_SIZES:
        found[n] = launch(n, folder, resume_from=previous)
        previous = n
    return found


def launch(n, root, resume_from, *only):
    """fsdp_checks.py on ``n`` ranks, saving into ``root/{n}ranks`` (a second job of one size:
    ``{n}ranks-again``) and resuming from ``root/{resume_from}ranks``."""
    folder = root / f"{n}ranks"
    folder = folder.with_name(f"{folder.name}-again") if folder.exists() else folder
    folder.mkdir()
    path = folder / "results.json"
    result = run([require_mpi(), "-n", str(n), sys.executable, "tests/parallel/fsdp_checks.py", str(path),
                  str(folder), str(root / f"{resume_from}ranks"), *only], timeout=120)
    assert path.exists(), output(result)  # a check that failed is reported by its own test
    return Job(n, result, json.loads(path.read_text()))


@each_world_size
def test_every_rank_ran_every_check(jobs, n):
    """Each rank of the job ran all 6 checks of fsdp_checks.py, and all passed."""
    assert_all_checks_passed(jobs[n].process, n, CHECKS)


# each check of fsdp_checks.py (its docstring says more) and the property it shows
PROPERTIES = {
    "check_adam_float64_equals_ddp": "fully_shard per block + root, 20 steps of Adam on the GPT example's model, "
                                     "within 1e-10 of DDP + Adam in float64; the optimizer steps the shards",
    "check_adam_float32_equals_ddp_keep_unsharded": "the same in float32 (1e-5 relative; 1e-4 at 4 ranks), with "
                                                    "reshard_after_forward=False",
    "check_memory_is_sharded": "parameter + gradient + Adam-state bytes per rank <= 1.1/N of DDP's + the "
                               "largest block's",
    "check_collectives_and_prefetch": "two all-gathers and one reduce-scatter per group per step; the next "
                                      "block's all-gather launched before the current block's forward",
    "check_mixed_precision": "param_dtype=float32 computes in float32, shards, gradients and state stay float64",
    "check_state_dict_round_trip": "state_dict() is the unsharded model's; load_state_dict takes full tensors",
    "check_checkpoint_resume": "get_state_dict(full_state_dict=True) saved at this world size; the previous job's "
                               "checkpoint (2->2, 2->4, 4->1) resumes here with the same parameters and Adam state, "
                               "and the next steps end where that run did (1e-10); a plain GPT + Adam loads it too",
    "check_activation_checkpointing_equals_ddp": "fully_shard on checkpointed blocks == DDP + Adam (1e-10, float64)",
    "check_clip_grad_norm_equals_ddp": "clip_grad_norm_ over the shards is DDP's (the whole gradient's norm: 2, inf, "
                                       "1), and the clipped steps DDP's",
    "check_sharded_state_dict_round_trip": "the default (sharded) state dicts load back at the same world size",
}


@each_world_size
@pytest.mark.parametrize("check", PROPERTIES)
def test_check(jobs, n, check):
    """The check passed on every rank of the job (PROPERTIES says what it shows)."""
    passed(jobs[n].results, check)


def test_checkpoint_saved_at_4_ranks_resumes_at_2(jobs, folder):
    """The 4-rank job's checkpoint resumes in a 2-rank job (4->2), as check_checkpoint_resume
    says, on every rank."""
    job = launch(2, folder, 4, "check_checkpoint_resume")
    assert_all_checks_passed(job.process, 2, 1)
    passed(job.results, "check_checkpoint_resume")


# ---- argument errors, in this process (conftest's world fixture: a world of one) ----------
def mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_module_wrapped_by_ddp(world):
    """DDP and fully_shard do not combine: either way round, a ValueError that says so."""
    with pytest.raises(ValueError, match="wrapped by DistributedDataParallel"):
        fully_shard(DDP(mlp()))
    outer = nn.Sequential(DDP(mlp()))
    with pytest.raises(ValueError, match=r"wrapped by DistributedDataParallel \(0\)"):
        fully_shard(outer)


def test_mixed_dtypes_in_one_group(world):
    """One call's parameters are one flat buffer: two dtypes is a ValueError naming both."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2).double())
    with pytest.raises(ValueError, match=r"must share a dtype, got float32 \(e.g. Linear.weight\), float64"):
        fully_shard(model)
    fully_shard(model[1])  # each dtype in its own call works
    fully_shard(model)
    assert {p.dtype for p in model.parameters()} == {dtrain.float32, dtrain.float64}


def test_applied_twice_or_top_down(world):
    """A second call on the same module, or a call on a child after its parent's, is refused."""
    model = fully_shard(mlp())
    with pytest.raises(ValueError, match="already applied"):
        fully_shard(model)
    with pytest.raises(ValueError, match="apply fully_shard bottom-up"):
        fully_shard(model[0])


def test_bad_arguments(world):
    with pytest.raises(TypeError, match="expects a dtrain.nn.Module, got list"):
        fully_shard([nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="mp_policy must be a MixedPrecisionPolicy"):
        fully_shard(mlp(), mp_policy={"param_dtype": dtrain.float32})
    with pytest.raises(NotImplementedError, match="offload_policy"):
        fully_shard(mlp(), offload_policy=object())
    with pytest.raises(ValueError, match="param_dtype must be a floating dtype"):
        MixedPrecisionPolicy(param_dtype=dtrain.int64)


def sgd_steps(model, x, steps=3):
    """``steps`` SGD steps (lr 0.1) on the loss ``model(x).pow(2).sum()``."""
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()


def test_world_of_one_is_the_plain_module(world):
    """On one rank the module keeps its class (isinstance), its shards are its parameters
    flattened, and SGD steps give the plain module's parameters exactly."""
    dtrain.manual_seed(0)
    a, b = mlp().double(), mlp().double()
    b.load_state_dict(a.state_dict())
    fully_shard(a[0])
    fully_shard(a)
    assert isinstance(a, nn.Sequential) and isinstance(a, FSDPModule) and type(a).__name__ == "FSDPSequential"
    assert [tuple(p.shape) for p in a.parameters()] == [(12,), (4,), (8,), (2,)]
    x = dtrain.randn(5, 3, dtype=dtrain.float64)
    for model in (a, b):
        sgd_steps(model, x)
    for k, v in b.state_dict().items():
        assert (a.state_dict()[k].numpy() == v.numpy()).all(), k


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.unused, self.b = nn.Linear(3, 4), nn.Linear(2, 2), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(self.a(x).tanh())


def test_parameterless_root_and_unused_parameters(world):
    """A root whose blocks hold every parameter works; a parameter the forward does not use
    keeps .grad None (as FSDP2), the used ones get the plain model's gradients, and every
    group is sharded again after backward."""
    dtrain.manual_seed(1)
    plain = nn.Sequential(WithUnused(), WithUnused())
    model = nn.Sequential(WithUnused(), WithUnused())
    model.load_state_dict(plain.state_dict())
    for block in model:
        fully_shard(block)
    fully_shard(model)
    x = dtrain.randn(5, 3)
    for m in (model, plain):
        m(x).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), model.parameters()):
        if "unused" in name:
            assert p.grad is None and q.grad is None, name
        else:
            assert (q.grad.numpy() == p.grad.numpy().ravel()).all(), name
    assert [m._fsdp_state.group.state for m in (model, *model)] == ["sharded"] * 3


def test_eval_forward_and_keep_vars_state_dict(world):
    """A forward under no_grad leaves the module sharded even with reshard_after_forward=False
    (the parameters an optimizer is built on stay the shards), and state_dict(keep_vars=True)
    gives Parameters holding the full values after the call."""
    dtrain.manual_seed(2)
    plain = mlp()
    model = mlp()
    model.load_state_dict(plain.state_dict())
    fully_shard(model, reshard_after_forward=False)
    with dtrain.no_grad():
        model(dtrain.randn(2, 3))
    assert [p.dim() for p in model.parameters()] == [1, 1, 1, 1]
    kept = model.state_dict(keep_vars=True)
    assert all(isinstance(v, nn.Parameter) for v in kept.values())
    for k, v in plain.state_dict().items():
        assert (kept[k].detach().numpy() == v.numpy()).all(), k


class Checkpointed(nn.Module):
    """``inner`` run through utils.checkpoint; ``before`` (if given) before it, outside."""

    def __init__(self, inner, before=None):
        super().__init__()
        self.inner, self.before = inner, before

    def forward(self, x):
        from dtrain.utils.checkpoint import checkpoint
        return checkpoint(self.inner, self.before(x) if self.before is not None else x, use_reentrant=False)


def test_activation_checkpointing_around_a_whole_module(world):
    """fully_shard on a wrapper whose forward is all checkpointed: the recomputation brings
    every parameter's gradient while the group is gathered for backward; the gradients and
    three SGD steps equal the plain model's exactly."""
    dtrain.manual_seed(3)
    plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    wrapped = nn.Sequential(Checkpointed(nn.Sequential(nn.Linear(3, 4), nn.Tanh())), nn.Linear(4, 1))
    wrapped.load_state_dict(dict(zip(wrapped.state_dict(), plain.state_dict().values())))
    fully_shard(wrapped[0])
    fully_shard(wrapped)
    x = dtrain.randn(5, 3)
    for model in (plain, wrapped):
        sgd_steps(model, x)
    assert all(p.grad is not None for p in wrapped.parameters())
    for (k, v), ours in zip(plain.state_dict().items(), wrapped.state_dict().values()):
        np.testing.assert_array_equal(ours.numpy(), v.numpy(), err_msg=k)


def test_activation_checkpointing_around_part_of_a_module_is_refused(world):
    """A group whose forward reaches some of its parameters and uses others only inside
    utils.checkpoint: those gradients arrive after the group reduced, a RuntimeError that
    names the cause and the fix. (Had the checkpointed part run last in the group's
    forward, its recomputation would come after the group resharded: a shape error.)"""
    model = nn.Sequential(Checkpointed(nn.Linear(3, 3), before=nn.Linear(3, 3)), nn.Linear(3, 1))
    fully_shard(model[0])
    fully_shard(model)
    with pytest.raises(RuntimeError, match="checkpointing around part of a fully_shard module's forward.*wrap the whole"):
        model(dtrain.randn(2, 3)).sum().backward()


def test_gathered_weights_are_released_between_forward_and_backward(world):
    """On the host, resharding after forward gives back the pages of the gathered buffer the
    graph's saved views still hold (dtrain.tensor.memory counts none of the 16 KiB weight
    between forward and backward); the gather before backward fills it again, so the
    gradients equal the plain model's exactly."""
    from dtrain.tensor import memory
    dtrain.manual_seed(4)
    plain = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    model.load_state_dict(plain.state_dict())
    fully_shard(model[0])
    fully_shard(model)
    x = dtrain.randn(8, 64)
    with memory.track():
        model(x).sum().backward()  # the first step makes the buffers
        for p in model.parameters():
            p.grad = None
        before = memory.memory_allocated()
        loss = model(x).sum()
        held = memory.memory_allocated() - before
        assert held < 64 * 64 * 4, f"{held} bytes alive after forward: the gathered weight is still counted"
        loss.backward()
    plain(x).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), model.parameters()):
        np.testing.assert_array_equal(q.grad.numpy(), p.grad.numpy().ravel(), err_msg=name)
