"""Rank script for test_nonfinite.py: a NaN (or inf) planted in one rank's gradient at one step.

    mpiexec -n N python tests/parallel/rank_nonfinite.py checks   # every check, rank_harness report
    mpiexec -n 2 python tests/parallel/rank_nonfinite.py nccl     # the GPU checks, rank r on GPU r
    python -m dtrain.launch --nproc 2 tests/parallel/rank_nonfinite.py raise|skip   # one run in that mode

The NaN is planted by adding ``(weight * mask).sum()`` to the loss of rank 1 at step 7, with
``mask`` zero but for one NaN: only that weight's gradient (one element) turns NaN, on that
rank only. Each check trains a model so and a reference model that simply leaves step 7 out
(no forward, no backward, no step), with the same reduction strategy, and compares them
bitwise on every rank, and every rank's parameters with rank 0's.
"""
import logging
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import dtrain  # noqa: E402
import dtrain.comm as dist  # noqa: E402
import dtrain.nn as nn  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain.distributed.optim import ZeroRedundancyOptimizer  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402
from dtrain.parallel.comm_hooks import fp16_compress_hook  # noqa: E402

D, H, K, B, STEPS, PLANT_STEP, PLANT_RANK = 6, 16, 4, 4, 10, 7, 1
DEVICE = "cpu"  # where models and batches live: "cuda:N" under nccl
GPU_CHECKS = ("skip: in-place coalesced all-reduce, SGD momentum", "skip: Adam's state untouched",
              "skip: bucket copy (gradient_as_bucket_view)", "skip: comm hook (fp16 compression)")


def on_device(array):
    return dtrain.from_numpy(array).to(DEVICE)


class Net(nn.Module):
    def __init__(self, hidden=H):
        super().__init__()
        self.inp = nn.Linear(D, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, K)

    def forward(self, x):
        return self.out(F.tanh(self.mid(F.relu(self.inp(x)))))


class Records(logging.Handler):
    """The messages logged to dtrain.parallel on this rank."""

    def __init__(self):
        super().__init__()
        self.messages = []
        logging.getLogger("dtrain.parallel").addHandler(self)

    def emit(self, record):
        self.messages.append(record.getMessage())


def train(plant, skip_step=None, optimizer="sgd", value=float("nan"), where="mid.weight", plant_ranks=(PLANT_RANK,),
          hidden=H, **ddp_options):
    """STEPS steps of a DDP model; ``plant``: add the non-finite ``value`` to ``where``'s gradient on
    ``plant_ranks`` at PLANT_STEP; ``skip_step``: leave that step out. Returns (model, optimizer)."""
    dtrain.manual_seed(0)
    hook = ddp_options.pop("hook", None)
    model = DDP(Net(hidden).to(DEVICE), **ddp_options)
    if hook is not None:
        model.register_comm_hook(None, hook)
    make = {"sgd": lambda ps: dtrain.optim.SGD(ps, lr=0.1, momentum=0.9),
            "adam": lambda ps: dtrain.optim.Adam(ps, lr=1e-2),
            "zero": lambda ps: ZeroRedundancyOptimizer(ps, dtrain.optim.Adam, lr=1e-2)}[optimizer]
    opt = make(model.parameters())
    rank = dist.get_rank()
    rng = np.random.default_rng(100 + rank)
    xs, ys = rng.standard_normal((STEPS, B, D)).astype(np.float32), rng.integers(0, K, (STEPS, B))
    weight = dict(model.module.named_parameters())[where]
    for step in range(STEPS):
        if step == skip_step:
            continue
        opt.zero_grad()
        loss = F.cross_entropy(model(on_device(xs[step])), on_device(ys[step]))
        if plant and step == PLANT_STEP and rank in plant_ranks:
            mask = np.zeros(weight.shape, np.float32)
            mask.reshape(-1)[0] = value
            loss = loss + (weight * on_device(mask)).sum()
        loss.backward()
        opt.step()
    return model, opt


