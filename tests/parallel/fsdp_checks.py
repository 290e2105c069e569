"""fully_shard checks run on every rank under
``mpiexec -n N python fsdp_checks.py RESULTS.json FOLDER RESUME_FROM [CHECK]``.

Each check runs on all ranks through tests/rank_harness.py (each rank prints its report);
rank 0 writes ``{check: {rank: "ok" | error}}`` to RESULTS.json for test_fsdp.py. The model
is examples/gpt.py's GPT, small, with fully_shard on each block and on the root. Every step
trains on one global batch of G sequences; rank r of N takes rows r*G/N .. (r+1)*G/N, as
DDP's reference does, so both see the same data at 1, 2 and 4 ranks.
check_checkpoint_resume saves a checkpoint (and the parameters the uninterrupted run ends
with) to FOLDER and resumes from RESUME_FROM's, another job's; with CHECK, only that check runs.
"""
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
from dtrain.distributed.checkpoint import StateDictOptions, get_state_dict, set_state_dict  # noqa: E402
from dtrain.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard  # noqa: E402
from dtrain.examples.gpt import GPT  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402
from dtrain.utils.checkpoint import checkpoint  # noqa: E402
from rank_harness import RankChecks  # noqa: E402
from zero_checks import batches, gathered, on_rank0, rel, train  # noqa: E402

V, T = 24, 8  # zero_checks' vocabulary and sequence length (its batches() draws the tokens)
STEPS = 20
SAVE_AT, RESUME_STEPS = 3, 6  # the checkpoint's step, and the steps of the run it is saved in
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on rank 0 only


def gpt(dtype, n_layer=2, n_embd=16):
    dtrain.manual_seed(0)
    return GPT(V, T, n_layer, 2, n_embd).to(dtype)


def sharded_gpt(dtype, n_layer=2, n_embd=16, **kw):
    model = gpt(dtype, n_layer, n_embd)
    for block in model.blocks:
        fully_shard(block, **kw)
    return fully_shard(model, **kw)


def full_params(model):
    """The model's full parameters in state_dict order (gathered for a fully_shard model)."""
    return np.concatenate([v.numpy().ravel() for v in model.state_dict().values()])


def adam(params):
    return dtrain.optim.Adam(params, lr=0.01)


def fsdp_equals_ddp_adam(dtype, tol, **kw):
    """fully_shard (per block + root) + Adam == DDP + Adam over 20 steps: the full parameters
    within 1e-7 after the first step and ``tol`` (relative) after the last, equal on every
    rank. Returns both models and optimizers."""
    model, ref = sharded_gpt(dtype, **kw), DDP(gpt(dtype))
    opt, plain = adam(model.parameters()), adam(ref.parameters())
    for step, batch in enumerate(batches(STEPS)):
        train(model, opt, [batch])
        train(ref, plain, [batch])
        if step == 0:  # one step apart only by the rounding of the gradient sums
            first = rel(full_params(model), full_params(ref.module))
            assert first <= 1e-7, f"relative difference {first:.3g} from DDP + Adam after one step > 1e-7"
    mine = full_params(model)
    err = rel(mine, full_params(ref.module))
    assert err <= tol, f"relative difference {err:.3g} from DDP + Adam > {tol:g}"
    for rank, theirs in enumerate(gathered(mine)):
        np.testing.assert_array_equal(theirs, mine, err_msg=f"rank {rank}'s full parameters differ from this rank's")
    return model, opt, ref, plain


def check_adam_float64_equals_ddp():
    """Float64 within 1e-10; the model is still a GPT and an FSDPModule, and the parameters
    the optimizer steps are this rank's 1-D shards: over all ranks they hold each element of
    the model exactly once."""
    model, _, ref, _ = fsdp_equals_ddp_adam(np.float64, 1e-10)
    assert isinstance(model, GPT) and isinstance(model, FSDPModule) and isinstance(model.blocks[0], FSDPModule)
    mine = sum(p.numel() for p in model.parameters())
    assert all(p.dim() == 1 for p in model.parameters()), [tuple(p.shape) for p in model.parameters()]
    total = sum(p.numel() for p in ref.module.parameters())
    assert sum(gathered(mine)) == total, f"the shards hold {gathered(mine)} elements, the model {total}"


