"""DDP checks run on every rank under ``mpiexec -n N python ddp_checks.py RESULTS.json [--backend nccl]``.

With ``--backend nccl`` each rank trains on its GPU (``cuda:local_rank % device_count``:
real, or the tests' CuPy emulation) and only the checks in ``NCCL_CHECKS`` run: the
single-process equivalences, on the same GPU, and the hooks; plus ``wait_s`` measured.

Each check runs on all ranks through tests/rank_harness.py, which prints each rank's
report (``rank R: all N checks passed``); rank 0 also writes ``{check: {rank: "ok" | error}}``
(and the measured overlap under "info") to RESULTS.json for test_ddp.py to assert on, check
by check. Every rank computes its single-process references itself from the same seeded
data, so no reference travels between ranks. Checks run in a fixed order: a check that
fails on one rank can leave the others waiting, which the caller's timeout turns into a failure.
"""
import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
import dtrain.nn as nn  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402
from dtrain.parallel import SyncBatchNorm  # noqa: E402
from dtrain.parallel.comm_hooks import bf16_compress_hook, fp16_compress_hook  # noqa: E402
from rank_harness import RankChecks, gathered, rel  # noqa: E402

D, H, K, B = 6, 16, 4, 4  # input, hidden and class sizes; per-rank batch
DEVICE = "cpu"  # where models and batches live: "cuda:N" under --backend nccl
NCCL_CHECKS = ("check_sgd_float32", "check_sgd_float64_bucket_view", "check_adam_float32", "check_fp16_hook",
               "check_bf16_hook")


class Net(nn.Module):
    """Layers registered in another order than forward uses them: backward makes the
    gradients of later buckets ready first, so in-order launching matters."""

    def __init__(self, unused=False, norm=False):
        super().__init__()
        self.out = nn.Linear(H, K)
        self.inp = nn.Linear(D, H)
        self.mid = nn.Linear(H, H)
        self.norm = nn.BatchNorm1d(H) if norm else nn.Identity()
        if unused:
            self.extra = nn.Linear(H, H)

    def forward(self, x, use_extra=False):
        h = F.relu(self.norm(self.inp(x)))
        if use_extra:
            h = F.relu(self.extra(h))
        return self.out(F.tanh(self.mid(h)))


def data(steps, n, dtype, seed=1234, d=D):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((steps, n * B, d)).astype(dtype), rng.integers(0, K, (steps, n * B))


def shard(a, rank):
    """Rank ``rank``'s part of a global batch."""
    return a[rank * B:(rank + 1) * B]


def local_loss(model, x, y, rank, **kw):
    return F.cross_entropy(model(dtrain.tensor(shard(x, rank)), **kw), dtrain.tensor(shard(y, rank)))


def flat(model):
    return np.concatenate([p.detach().cpu().numpy().ravel() for p in model.parameters()])


def copy_params(dst, src):
    with dtrain.no_grad():
        for a, b in zip(dst.state_dict(keep_vars=True).values(), src.state_dict(keep_vars=True).values()):
            a.copy_(b)


def step(model, opt, x, y, **kw):
    opt.zero_grad()
    F.cross_entropy(model(dtrain.tensor(x).to(DEVICE), **kw), dtrain.tensor(y).to(DEVICE)).backward()
    opt.step()


def equivalence(dtype, make_opt, tol, hook=None, steps=20, **ddp_kw):
    """N ranks x batch B under DDP == one process on the concatenated N*B batch."""
    rank, n = dist.get_rank(), dist.get_world_size()
    dtrain.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    model = Net().to(dtype).to(DEVICE)
    ddp = DDP(model, **ddp_kw)
    if hook is not None:
        ddp.register_comm_hook(None, hook)
    ref = Net().to(dtype).to(DEVICE)
    copy_params(ref, model)
    opt, ref_opt = make_opt(model.parameters()), make_opt(ref.parameters())
    xs, ys = data(steps, n, dtype)
    launches, buckets = [], []
    for t in range(steps):
        step(ddp, opt, shard(xs[t], rank), shard(ys[t], rank))
        step(ref, ref_opt, xs[t], ys[t])
        launches.append([b for b, _ in ddp.comm_stats()["launches"]])
        buckets.append(ddp.reducer.bucket_indices())
    err = rel(flat(model), flat(ref))
    assert err <= tol, f"relative difference {err:.3g} from the single-process reference > {tol:g}"
    return ddp, launches, buckets