def assert_same_everywhere(model, reference):
    """model's parameters equal reference's bitwise on this rank, and equal rank 0's."""
    mine = {n: p.detach().cpu().numpy().copy() for n, p in model.module.named_parameters()}
    for n, p in reference.module.named_parameters():
        assert np.isfinite(mine[n]).all(), f"{n} is not finite"
        assert mine[n].tobytes() == p.detach().cpu().numpy().tobytes(), f"{n} differs from the run without step {PLANT_STEP}"
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, {n: a.tobytes() for n, a in mine.items()})
    for r, theirs in enumerate(everyone):
        assert theirs == everyone[0], f"rank {r}'s parameters differ from rank 0's"


def assert_logged(records, expected):
    """Exactly ``expected`` on group rank 0, nothing on the others (one line, one rank)."""
    want = [expected] if dist.get_rank() == 0 else []
    assert records.messages == want, f"logged {records.messages}, expected {want}"
    records.messages.clear()


EXPECTED = f"step {PLANT_STEP}: non-finite gradient (nan) on rank {PLANT_RANK} in 'mid.weight'; all ranks skip this step"


def check_skip(records, optimizer="sgd", **options):
    """The planted run logs the culprit once and ends bitwise equal to the run without step 7."""
    model, _ = train(True, optimizer=optimizer, **options)
    assert_logged(records, EXPECTED)
    reference, _ = train(False, skip_step=PLANT_STEP, optimizer=optimizer, **options)
    assert_same_everywhere(model, reference)


def check_skip_in_place(records):
    check_skip(records)


def check_skip_shared_memory(records):
    """A bucket above the shared-memory threshold (590 KB): the all-reduce checks its result
    where it sums it and, only for a non-finite piece, which ranks' values were
    (dtrain/comm/finite_flags.py): the culprit is named as on MPI's path. The NaN of rank 1
    sits in the shard rank 0 reduces (seen in rank 1's slot); inf on the two last ranks in
    out.bias too (at 2 ranks rank 0's own values, looked at before the result overwrites them)."""
    from dtrain.comm import shm
    checked = []
    plain = shm.SharedMemoryAllReduce.all_reduce

    def counting(self, arrays, op="sum", scale=None, check=None):
        checked.append(check is not None)
        return plain(self, arrays, op, scale, check)
    shm.SharedMemoryAllReduce.all_reduce = counting
    try:
        check_skip(records, hidden=384)
        n = dist.get_world_size()
        train(True, value=float("inf"), where="out.bias", plant_ranks=(n - 2, n - 1), hidden=384)
        assert_logged(records, f"step {PLANT_STEP}: non-finite gradient (inf) on rank {n - 2} in 'out.bias' (also "
                               f"on ranks [{n - 1}]); all ranks skip this step")
    finally:
        shm.SharedMemoryAllReduce.all_reduce = plain
    assert checked.count(True) >= 3 * STEPS - 2, f"the shared-memory all-reduce checked {checked.count(True)} times"


def check_skip_bucket_view(records):
    check_skip(records, gradient_as_bucket_view=True, bucket_cap_mb=0.0005)  # several buckets of copies


def check_skip_comm_hook(records):
    check_skip(records, hook=fp16_compress_hook)  # the hook's averages decide; rank 1's own norms name it


def check_skip_zero2(records):
    check_skip(records, optimizer="zero", gradient_sharding=True)


def check_skip_adam_state(records):
    """Adam's step count and moments are those of the run without step 7."""
    model, opt = train(True, optimizer="adam")
    assert_logged(records, EXPECTED)
    reference, ref_opt = train(False, skip_step=PLANT_STEP, optimizer="adam")
    assert_same_everywhere(model, reference)
    for p, q in zip(model.parameters(), reference.parameters()):
        state, ref = opt.state[p], ref_opt.state[q]
        assert float(state["step"]) == STEPS - 1, state["step"]
        for name in ("exp_avg", "exp_avg_sq"):
            assert state[name].cpu().numpy().tobytes() == ref[name].cpu().numpy().tobytes(), name