def check_adam_float32_equals_ddp_keep_unsharded():
    """Float32 within 1e-5 relative at 1 and 2 ranks, with reshard_after_forward=False (the
    full parameters stay from forward to backward; after backward every group is sharded
    again). At 4 ranks within 1e-4: MPI's reduce-scatter adds the 4 ranks' gradients in
    another order than DDP's all-reduce, and Adam carries the float32 rounding (6e-9 after
    step 1) to about 5e-5 after 20 steps; with the reduce-scatter done as DDP's all-reduce
    (sliced), the 4-rank run equals DDP exactly."""
    tol = 1e-5 if dist.get_world_size() <= 2 else 1e-4
    model, _, _, _ = fsdp_equals_ddp_adam(np.float32, tol, reshard_after_forward=False)
    if dist.get_world_size() > 2:  # the order of the sums is the whole difference: with DDP's, none
        reduce_scatter = dist.reduce_scatter_tensor
        dist.reduce_scatter_tensor = reduce_scatter_as_all_reduce
        try:
            fsdp_equals_ddp_adam(np.float32, 0.0)
        finally:
            dist.reduce_scatter_tensor = reduce_scatter
    for m in model.modules():
        if isinstance(m, FSDPModule):
            assert m._fsdp_state.group.state == "sharded", m._fsdp_state.group.state


def reduce_scatter_as_all_reduce(output, input, op, group=None, async_op=False):  # noqa: A002 (PyTorch's name)
    """reduce_scatter_tensor through an all-reduce of the whole input, as DDP reduces."""
    whole = input.copy()
    dist.all_reduce(whole, op=op, group=group)
    n = output.size
    output[:] = whole[dist.get_rank(group) * n:(dist.get_rank(group) + 1) * n]


def bytes_of(model, optimizer, params=None):
    """Measured bytes of parameters + gradients + optimizer state (of ``params``, default all)."""
    params = list(model.parameters()) if params is None else params
    state = sum(v.array.nbytes for p in params for v in optimizer.state.get(p, {}).values() if hasattr(v, "array"))
    return sum(p.array.nbytes + (p.grad.array.nbytes if p.grad is not None else 0) for p in params) + state


def check_memory_is_sharded():
    """After two steps, this rank's parameter + gradient + Adam-state bytes (measured on the
    shards) <= 1.1/N of DDP's + the largest block's; no full parameter is left allocated."""
    n = dist.get_world_size()
    model, ref = sharded_gpt(np.float32, n_layer=4, n_embd=32), DDP(gpt(np.float32, n_layer=4, n_embd=32))
    opt, plain = adam(model.parameters()), adam(ref.parameters())
    data = batches(2)
    train(model, opt, data)
    train(ref, plain, data)
    mine, full = bytes_of(model, opt), bytes_of(ref, plain)
    largest = max(bytes_of(ref, plain, list(block.parameters())) for block in ref.module.blocks)
    assert mine <= 1.1 * full / n + largest, f"{mine} bytes on this rank > 1.1 * {full} / {n} + {largest}"
    left = sum(f.array.nbytes for m in model.modules() if isinstance(m, FSDPModule) for f in m._fsdp_state.group.full)
    assert left == 0, f"{left} bytes of full parameters still allocated after the step"