def sgd(params):
    return dtrain.optim.SGD(params, lr=0.1, momentum=0.9)


def adam(params):
    return dtrain.optim.Adam(params, lr=0.01)


def check_sgd_float32():
    equivalence(np.float32, sgd, 1e-5)


def check_sgd_float64_bucket_view():
    equivalence(np.float64, sgd, 1e-10, gradient_as_bucket_view=True, bucket_cap_mb=0.0005)


def check_adam_float32():
    equivalence(np.float32, adam, 1e-5)


def check_adam_float64():
    equivalence(np.float64, adam, 1e-10, bucket_cap_mb=0.0001)


def check_fp16_hook():
    equivalence(np.float32, sgd, 1e-2, hook=fp16_compress_hook, steps=5)


def check_bf16_hook():
    equivalence(np.float32, sgd, 5e-2, hook=bf16_compress_hook, steps=5)


def check_bucket_order():
    """Buckets launch in index order on every rank, the same on all ranks, before and after
    the one rebuild, which follows the order gradients became ready."""
    ddp, launches, buckets = equivalence(np.float64, sgd, 1e-10, steps=3, bucket_cap_mb=0.0001)
    for seq, idx in zip(launches, buckets):
        assert seq == list(range(len(idx))), f"launch order {seq}, expected 0..{len(idx) - 1}"
    assert buckets[0] != buckets[-1], f"buckets were not rebuilt: {buckets[0]}"
    everyone = gathered((launches, buckets))
    assert all(e == everyone[0] for e in everyone), f"ranks launched differently: {everyone}"


def check_no_sync():
    """A backward under no_sync communicates nothing; the next synced backward reduces the
    accumulated gradients of both micro-batches."""
    rank, n = dist.get_rank(), dist.get_world_size()
    model = Net().double()
    ddp = DDP(model)
    ref = Net().double()
    copy_params(ref, model)
    xs, ys = data(2, n, np.float64, seed=7)
    with ddp.no_sync():
        local_loss(ddp, xs[0], ys[0], rank).backward()
    local = flat_grads(model)
    everyone = gathered(local)
    assert not all(np.array_equal(e, everyone[0]) for e in everyone[1:]), "no_sync gradients were averaged"
    local_loss(ddp, xs[1], ys[1], rank).backward()
    for t in range(2):
        F.cross_entropy(ref(dtrain.tensor(xs[t])), dtrain.tensor(ys[t])).backward()
    err = rel(flat_grads(model), flat_grads(ref))
    assert err <= 1e-10, f"accumulated gradients differ from the reference by {err:.3g}"


def flat_grads(model):
    return np.concatenate([p.grad.numpy().ravel() for p in model.parameters()])


def check_join(by_initial=True):
    """Rank r has 2 + r batches: under join() no rank hangs, and each step's gradient is the
    sum of the active ranks' gradients divided by the world size (PyTorch's default) or by
    the number of active ranks. (BatchNorm's buffers make joined ranks mirror the buffer
    broadcasts too.)"""
    rank, n = dist.get_rank(), dist.get_world_size()
    model = Net(norm=True).double()
    ddp = DDP(model, bucket_cap_mb=0.0005)
    ref = Net(norm=True).double()
    copy_params(ref, model)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = dtrain.optim.SGD(ref.parameters(), lr=0.1)
    steps = [2 + r for r in range(n)]
    xs, ys = data(max(steps), n, np.float64, seed=11)
    with ddp.join(divide_by_initial_world_size=by_initial):
        for t in range(steps[rank]):
            step(ddp, opt, shard(xs[t], rank), shard(ys[t], rank))
    for t in range(steps[rank]):  # the reference: this rank's steps, with the ranks active at each
        active = [r for r in range(n) if steps[r] > t]
        ref_opt.zero_grad()
        loss = sum(local_loss(ref, xs[t], ys[t], r) for r in active)
        (loss / (n if by_initial else len(active))).backward()
        ref_opt.step()
    err = rel(flat(model), flat(ref))
    assert err <= 1e-10, f"parameters differ from the reference by {err:.3g}"
    # after join, ordinary synchronized training goes on
    step(ddp, opt, xs[0][:B], ys[0][:B])


