"""ZeRO-2 checks (``DistributedDataParallel(..., gradient_sharding=True)`` with a
ZeroRedundancyOptimizer) run on every rank under ``mpiexec -n N python zero2_checks.py RESULTS.json``.

Each check runs on all ranks through tests/rank_harness.py (each rank prints its report);
rank 0 writes ``{check: {rank: "ok" | error}}`` to RESULTS.json for test_zero2.py. The model
and batches are zero_checks.py's (examples/gpt.py's GPT, small; one global batch split
over the ranks, so 1, 2 and 4 ranks train on the same data); the reference is plain DDP.
With ``--backend nccl`` each rank trains on its GPU (``cuda:local_rank % device_count``)
and runs NCCL_CHECKS only.
"""
import json
import math
import sys
import weakref
from pathlib import Path

import numpy as np

import dtrain
import dtrain.comm as dist
from dtrain.parallel import DistributedDataParallel as DDP
from rank_harness import RankChecks
from zero_checks import adam, batches, gathered, gpt, rel, train, zero_adam

DEVICE = "cpu"  # where models and batches live: "cuda:N" under --backend nccl
NCCL_CHECKS = ("check_gradients_equal_ddp_on_owned_parameters", "check_adam_float64_equals_ddp_adam",
               "check_gradient_bytes_are_sharded", "check_clip_grad_norm_equals_ddp")


def model_of(dtype, **size):
    """zero_checks' GPT on this rank's device."""
    return gpt(dtype, **size).to(DEVICE)


def data(steps):
    """zero_checks' batches on this rank's device."""
    return [(x.to(DEVICE), y.to(DEVICE)) for x, y in batches(steps)]


def host(t):
    return t.detach().cpu().numpy()


def flat(model):
    return np.concatenate([host(p).ravel() for p in model.parameters()])


def sharded(dtype, **kw):
    """The GPT under DDP with gradient_sharding, and a ZeroRedundancyOptimizer(Adam) over it."""
    model = DDP(model_of(dtype, **{k: kw.pop(k) for k in ("n_layer", "n_embd") if k in kw}), gradient_sharding=True,
                **{k: kw.pop(k) for k in ("gradient_as_bucket_view", "bucket_cap_mb") if k in kw})
    return model, zero_adam(model.parameters(), **kw)


def owned(zero):
    """The parameters this rank's ZeroRedundancyOptimizer steps."""
    return {id(p) for g in zero.optim.param_groups for p in g["params"]}


def backward(model, batch):
    model(*batch)[1].backward()


def check_gradients_equal_ddp_on_owned_parameters():
    """After two backwards (the second with the buckets rebuilt), with small buckets: each
    owned parameter's .grad equals DDP's average within 1e-12 in float64 and 1e-5 in
    float32 (relative to its largest value), every other .grad is None, and the ranks own
    every parameter exactly once."""
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        owned_gradients_equal_ddp(dtype, tol)


def owned_gradients_equal_ddp(dtype, tol):
    model, zero = sharded(dtype, bucket_cap_mb=0.002)
    ref = DDP(model_of(dtype), bucket_cap_mb=0.002)
    assert len(model.reducer.buckets) > 3, f"only {len(model.reducer.buckets)} buckets: too few to test"
    mine = owned(zero)
    for batch in data(2):
        zero.zero_grad()
        ref.zero_grad()
        backward(model, batch)
        backward(ref, batch)
        assert_owned_gradients_equal(model, ref, zero, tol)
    names = {id(p): n for n, p in model.module.named_parameters()}
    everyone = sorted(n for ids in gathered(sorted(names[i] for i in mine)) for n in ids)
    assert everyone == sorted(names.values()), f"owned over all ranks: {everyone}"


def assert_owned_gradients_equal(model, ref, zero, tol):
    """The .grad of the parameters ``zero`` steps here equal the reference DDP's within
    ``tol`` (relative to each one's largest value); the others' are None."""
    mine = owned(zero)
    for (name, p), q in zip(model.module.named_parameters(), ref.module.parameters()):
        if id(p) not in mine:
            assert p.grad is None, f"{name}: not owned here but has a .grad"
            continue
        want = host(q.grad)
        err = np.abs(host(p.grad) - want).max() / max(np.abs(want).max(), 1e-30)
        assert err <= tol, f"{name} ({p.dtype}): gradient {err:.3g} (relative) from DDP's"