def check_inf_on_two_ranks(records):
    """inf on the two last ranks in out.bias: the lower is named, the other listed."""
    n = dist.get_world_size()
    train(True, value=float("inf"), where="out.bias", plant_ranks=(n - 2, n - 1))
    assert_logged(records, f"step {PLANT_STEP}: non-finite gradient (inf) on rank {n - 2} in 'out.bias' (also on "
                           f"ranks [{n - 1}]); all ranks skip this step")


def check_join(records, hidden=H):
    """Under join(), rank 0 runs out of batches before step 7: shadowing, it still takes part in
    the search for the culprit (no hang) and logs the line; the ranks with data skip the step
    alike (their parameters equal each other's)."""
    dtrain.manual_seed(0)
    model = DDP(Net(hidden))
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rank = dist.get_rank()
    rng = np.random.default_rng(100 + rank)
    mask = np.zeros((hidden, hidden), np.float32)
    mask[0, 0] = np.nan
    with model.join():
        for step in range(PLANT_STEP - 2 if rank == 0 else STEPS):
            opt.zero_grad()
            loss = F.cross_entropy(model(dtrain.from_numpy(rng.standard_normal((B, D)).astype(np.float32))),
                                   dtrain.from_numpy(rng.integers(0, K, B)))
            if step == PLANT_STEP and rank == PLANT_RANK:
                loss = loss + (model.module.mid.weight * dtrain.from_numpy(mask)).sum()
            loss.backward()
            opt.step()
    assert_logged(records, EXPECTED)
    weights = [None] * dist.get_world_size()
    dist.all_gather_object(weights, model.module.mid.weight.detach().cpu().numpy().tobytes())
    assert all(w == weights[1] for w in weights[1:]), "the ranks with data differ"
    assert np.isfinite(model.module.mid.weight.detach().cpu().numpy()).all()


PLANTED = {"mask": None}  # PlantedNet's mask for the current forward


class PlantedNet(Net):
    """Net whose forward also returns ``(mid.weight * mask).sum()`` (None without a mask): under
    micro-shards the NaN must reach mid.weight's gradient through the module's own forward
    (the micro-shards' alias parameters), not through the wrapped parameter."""

    def forward(self, x):
        mask = PLANTED["mask"]
        return super().forward(x), None if mask is None else (self.mid.weight * mask).sum()


def train_micro(plant, skip_step=None, rows=B, micro_shard_size=2, nonfinite="skip"):
    """As train(), with micro_shard_size: ``rows`` rows per rank in micro-shards of the given size."""
    dtrain.manual_seed(0)
    model = DDP(PlantedNet(), micro_shard_size=micro_shard_size, nonfinite=nonfinite)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rank = dist.get_rank()
    rng = np.random.default_rng(100 + rank)
    xs, ys = rng.standard_normal((STEPS, rows, D)).astype(np.float32), rng.integers(0, K, (STEPS, rows))
    mask = np.zeros((H, H), np.float32)
    mask[0, 0] = np.nan
    try:
        for step in range(STEPS):
            if step == skip_step:
                continue
            PLANTED["mask"] = dtrain.from_numpy(mask) if plant and step == PLANT_STEP and rank == PLANT_RANK else None
            opt.zero_grad()
            out, extra = model(dtrain.from_numpy(xs[step]))
            loss = F.cross_entropy(out, dtrain.from_numpy(ys[step]))
            (loss if extra is None else loss + extra).backward()
            opt.step()
    finally:
        PLANTED["mask"] = None
    return model


def check_micro_shards(records, rows, tree):
    model = train_micro(True, rows=rows)
    assert (model._micro.tree is not None) == tree, "the other sum ran"
    assert_logged(records, EXPECTED)
    assert_same_everywhere(model, train_micro(False, skip_step=PLANT_STEP, rows=rows))