def check_join_divide_by_active():
    check_join(by_initial=False)


def check_find_unused():
    """With find_unused_parameters, a layer used only on even ranks gets the average over
    ranks of the gradients (zeros where unused), and a layer unused everywhere keeps .grad None."""
    rank, n = dist.get_rank(), dist.get_world_size()
    model = Net(unused=True).double()
    ddp = DDP(model, find_unused_parameters=True, bucket_cap_mb=0.0005)
    ref = Net(unused=True).double()
    copy_params(ref, model)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = dtrain.optim.SGD(ref.parameters(), lr=0.1)
    xs, ys = data(3, n, np.float64, seed=5)
    for t in range(3):
        everywhere = t == 0  # step 0: the extra layer is used on no rank
        step(ddp, opt, shard(xs[t], rank), shard(ys[t], rank),
             use_extra=rank % 2 == 0 and not everywhere)
        if t == 0:
            assert model.extra.weight.grad is None, "a parameter unused on every rank got a gradient"
        ref_opt.zero_grad()
        loss = sum(local_loss(ref, xs[t], ys[t], r, use_extra=r % 2 == 0 and not everywhere) for r in range(n))
        (loss / n).backward()
        ref_opt.step()
    err = rel(flat(model), flat(ref))
    assert err <= 1e-10, f"parameters differ from the reference by {err:.3g}"


def check_find_unused_after_no_sync():
    """A layer used only in the no_sync micro-batch still has its accumulated gradient
    averaged by the synced backward in which forward did not use it."""
    rank, n = dist.get_rank(), dist.get_world_size()
    model = Net(unused=True).double()
    ddp = DDP(model, find_unused_parameters=True)
    ref = Net(unused=True).double()
    copy_params(ref, model)
    xs, ys = data(2, n, np.float64, seed=13)
    with ddp.no_sync():
        local_loss(ddp, xs[0], ys[0], rank, use_extra=True).backward()
    local_loss(ddp, xs[1], ys[1], rank).backward()
    loss = sum(local_loss(ref, xs[0], ys[0], r, use_extra=True) + local_loss(ref, xs[1], ys[1], r) for r in range(n))
    (loss / n).backward()
    err = rel(flat_grads(model), flat_grads(ref))
    assert err <= 1e-10, f"gradients differ from the reference by {err:.3g}"


def check_unused_error():
    """Without find_unused_parameters, an unused parameter makes the NEXT forward raise an
    error naming it and the flag (on every rank, so none hangs)."""
    ddp = DDP(Net(unused=True).double())
    x = dtrain.randn(B, D, dtype=dtrain.float64)
    ddp(x).sum().backward()
    try:
        ddp(x)
    except RuntimeError as e:
        msg = str(e)
        assert "extra.weight" in msg and "find_unused_parameters=True" in msg, msg
    else:
        raise AssertionError("no error for unused parameters")


def check_mismatch_error():
    """Ranks with different parameter shapes fail at construction with an error naming the
    parameter, the ranks and both shapes."""
    rank = dist.get_rank()
    try:
        DDP(nn.Sequential(nn.Linear(4, 3 + rank)))
    except RuntimeError as e:
        msg = str(e)
        for part in ("parameter 0", "rank 0 has 0.weight of shape [3, 4]", "rank 1 has 0.weight of shape [4, 4]"):
            assert part in msg, f"{part!r} not in: {msg}"
    else:
        raise AssertionError("no error for different parameter shapes")


def bn_net(norm):
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), norm(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
                         nn.BatchNorm1d(5), nn.Linear(5, K))