def check_collectives_and_prefetch():
    """Per step each of the 3 groups (2 blocks + root) all-gathers twice (forward, backward)
    and reduce-scatters once (at 1 rank: no collective); from the second step on, the
    second block's all-gather is launched (prefetched) before the first block's forward."""
    model = sharded_gpt(np.float64)
    opt = adam(model.parameters())
    calls, original = [], (dist.all_gather_into_tensor, dist.reduce_scatter_tensor)
    before_block0 = []
    model.blocks[0].register_forward_pre_hook(
        lambda m, args: before_block0.append(sum(c == "gather" for c in calls)))

    def gather(*args, **kw):
        calls.append("gather")
        return original[0](*args, **kw)

    def scatter(*args, **kw):
        calls.append("scatter")
        return original[1](*args, **kw)
    dist.all_gather_into_tensor, dist.reduce_scatter_tensor = gather, scatter
    try:
        for step, batch in enumerate(batches(3)):
            before_block0.clear()
            train(model, opt, [batch])
            if dist.get_world_size() > 1:
                assert calls.count("gather") == 6 and calls.count("scatter") == 3, (step, calls)
                assert before_block0 == [2 if step == 0 else 3], (step, before_block0)
            else:
                assert calls == [], calls
            calls.clear()
    finally:
        dist.all_gather_into_tensor, dist.reduce_scatter_tensor = original


def check_mixed_precision():
    """A float64 model under MixedPrecisionPolicy(param_dtype=float32, reduce_dtype=float64):
    the blocks compute in float32, the shards, their gradients and Adam's state stay float64,
    and 10 steps stay within 1e-4 (relative) of float64 DDP + Adam."""
    policy = MixedPrecisionPolicy(param_dtype=dtrain.float32, reduce_dtype=dtrain.float64)
    model, ref = sharded_gpt(np.float64, mp_policy=policy), DDP(gpt(np.float64))
    seen = []
    model.blocks[0].ln_1.register_forward_hook(lambda m, args, out: seen.append((m.weight.dtype, out.dtype)))
    opt, plain = adam(model.parameters()), adam(ref.parameters())
    data = batches(10)
    train(model, opt, data)
    train(ref, plain, data)
    assert set(seen) == {(np.dtype(np.float32), np.dtype(np.float32))}, seen
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {np.dtype(np.float64)}
    err = rel(full_params(model), full_params(ref.module))
    assert err <= 1e-4, f"relative difference {err:.3g} from float64 DDP + Adam > 1e-4"


def check_state_dict_round_trip():
    """state_dict() is the unsharded model's (same keys, full tensors, equal values) on every
    rank; a plain model's state_dict loaded into a fresh fully_shard model gives the plain
    model's loss."""
    plain = gpt(np.float64)
    for p in plain.parameters():  # other weights than gpt()'s, so the load has to move them
        p.data = p.array + 0.01 * np.random.default_rng(3).standard_normal(p.shape)
    model = sharded_gpt(np.float64)
    model.load_state_dict(plain.state_dict())
    ours, theirs = model.state_dict(), plain.state_dict()
    assert list(ours) == list(theirs), (list(ours), list(theirs))
    for k in ours:
        assert tuple(ours[k].shape) == tuple(theirs[k].shape), (k, ours[k].shape, theirs[k].shape)
        np.testing.assert_array_equal(ours[k].numpy(), theirs[k].numpy(), err_msg=k)
    x, y = batches(1)[0]
    a, b = model(x, y)[1].item(), plain(x, y)[1].item()
    assert abs(a - b) <= 1e-12 * abs(b), (a, b)


