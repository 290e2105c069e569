"""ZeroRedundancyOptimizer checks run on every rank under
``mpiexec -n N python zero_checks.py RESULTS.json FOLDER RESUME_FROM``.

Each check runs on all ranks through tests/rank_harness.py (each rank prints its report);
rank 0 writes ``{check: {rank: "ok" | error}}`` to RESULTS.json for test_zero.py. The model
is examples/gpt.py's GPT, small. Every step trains on one global batch of G sequences;
rank r of N takes rows r*G/N .. (r+1)*G/N, so 1, 2 and 4 ranks train on the same batches.
check_checkpoint_resume saves a consolidated checkpoint (and the parameters an
uninterrupted run ends with) to FOLDER and resumes from RESUME_FROM's: test_zero.py runs
the 4-rank job first and points the 2- and 1-rank jobs at its folder.

``zero_checks.py RESULTS.json --pytorch`` runs only the comparison with PyTorch's own
ZeroRedundancyOptimizer (torch on gloo beside dtrain), which needs torch installed.
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
import dtrain.nn as nn  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain.distributed.optim import ZeroRedundancyOptimizer  # noqa: E402
from dtrain.examples.gpt import GPT  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402
from rank_harness import RankChecks, gathered, rel  # noqa: E402

V, T, G = 24, 8, 4  # vocabulary, sequence length, global batch (sequences)
SAVE_AT, STEPS = 5, 10  # the checkpoint's step, and the steps of a whole run


def gpt(dtype, n_layer=2, n_embd=16):
    """The same small GPT on every rank (and in every job)."""
    dtrain.manual_seed(0)
    return GPT(V, T, n_layer, 2, n_embd).to(dtype)


def batches(steps, first=0, seed=7):
    """This rank's rows of the global batches ``first`` .. ``steps - 1``: (inputs, targets)."""
    rank, n = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (steps, G, T + 1))[first:, rank * G // n:(rank + 1) * G // n]
    return [(dtrain.tensor(t[:, :-1]), dtrain.tensor(t[:, 1:])) for t in tokens]


def train(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        model(x, y)[1].backward()
        opt.step()


def flat(model):
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def adam(params):
    return dtrain.optim.Adam(params, lr=0.01)


def zero_adam(params, **kw):
    return ZeroRedundancyOptimizer(params, dtrain.optim.Adam, lr=0.01, **kw)


def state_bytes(optimizer):
    """The bytes of an optimizer's state arrays (the measured footprint, step counters included)."""
    return sum(v.array.nbytes for s in optimizer.state.values() for v in s.values() if hasattr(v, "array"))


def same_state(a, b, tol):
    """Two full state_dicts: the same parameter groups, the same entries, values within ``tol``."""
    assert a["param_groups"] == b["param_groups"], (a["param_groups"], b["param_groups"])
    assert sorted(a["state"]) == sorted(b["state"]), (sorted(a["state"]), sorted(b["state"]))
    for k in a["state"]:
        assert sorted(a["state"][k]) == sorted(b["state"][k]), (k, sorted(a["state"][k]), sorted(b["state"][k]))
        for name, v in a["state"][k].items():
            err = rel(np.asarray(v.numpy(), float), np.asarray(b["state"][k][name].numpy(), float))
            assert err <= tol, f"state of parameter {k}, {name}: relative difference {err:.3g} > {tol:g}"


def on_rank0(fn, *args):
    """Run the assertion ``fn(*args)`` on rank 0 and raise its failure on every rank, so that
    no rank goes on to the next collective while rank 0 has stopped."""
    failure = [None]
    if dist.get_rank() == 0:
        try:
            fn(*args)
        except AssertionError as e:
            failure[0] = f"on rank 0: {e}"
    dist.broadcast_object_list(failure, src=0)
    assert failure[0] is None, failure[0]


def zero_equals_ddp_adam(dtype, tol, **zero_kw):
    """ZeroRedundancyOptimizer(Adam) + DDP == DDP + Adam over 20 steps: the parameters within
    ``tol`` (and equal on every rank); returns both models and optimizers."""
    model, ref = DDP(gpt(dtype)), DDP(gpt(dtype))
    zero, plain = zero_adam(model.parameters(), **zero_kw), adam(ref.parameters())
    for batch in batches(20):
        train(model, zero, [batch])
        train(ref, plain, [batch])
    mine = flat(model.module)
    err = rel(mine, flat(ref.module))
    assert err <= tol, f"relative difference {err:.3g} from DDP + Adam > {tol:g}"
    for rank, theirs in enumerate(gathered(mine)):
        np.testing.assert_array_equal(theirs, mine, err_msg=f"rank {rank}'s parameters differ from this rank's")
    return model, zero, plain


def check_adam_float64_equals_ddp():
    """Float64 within 1e-10, and the consolidated state_dict is Adam's own (same layout,
    same values within 1e-10)."""
    _, zero, plain = zero_equals_ddp_adam(np.float64, 1e-10)
    zero.consolidate_state_dict(to=0)
    on_rank0(lambda: same_state(zero.state_dict(), plain.state_dict(), 1e-10))


def check_adam_float32_bucket_view_equals_ddp():
    """Float32 within 1e-5 relative with parameters_as_bucket_view: each parameter's data
    is then a view of its dtype's one flat buffer."""
    model, _, _ = zero_equals_ddp_adam(np.float32, 1e-5, parameters_as_bucket_view=True)
    bases = {id(p.array.base) for p in model.parameters()}
    assert len(bases) == 1 and all(p.array.base is not None for p in model.parameters()), bases


def check_adamw_groups_bucket_view_float64():
    """The GPT example's two AdamW groups (decay on matrices only), with bucket views, equal
    DDP + AdamW within 1e-10 after 10 steps."""
    def groups(model):
        params = list(model.parameters())
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    model, ref = DDP(gpt(np.float64)), DDP(gpt(np.float64))
    zero = ZeroRedundancyOptimizer(groups(model), dtrain.optim.AdamW, parameters_as_bucket_view=True, lr=0.02)
    plain = dtrain.optim.AdamW(groups(ref), lr=0.02)
    data = batches(10)
    train(model, zero, data)
    train(ref, plain, data)
    err = rel(flat(model.module), flat(ref.module))
    assert err <= 1e-10, f"relative difference {err:.3g} from DDP + AdamW > 1e-10"
    assert [g["weight_decay"] for g in zero.param_groups] == [0.1, 0.0], zero.param_groups


def check_state_is_sharded():
    """Each rank's optimizer state (bytes of its arrays, measured) is at most 1.05/N of plain
    Adam's plus the largest parameter's state; the ranks' states add up to Adam's exactly,
    and the partition is the same on every rank."""
    n = dist.get_world_size()
    model, ref = DDP(gpt(np.float32, n_layer=4, n_embd=32)), DDP(gpt(np.float32, n_layer=4, n_embd=32))
    zero, plain = zero_adam(model.parameters()), adam(ref.parameters())
    data = batches(2)
    train(model, zero, data)
    train(ref, plain, data)
    mine, full = state_bytes(zero.optim), state_bytes(plain)
    largest = max(state_bytes_of(plain, p) for p in ref.parameters())
    assert mine <= 1.05 * full / n + largest, f"{mine} state bytes on this rank > 1.05 * {full} / {n} + {largest}"
    everyone = gathered((mine, owned_indices(zero)))
    assert sum(b for b, _ in everyone) == full, f"the ranks hold {[b for b, _ in everyone]} bytes, Adam {full}"
    owned = sorted(i for _, indices in everyone for i in indices)
    assert owned == list(range(len(list(model.parameters())))), f"parameters owned over all ranks: {owned}"


def state_bytes_of(optimizer, p):
    return sum(v.array.nbytes for v in optimizer.state[p].values() if hasattr(v, "array"))


def owned_indices(zero):
    """The positions (over all groups) of the parameters this rank's local optimizer steps."""
    index = {id(p): i for i, p in enumerate(p for g in zero.param_groups for p in g["params"])}
    return sorted(index[id(p)] for g in zero.optim.param_groups for p in g["params"])


def check_checkpoint_resume(folder, resume_from):
    """Consolidated at this world size and saved (dtrain.save, one file) at step SAVE_AT; the
    checkpoint in ``resume_from`` (the 4-rank job's) loads here with the same parameters and
    state, and the next steps end where that job's uninterrupted run ended (1e-10)."""
    rank = dist.get_rank()
    model = DDP(gpt(np.float64))
    zero = zero_adam(model.parameters())
    train(model, zero, batches(SAVE_AT))
    zero.consolidate_state_dict(to=0)
    if rank == 0:
        dtrain.save({"model": model.module.state_dict(), "optim": zero.state_dict()}, folder / "zero.dtr")
    train(model, zero, batches(STEPS, SAVE_AT))
    if rank == 0:
        np.save(folder / "final.npy", flat(model.module))
    dist.barrier()  # the folder to resume from is complete (this job's own, at 4 ranks)

    saved = dtrain.load(resume_from / "zero.dtr")
    resumed = gpt(np.float64)
    resumed.load_state_dict(saved["model"])
    resumed = DDP(resumed)
    zero = zero_adam(resumed.parameters())
    zero.load_state_dict(saved["optim"])
    zero.consolidate_state_dict(to=0)
    on_rank0(lambda: same_state(zero.state_dict(), saved["optim"], 0.0))
    train(resumed, zero, batches(STEPS, SAVE_AT))
    err = rel(flat(resumed.module), np.load(resume_from / "final.npy"))
    assert err <= 1e-10, f"resumed run ends {err:.3g} (relative) from the uninterrupted one"


def check_add_param_group_scheduler_closure():
    """Without DDP (every rank computes the same gradients): a group added after two steps,
    a StepLR schedule and step(closure) give plain Adam's parameters and losses (1e-12)."""
    def mlp():
        dtrain.manual_seed(3)
        return nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 7), nn.Tanh(), nn.Linear(7, 2)).double()
    a, b = mlp(), mlp()
    zero = ZeroRedundancyOptimizer(list(a[0].parameters()) + list(a[2].parameters()), dtrain.optim.Adam, lr=0.05)
    plain = dtrain.optim.Adam(list(b[0].parameters()) + list(b[2].parameters()), lr=0.05)
    schedules = [dtrain.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (zero, plain)]
    rng = np.random.default_rng(5)
    for t in range(6):
        x, y = dtrain.tensor(rng.standard_normal((8, 5))), dtrain.tensor(rng.standard_normal((8, 2)))
        if t == 2:
            zero.add_param_group({"params": a[4].parameters(), "lr": 0.02})
            plain.add_param_group({"params": b[4].parameters(), "lr": 0.02})
        losses = []
        for model, opt, schedule in zip((a, b), (zero, plain), schedules):
            def closure(model=model, opt=opt):
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                return loss
            losses.append(opt.step(closure).item())
            schedule.step()
        assert abs(losses[0] - losses[1]) <= 1e-12 * abs(losses[1]), f"step {t}: losses {losses}"
    err = rel(flat(a), flat(b))
    assert err <= 1e-12, f"relative difference {err:.3g} from plain Adam"
    lrs = [g["lr"] for g in zero.param_groups]
    assert lrs == [g["lr"] for g in plain.param_groups] and lrs[0] < 0.05, lrs