def check_sync_batchnorm():
    """SyncBatchNorm under DDP over per-rank batches == BatchNorm on the global batch:
    outputs, parameters and running statistics after 4 steps."""
    rank, n = dist.get_rank(), dist.get_world_size()
    dtrain.manual_seed(3)
    ref = bn_net(nn.BatchNorm2d).double()
    model = SyncBatchNorm.convert_sync_batchnorm(bn_net(nn.BatchNorm2d).double())
    assert sum(isinstance(m, SyncBatchNorm) for m in model.modules()) == 2
    copy_params(model, ref)
    ddp = DDP(model)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = dtrain.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(9)
    for t in range(4):
        x = rng.standard_normal((n * B, 2, 4, 4)) * 3 + 1
        y = rng.integers(0, K, n * B)
        out, ref_out = ddp(dtrain.tensor(shard(x, rank))), ref(dtrain.tensor(x))
        if t == 0:
            err = rel(out.detach().numpy(), shard(ref_out.detach().numpy(), rank))
            assert err <= 1e-10, f"forward differs from BatchNorm on the global batch by {err:.3g}"
        opt.zero_grad()
        ref_opt.zero_grad()
        F.cross_entropy(out, dtrain.tensor(shard(y, rank))).backward()
        F.cross_entropy(ref_out, dtrain.tensor(y)).backward()
        opt.step()
        ref_opt.step()
    sd, ref_sd = model.state_dict(), ref.state_dict()
    for key in ref_sd:
        err = rel(np.asarray(sd[key].numpy(), float), np.asarray(ref_sd[key].numpy(), float))
        assert err <= 1e-10, f"{key} differs from the global-batch reference by {err:.3g}"


def check_broadcast_buffers():
    """Each forward starts from rank 0's buffers (plain BatchNorm's running stats differ per rank)."""
    rank = dist.get_rank()
    model = nn.Sequential(nn.Linear(D, H), nn.BatchNorm1d(H)).double()
    ddp = DDP(model)
    ddp(dtrain.randn(B, D, dtype=dtrain.float64) + rank).sum().backward()  # each rank's own statistics
    mine = model[1].running_mean.numpy().copy()
    ddp.eval()
    with dtrain.no_grad():
        ddp(dtrain.randn(B, D, dtype=dtrain.float64))
    everyone = gathered((mine, model[1].running_mean.numpy().copy()))
    assert not np.allclose(everyone[0][0], everyone[-1][0]), "running stats were equal before the forward"
    for _, after in everyone:
        np.testing.assert_array_equal(after, everyone[0][0])


def measure_overlap():
    """Not a check: how much of the all-reduce time backward hides (reported, not asserted)."""
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    ddp = DDP(model.to(DEVICE), bucket_cap_mb=0.5)
    x, y = dtrain.randn(64, 256).to(DEVICE), dtrain.randint(0, 10, (64,)).to(DEVICE)
    stats = []
    for _ in range(6):
        F.cross_entropy(ddp(x), y).backward()
        stats.append(ddp.comm_stats())
    s = stats[-1]
    assert [b for b, _ in s["launches"]] == list(range(s["buckets"]))
    return {"backward_ms": 1e3 * s["backward_s"], "final_wait_ms": 1e3 * s["wait_s"], "buckets": s["buckets"],
            "first_launch_ms": 1e3 * s["launches"][0][1], "end": s["end"], "done": s["done"],
            "backend": dist.get_backend(), "device_timed": ddp.reducer.device_wait is not None}


def main(path, backend=None):
    global DEVICE
    checks = RankChecks(backend)
    selected = [(name, fn) for name, fn in globals().items() if name.startswith("check_")]
    if backend == "nccl":
        DEVICE = f"cuda:{dist.get_local_rank() % dtrain.cuda.device_count()}"
        selected = [(name, fn) for name, fn in selected if name in NCCL_CHECKS]
    for name, fn in selected:
        checks.run(name, fn)
    info = measure_overlap()
    everyone = gathered((checks.results, info))
    if checks.rank == 0:
        merged = {name: {r: res[name] for r, (res, _) in enumerate(everyone)} for name, _ in selected}
        merged["info"] = {r: inf for r, (_, inf) in enumerate(everyone)}
        # from the last rank's end of backward to the last rank's averages (one machine: one clock)
        merged["exposed_ms"] = 1e3 * (max(i["done"] for _, i in everyone) - max(i["end"] for _, i in everyone))
        with open(path, "w") as f:
            json.dump(merged, f, indent=1)
    checks.finish()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else None)