class CheckpointedBlock(dtrain.nn.Module):
    """A block whose activations are recomputed in backward (fully_shard goes on this wrapper)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)


def check_activation_checkpointing_equals_ddp():
    """fully_shard on each checkpointed block (a wrapper whose forward is
    checkpoint(block, x)) and the root: 5 steps of Adam within 1e-10 of DDP + Adam in float64
    (the recomputation in backward runs with the block's parameters gathered)."""
    model, ref = gpt(np.float64), DDP(gpt(np.float64))
    model.blocks = dtrain.nn.ModuleList([CheckpointedBlock(b) for b in model.blocks])
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    opt, plain = adam(model.parameters()), adam(ref.parameters())
    data = batches(5)
    train(model, opt, data)
    train(ref, plain, data)
    err = rel(full_params(model), full_params(ref.module))
    assert err <= 1e-10, f"relative difference {err:.3g} from DDP + Adam > 1e-10"


def check_clip_grad_norm_equals_ddp():
    """nn.utils.clip_grad_norm_ over the shards returns DDP's total norm, the whole gradient's
    (the 2-, inf- and 1-norm, 1e-12 relative), on every rank, and clips to DDP's gradients:
    three clipped SGD steps end within 1e-12 of DDP's parameters."""
    model, ref = sharded_gpt(np.float64), DDP(gpt(np.float64))
    opt, plain = dtrain.optim.SGD(model.parameters(), lr=0.1), dtrain.optim.SGD(ref.parameters(), lr=0.1)
    for norm_type, batch in zip((2.0, math.inf, 1.0), batches(3)):
        for m, o in ((model, opt), (ref, plain)):
            o.zero_grad()
            m(*batch)[1].backward()
        ours = dtrain.nn.utils.clip_grad_norm_(model.parameters(), 0.05, norm_type).item()
        theirs = dtrain.nn.utils.clip_grad_norm_(ref.parameters(), 0.05, norm_type).item()
        assert theirs > 0.05, f"the {norm_type}-norm {theirs} is not clipped at 0.05: choose a smaller max_norm"
        assert abs(ours - theirs) <= 1e-12 * theirs, f"{norm_type}-norm {ours} over the shards, DDP's {theirs}"
        opt.step()
        plain.step()
    err = rel(full_params(model), full_params(ref.module))
    assert err <= 1e-12, f"relative difference {err:.3g} from DDP after clipped steps > 1e-12"


def same_state(ours, theirs):
    """Two named state dicts (model, or optimizer's ``state``): the same names and entries,
    equal values (whole tensors)."""
    assert list(ours) == list(theirs), (list(ours), list(theirs))
    for k, v in theirs.items():
        if isinstance(v, dict):
            same_state(ours[k], v)
        elif hasattr(v, "numpy"):
            assert tuple(ours[k].shape) == tuple(v.shape), (k, tuple(ours[k].shape), tuple(v.shape))
            np.testing.assert_array_equal(ours[k].numpy(), v.numpy(), err_msg=k)
        else:
            assert ours[k] == v, (k, ours[k], v)


def same_checkpoint(ours, theirs):
    """``(model_sd, optim_sd)`` pairs: equal states, the same parameter groups."""
    same_state(ours[0], theirs[0])
    same_state(ours[1]["state"], theirs[1]["state"])
    assert ours[1]["param_groups"] == theirs[1]["param_groups"], (ours[1]["param_groups"], theirs[1]["param_groups"])


def check_checkpoint_resume(folder, resume_from):
    """Saved at this world size after SAVE_AT steps of Adam: get_state_dict with whole tensors
    (rank 0 only; the others get {}), one dtrain.save file from rank 0. The checkpoint of
    ``resume_from`` (saved at another world size) loads here through set_state_dict with
    broadcast_from_rank0 (only rank 0 reads it): the model's and Adam's state read back equal
    to the file's exactly (Adam's moments whole, in the parameters' shapes), the next steps
    end within 1e-10 of that run's uninterrupted ones, and a plain GPT + Adam (no
    fully_shard) loads the same file to the same state."""
    rank = dist.get_rank()
    model = sharded_gpt(np.float64)
    opt = adam(model.parameters())
    train(model, opt, batches(SAVE_AT))
    model_sd, optim_sd = get_state_dict(model, opt, options=FULL)
    if rank == 0:
        assert tuple(optim_sd["state"]["blocks.0.attn.c_attn.weight"]["exp_avg"].shape) == (48, 16), "not whole"
        dtrain.save({"model": model_sd, "optim": optim_sd}, folder / "fsdp.dtr")
    else:
        assert model_sd == {} and optim_sd == {}, "a rank other than 0 got state with cpu_offload"
    train(model, opt, batches(RESUME_STEPS, SAVE_AT))
    final = full_params(model)
    if rank == 0:
        np.save(folder / "final.npy", final)
    dist.barrier()  # the folder to resume from is complete (this job's own, in a job resuming from itself)

    saved = dtrain.load(resume_from / "fsdp.dtr") if rank == 0 else {}
    resumed = sharded_gpt(np.float64)
    opt = adam(resumed.parameters())
    set_state_dict(resumed, opt, model_state_dict=saved.get("model", {}), optim_state_dict=saved.get("optim", {}),
                   options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    again = get_state_dict(resumed, opt, options=FULL)
    on_rank0(same_checkpoint, again, (saved.get("model"), saved.get("optim")))
    train(resumed, opt, batches(RESUME_STEPS, SAVE_AT))
    err = rel(full_params(resumed), np.load(resume_from / "final.npy"))
    assert err <= 1e-10, f"resumed run ends {err:.3g} (relative) from the uninterrupted one"

    saved = dtrain.load(resume_from / "fsdp.dtr")
    plain = gpt(np.float64)
    plain_opt = adam(plain.parameters())
    set_state_dict(plain, plain_opt, model_state_dict=saved["model"], optim_state_dict=saved["optim"],
                   options=StateDictOptions(full_state_dict=True))
    same_checkpoint(get_state_dict(plain, plain_opt, options=StateDictOptions(full_state_dict=True)),
                    (saved["model"], saved["optim"]))


def check_sharded_state_dict_round_trip():
    """With PyTorch's default options (full_state_dict=False) each rank gets its own 1-D shards
    and their Adam state, keyed by parameter name; loaded into a fresh fully_shard model at the
    same world size, the next step equals the original model's exactly."""
    model = sharded_gpt(np.float64)
    opt = adam(model.parameters())
    data = batches(SAVE_AT + 1)
    train(model, opt, data[:SAVE_AT])
    model_sd, optim_sd = get_state_dict(model, opt)
    shards = dict(model.named_parameters())
    assert {k: tuple(v.shape) for k, v in model_sd.items() if k in shards} == \
        {k: tuple(p.shape) for k, p in shards.items()}, "not this rank's shards"
    moments = {k: tuple(s["exp_avg"].shape) for k, s in optim_sd["state"].items()}
    assert moments == {k: tuple(p.shape) for k, p in shards.items()}, moments
    copies = ({k: v.numpy().copy() for k, v in model_sd.items()},
              {"state": {k: {n: dtrain.tensor(v.numpy().copy()) for n, v in s.items()} for k, s in optim_sd["state"].items()},
               "param_groups": optim_sd["param_groups"]})
    other = sharded_gpt(np.float64)
    other_opt = adam(other.parameters())
    set_state_dict(other, other_opt, model_state_dict={k: dtrain.tensor(v) for k, v in copies[0].items()},
                   optim_state_dict=copies[1])
    train(model, opt, data[SAVE_AT:])
    train(other, other_opt, data[SAVE_AT:])
    np.testing.assert_array_equal(full_params(other), full_params(model))


def main(path, folder, resume_from, only=None):
    """Run every check_* function (or ``only``) on this rank; rank 0 writes each check's
    result per rank."""
    checks = RankChecks()
    for name in [name for name in globals() if name.startswith("check_") and only in (None, name)]:
        checks.run(name, globals()[name], *((folder, resume_from) if name == "check_checkpoint_resume" else ()))
    report = {name: {} for name in checks.results}
    for rank, results in enumerate(gathered(checks.results)):
        for name, result in results.items():
            report[name][rank] = result
    if checks.rank == 0:
        Path(path).write_text(json.dumps(report, indent=1))
    checks.finish()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), *sys.argv[4:])