def zero2_equals_ddp_adam(dtype, tol, **kw):
    """ZeRO-2 + ZeroRedundancyOptimizer(Adam) == DDP + Adam over 20 steps: parameters within
    ``tol`` and equal on every rank."""
    model, zero = sharded(dtype, **kw)
    ref = DDP(model_of(dtype))
    plain = adam(ref.parameters())
    for batch in data(20):
        train(model, zero, [batch])
        train(ref, plain, [batch])
    assert_close_and_replicated(flat(model.module), flat(ref.module), tol)


def assert_close_and_replicated(mine, reference, tol):
    """This rank's parameters are within ``tol`` (relative) of the reference's, and every
    rank's are this rank's, bit for bit."""
    assert rel(mine, reference) <= tol, f"relative difference {rel(mine, reference):.3g} from DDP + Adam > {tol:g}"
    differ = [rank for rank, theirs in enumerate(gathered(mine)) if not np.array_equal(theirs, mine)]
    assert not differ, f"the parameters of ranks {differ} differ from rank {dist.get_rank()}'s"


def check_adam_float64_equals_ddp_adam():
    """20 steps in float64: within 1e-10 of DDP + Adam."""
    zero2_equals_ddp_adam(np.float64, 1e-10)


def check_adam_float32_bucket_views_equals_ddp_adam():
    """20 steps in float32, with gradient_as_bucket_view, parameters_as_bucket_view and
    several buckets: within 1e-5 relative of DDP + Adam at 1 and 2 ranks (where the
    reduce-scatter adds in the all-reduce's order: the same bits). At 4 ranks MPI's
    reduce-scatter adds the ranks' values in another order than DDP's all-reduce, and Adam
    amplifies float32 rounding near zero gradients (measured: DDP alone at 4 ranks ends
    3.6e-5 from DDP at 1 rank; ZeRO-2 at 4 ranks 5.4e-5 from DDP at 4): so there the bound
    is 1e-4, and with the reduce-scatter done as an all-reduce (sliced) ZeRO-2 must equal
    DDP bit for bit, which shows the order of the sums is the whole difference."""
    options = dict(gradient_as_bucket_view=True, bucket_cap_mb=0.01, parameters_as_bucket_view=True)
    if dist.get_world_size() <= 2:
        zero2_equals_ddp_adam(np.float32, 1e-5, **options)
        return
    zero2_equals_ddp_adam(np.float32, 1e-4, **options)
    reduce_scatter = dist.reduce_scatter_tensor
    dist.reduce_scatter_tensor = reduce_scatter_in_all_reduce_order
    try:
        zero2_equals_ddp_adam(np.float32, 0.0, **options)
    finally:
        dist.reduce_scatter_tensor = reduce_scatter


class Done:
    """The Work of a collective that has finished."""

    def wait(self):
        return True


def reduce_scatter_in_all_reduce_order(output, input, op=dist.ReduceOp.SUM, group=None, async_op=False):  # noqa: A002
    """``reduce_scatter_tensor`` with the sums of an all-reduce: all of ``input`` is
    all-reduced, and this rank keeps its piece."""
    summed = input.copy()
    dist.all_reduce(summed, op=op, group=group)
    begin = dist.get_rank(group) * output.size
    output[...] = summed[begin:begin + output.size]
    return Done() if async_op else None


def check_no_sync_accumulation_equals_ddp():
    """Two micro-batches, the first under no_sync(): the owned gradients equal DDP's (1e-12)."""
    model, zero = sharded(np.float64)
    ref = DDP(model_of(np.float64))
    first, second = data(2)
    for ddp in (model, ref):
        with ddp.no_sync():
            backward(ddp, first)
        backward(ddp, second)
    assert_owned_gradients_equal(model, ref, zero, 1e-12)


def grad_bytes(model):
    """The bytes of the .grad arrays alive (measured: each distinct memory block once)."""
    blocks = {}
    for p in model.parameters():
        if p.grad is not None:
            a = p.grad.array
            base = a.base if a.base is not None else a
            blocks[id(base)] = base.nbytes
    return sum(blocks.values())