def pytorch_equals_dtrain():
    """dtrain's and PyTorch's ZeroRedundancyOptimizer(Adam) (PyTorch on gloo) over the same
    MLP, weights and batches (the same on every rank: no DDP): each rank steps the same
    parameters, which end within 1e-10 after 5 steps in float64, and the consolidated
    state_dicts have the same layout and values."""
    import torch
    import torch.distributed as tdist
    from torch.distributed.optim import ZeroRedundancyOptimizer as TorchZero
    rank, n = dist.get_rank(), dist.get_world_size()
    port = [free_port() if rank == 0 else None]
    dist.broadcast_object_list(port, src=0)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port[0]}", rank=rank, world_size=n)
    try:
        dtrain.manual_seed(3)
        ours = nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 7), nn.Tanh(), nn.Linear(7, 2)).double()
        theirs = torch.nn.Sequential(torch.nn.Linear(5, 9), torch.nn.Tanh(), torch.nn.Linear(9, 7), torch.nn.Tanh(),
                                     torch.nn.Linear(7, 2)).double()
        theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
        zero = ZeroRedundancyOptimizer(ours.parameters(), dtrain.optim.Adam, lr=0.05)
        reference = TorchZero(theirs.parameters(), torch.optim.Adam, lr=0.05)
        rng = np.random.default_rng(5)
        for _ in range(5):
            x, y = rng.standard_normal((8, 5)), rng.standard_normal((8, 2))
            for model, opt, lib in ((ours, zero, dtrain), (theirs, reference, torch)):
                opt.zero_grad()
                ((model(lib.tensor(x)) - lib.tensor(y)) ** 2).mean().backward()
                opt.step()
        index = {id(p): i for i, p in enumerate(theirs.parameters())}
        assert owned_indices(zero) == sorted(index[id(p)] for g in reference.optim.param_groups for p in g["params"])
        err = rel(flat(ours), np.concatenate([p.detach().numpy().ravel() for p in theirs.parameters()]))
        assert err <= 1e-10, f"relative difference {err:.3g} from PyTorch's ZeroRedundancyOptimizer"
        zero.consolidate_state_dict(to=0)
        reference.consolidate_state_dict(to=0)
        on_rank0(lambda: same_state(zero.state_dict(), torch_as_dtrain(reference.state_dict()), 1e-10))
    finally:
        tdist.destroy_process_group()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_as_dtrain(state_dict):
    """A PyTorch optimizer state_dict with dtrain tensors (betas as a tuple, as dtrain keeps them)."""
    state = {k: {name: dtrain.tensor(v.numpy()) for name, v in s.items()} for k, s in state_dict["state"].items()}
    return {"state": state, "param_groups": [{**g, "betas": tuple(g["betas"])} for g in state_dict["param_groups"]]}