def check_micro_shards_tree(records):
    """micro_shard_size=2, 2 per rank: a power of two in all, the tree sum (its one dot finds it)."""
    check_micro_shards(records, rows=4, tree=True)


def check_micro_shards_exact(records):
    """3 micro-shards per rank: not a power of two, the exact sum (its MAX of magnitudes finds it)."""
    check_micro_shards(records, rows=6, tree=False)


def check_micro_shards_ignore(records):
    """nonfinite="ignore" under micro-shards: the NaN reaches the weights (what the checks above prevent)."""
    model = train_micro(True, rows=6, nonfinite="ignore")
    assert records.messages == [], records.messages
    assert np.isnan(model.module.mid.weight.detach().cpu().numpy()).any()


def check_micro_shards_raise(records):
    """nonfinite="raise" under micro-shards: every rank's backward raises the message at step 7."""
    from dtrain.parallel.nonfinite import NonFiniteGradientError
    try:
        train_micro(True, nonfinite="raise")
    except NonFiniteGradientError as e:
        message = str(e)
    else:
        raise AssertionError("no NonFiniteGradientError")
    want = EXPECTED.replace("; all ranks skip this step", "; DistributedDataParallel(nonfinite='raise') ends the job")
    assert message == want, message
    assert records.messages == [], records.messages


def check_join_shared_memory(records):
    """join() through the shared-memory all-reduce (hidden 384): the shadowing rank makes the
    same checked call as the others (and, reducing rank 1's NaN at 2 ranks, names it)."""
    check_join(records, hidden=384)


def check_ignore(records):
    """nonfinite="ignore": the old behaviour, the NaN reaches every rank's parameters; nothing logged."""
    model, _ = train(True, nonfinite="ignore")
    assert records.messages == [], records.messages
    assert np.isnan(model.module.mid.weight.detach().cpu().numpy()).any()


CHECKS = [("skip: in-place coalesced all-reduce, SGD momentum", check_skip_in_place),
          ("skip: in-place through the shared-memory all-reduce", check_skip_shared_memory),
          ("skip: Adam's state untouched", check_skip_adam_state),
          ("skip: bucket copy (gradient_as_bucket_view)", check_skip_bucket_view),
          ("skip: comm hook (fp16 compression)", check_skip_comm_hook),
          ("skip: ZeRO-2 reduce-scatter", check_skip_zero2),
          ("inf on two ranks", check_inf_on_two_ranks),
          ("join: a shadowing rank mirrors the search", check_join),
          ("join through shared memory", check_join_shared_memory),
          ("micro-shards: tree sum", check_micro_shards_tree),
          ("micro-shards: exact sum", check_micro_shards_exact),
          ("micro-shards: raise", check_micro_shards_raise),
          ("micro-shards: ignore", check_micro_shards_ignore),
          ("ignore", check_ignore)]


def main(backend=None):
    global DEVICE
    from rank_harness import RankChecks
    checks = RankChecks(backend)
    if backend == "nccl":
        DEVICE = f"cuda:{dist.get_local_rank() % dtrain.cuda.device_count()}"
    records = Records()
    for name, check in CHECKS:
        if backend is None or name in GPU_CHECKS:
            checks.run(name, check, records)
    checks.finish()


def job(mode):
    """One training run with the NaN planted, nonfinite=``mode``, logging unconfigured (the
    warning goes to stderr through Python's last-resort handler)."""
    dist.init_process_group()
    start = time.perf_counter()
    train(True, nonfinite=mode)
    print(f"rank {dist.get_rank()}: trained {STEPS} steps (nonfinite={mode!r}) in {time.perf_counter() - start:.1f} s",
          flush=True)


if __name__ == "__main__":
    if sys.argv[1] in ("checks", "nccl"):
        main("nccl" if sys.argv[1] == "nccl" else None)
    else:
        job(sys.argv[1])