def check_gradient_bytes_are_sharded():
    """After backward, a rank holds at most 1/N of DDP's gradient bytes plus the largest
    parameter's (measured on the .grad arrays), with .grad copies and, on the CPU, with
    bucket views (where a view keeps its bucket's received piece, padding included, alive);
    after zero_grad() nothing keeps them alive."""
    n = dist.get_world_size()
    size = dict(n_layer=4, n_embd=32)
    ref = DDP(model_of(np.float32, **size))
    batch = data(1)[0]
    backward(ref, batch)
    full = grad_bytes(ref)
    largest = max(p.numel() * p.element_size() for p in ref.parameters())
    # with bucket views, the memory a view keeps alive is its base array's: NumPy's (on the CuPy
    # emulation every array is a view of its emulated device's arena, so there only the copies)
    for as_view in (False, True) if DEVICE == "cpu" else (False,):
        model, zero = sharded(np.float32, gradient_as_bucket_view=as_view, **size)
        backward(model, batch)
        mine = grad_bytes(model)
        limit = full / n + largest
        assert mine <= limit, f"gradient_as_bucket_view={as_view}: {mine} gradient bytes > {full} / {n} + {largest}"
        if n > 1:
            assert mine < full, f"gradient_as_bucket_view={as_view}: {mine} bytes, DDP holds {full}"
        grads = [weakref.ref(p.grad) for p in model.parameters() if p.grad is not None]
        zero.zero_grad()
        alive = sum(g() is not None for g in grads)
        assert grads and not alive, f"{alive} of {len(grads)} gradients outlive zero_grad()"


def check_backward_without_zero_optimizer():
    """Without a ZeroRedundancyOptimizer the owners are unknown: on several ranks backward
    raises (on every rank alike, before any collective) saying what to build; on one rank
    every gradient is this rank's, so backward just works."""
    model = DDP(model_of(np.float64), gradient_sharding=True)
    batch = data(1)[0]
    if dist.get_world_size() == 1:
        backward(model, batch)
        assert all(p.grad is not None for p in model.parameters())
        return
    assert_backward_raises(model, batch, "needs a ZeroRedundancyOptimizer over its parameters")
    partial = zero_adam(list(model.parameters())[1:])  # the first parameter has no owner
    assert_backward_raises(model, batch, "1 parameters belong to no ZeroRedundancyOptimizer", "wte.weight")
    del partial
    zero = zero_adam(model.parameters())  # built late: the next backward shards
    train(model, zero, [batch])


def assert_backward_raises(model, batch, *fragments):
    """Backward raises a RuntimeError whose message holds each of ``fragments``."""
    try:
        backward(model, batch)
    except RuntimeError as e:
        assert all(f in str(e) for f in fragments), e
        return
    raise AssertionError(f"backward did not raise (expected an error saying {fragments[0]!r})")


def check_accumulating_onto_averages_is_refused():
    """Two synchronized backwards without zero_grad: on several ranks the second raises
    (before any collective, on every rank) naming zero_grad; zeroing in place
    (zero_grad(set_to_none=False)) is enough, and the next gradients are DDP's."""
    model, zero = sharded(np.float64)
    ref = DDP(model_of(np.float64))
    first, second = data(2)
    backward(model, first)
    if dist.get_world_size() > 1:
        assert_backward_raises(model, second, "call optimizer.zero_grad() before each backward")
    zero.zero_grad(set_to_none=False)
    backward(model, second)
    backward(ref, second)
    assert_owned_gradients_equal(model, ref, zero, 1e-12)


def check_clip_grad_norm_equals_ddp():
    """nn.utils.clip_grad_norm_ over the model's parameters, each rank holding only its owned
    gradients, returns DDP's total norm, the whole gradient's (the 2-, inf- and 1-norm, 1e-12
    relative), on every rank, and clips the owned gradients to DDP's clipped ones."""
    model, zero = sharded(np.float64)
    ref = DDP(model_of(np.float64))
    for norm_type, batch in zip((2.0, math.inf, 1.0), data(3)):
        zero.zero_grad()
        ref.zero_grad()
        backward(model, batch)
        backward(ref, batch)
        ours = dtrain.nn.utils.clip_grad_norm_(model.parameters(), 0.05, norm_type).item()
        theirs = dtrain.nn.utils.clip_grad_norm_(ref.parameters(), 0.05, norm_type).item()
        assert theirs > 0.05, f"the {norm_type}-norm {theirs} is not clipped at 0.05: choose a smaller max_norm"
        assert abs(ours - theirs) <= 1e-12 * theirs, f"{norm_type}-norm {ours} over the owned gradients, DDP's {theirs}"
        assert_owned_gradients_equal(model, ref, zero, 1e-12)


def main(path, backend=None):
    global DEVICE
    checks = RankChecks(backend)
    names = [n for n in globals() if n.startswith("check_")]
    if backend == "nccl":
        DEVICE = f"cuda:{dist.get_local_rank() % dtrain.cuda.device_count()}"
        names = [n for n in names if n in NCCL_CHECKS]
    for name in names:
        checks.run(name, globals()[name])
    everyone = gathered(checks.results)  # rank 0 writes {check: {rank: its result}}
    if checks.rank == 0:
        Path(path).write_text(json.dumps({name: dict(enumerate(r[name] for r in everyone)) for name in checks.results}))
    checks.finish()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else None)