def check_one_broadcast_per_rank_per_dtype():
    """A model with float32 and float64 layers, without DDP (the same gradients on every
    rank), in both parameter layouts: each step broadcasts once per rank per dtype it owns
    (not once per parameter), and the parameters equal plain Adam's (exactly: the same
    arithmetic, only moved)."""
    def mixed():
        dtrain.manual_seed(4)
        return nn.ModuleList([nn.Linear(6, 8), nn.Linear(8, 5).double(), nn.Linear(5, 3)])

    def loss(model, x):
        return model[2](model[1](model[0](x).tanh().double()).tanh().float()).pow(2).sum()

    x = dtrain.randn(4, 6)
    for bucket_view in (False, True):
        a, b = mixed(), mixed()
        zero = zero_adam(a.parameters(), parameters_as_bucket_view=bucket_view)
        plain = adam(b.parameters())
        calls, broadcast = [], dist.broadcast

        def counted(*args, **kw):
            calls.append(args)
            return broadcast(*args, **kw)
        dist.broadcast = counted
        try:
            for _ in range(3):
                for model, opt in ((a, zero), (b, plain)):
                    opt.zero_grad()
                    loss(model, x).backward()
                    opt.step()
        finally:
            dist.broadcast = broadcast
        owned = gathered({str(p.dtype) for g in zero.optim.param_groups for p in g["params"]})
        per_step = sum(len(dtypes) for dtypes in owned) if dist.get_world_size() > 1 else 0
        assert len(calls) == 3 * per_step, f"{len(calls)} broadcasts in 3 steps, expected 3 x {per_step} ({owned})"
        for p, q in zip(a.parameters(), b.parameters()):
            np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def main(path, folder, resume_from):
    checks = RankChecks()
    selected = [(name, fn) for name, fn in globals().items() if name.startswith("check_")]
    if folder is None:  # the PyTorch comparison alone
        selected = [("pytorch_equals_dtrain", pytorch_equals_dtrain)]
    for name, fn in selected:
        checks.run(name, fn, *((folder, resume_from) if name == "check_checkpoint_resume" else ()))
    everyone = gathered(checks.results)
    if checks.rank == 0:
        with open(path, "w") as f:
            json.dump({name: {r: res[name] for r, res in enumerate(everyone)} for name, _ in selected}, f, indent=1)
    checks.finish()


if __name__ == "__main__":
    if sys.argv[2:] == ["--pytorch"]:
        main(sys.argv[1], None, None)
    else:
        main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
