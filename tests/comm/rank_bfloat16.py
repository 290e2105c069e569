"""Rank script: bfloat16 (ml_dtypes') through the collectives, run by test_comm_bfloat16.py as
``mpiexec -n N python tests/comm/rank_bfloat16.py`` for N = 2 and 4; with ``--pytorch STORE``
(2 ranks), only the comparison with PyTorch's gloo, which meets through the file STORE; with
``--backend nccl`` (on GPUs or the tests' CuPy emulation), on the NCCL world, whose host
(NumPy) arrays go through the MPI group underneath: CuPy has no bfloat16 arrays.

* Collectives that move data deliver every bit: the inputs are random 16-bit words (NaNs
  with every payload, infinities, -0, subnormals) plus those patterns spelled out.
* Reductions equal NumPy's float32 reduction rounded once to bfloat16 (round to nearest
  even). The inputs keep float32 sums and products exact (8 significant bits, a narrow
  exponent range), so the reference does not depend on the order the ranks are combined in.
* DDP of a bfloat16 model and fully_shard with a bfloat16 param_dtype train (see their checks).

Checks run and report through tests/rank_harness.py; test_comm_bfloat16.CHECKS counts them.
"""
import sys

import numpy as np

import dtrain
import dtrain.comm as dist
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.comm import DistError, ReduceOp
from dtrain.comm.call_check import check_call
from dtrain.comm.lifecycle import group_or_default
from dtrain.comm.watchdog import describe
from dtrain.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from dtrain.parallel import DistributedDataParallel as DDP
from rank_harness import RankChecks, rel

BACKEND = sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "mpi"
checks = RankChecks(backend=BACKEND)
RANK, N = checks.rank, checks.world_size
BF16 = dtrain.bfloat16
SIZES = (1, 7, 70_001)  # 70_001 float32s (the widened buffer) pass 256 KiB: the shared-memory all-reduce
SPECIAL = np.array([0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF, 0x8000, 0x0001, 0x807F], np.uint16)  # inf, -inf, NaNs,
OPS = (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX)       # -0, subnormals


FAILURES = []  # the running check's failed comparisons (see settled)


def expect(ok, message):
    """Record a failed comparison rather than raise: a rank that left a check early would leave
    its peers waiting in the check's next collective (a hang, not a failed check)."""
    if not ok:
        FAILURES.append(message)


def settled(fn):
    """``fn`` as a check: it runs to its end on every rank, then fails with what failed."""
    def check():
        FAILURES.clear()
        fn()
        if FAILURES:
            raise AssertionError(f"{len(FAILURES)} comparison(s) failed: {'; '.join(FAILURES[:5])}")
    return check


def words(rank, size, salt=0):
    """Rank ``rank``'s data to move: random 16-bit words, the SPECIAL patterns first."""
    bits = np.random.default_rng(1000 * rank + size + salt).integers(0, 2**16, size, dtype=np.uint16)
    k = min(size, SPECIAL.size)
    bits[:k] = SPECIAL[:k]
    return bits.view(BF16)


def same_bits(got, want):
    got = got.numpy() if isinstance(got, dtrain.Tensor) else got
    if got.dtype != BF16:
        return expect(False, f"dtype {got.dtype}, expected bfloat16")
    g, w = got.view(np.uint16), np.asarray(want).view(np.uint16)
    differ = g != w
    expect(not differ.any(), f"{differ.sum()} of {differ.size} words differ, e.g. got {g[differ][:3]}, "
                             f"want {w[differ][:3]}")


def values(rank, size, op, salt=0):
    """Rank ``rank``'s data to reduce, as bfloat16: float32 reductions of them are exact. SUM
    and AVG get inf and NaN at positions 1 and 2 (rank 0 only) where the size allows."""
    rng = np.random.default_rng(77 * rank + size + salt)
    if op is ReduceOp.PRODUCT:  # 4 significant bits each: a product of 4 fits float32's 24
        v = rng.integers(8, 16, size) / 8.0 * rng.choice([-0.5, 1.0, 2.0], size)
    else:  # 8 significant bits, exponents -4 .. 4: sums of 4 are exact in float32
        v = rng.integers(128, 256, size) / 128.0 * 2.0 ** rng.integers(-4, 5, size) * rng.choice([-1, 1], size)
    v = v.astype(np.float32)
    if op in (ReduceOp.SUM, ReduceOp.AVG) and rank == 0 and size > 2:
        v[1:3] = (np.inf, np.nan)
    return v.astype(BF16)


REFERENCE = {ReduceOp.SUM: np.sum, ReduceOp.PRODUCT: np.prod, ReduceOp.MIN: np.min, ReduceOp.MAX: np.max,
             ReduceOp.AVG: lambda a, axis: np.sum(a, axis=axis) / np.float32(N)}


def reference(size, op, salt=0):
    """NumPy's float32 reduction of every rank's ``values``, rounded once to bfloat16."""
    stack = np.stack([values(r, size, op, salt).astype(np.float32) for r in range(N)])
    return REFERENCE[op](stack, axis=0).astype(np.float32).astype(BF16)


def equal_values(got, want):
    """The same bfloat16 values (any NaN equals any NaN: a NaN's payload after a sum is MPI's choice)."""
    got = got.numpy() if isinstance(got, dtrain.Tensor) else got
    if got.dtype != BF16:
        return expect(False, f"dtype {got.dtype}, expected bfloat16")
    g, w = got.astype(np.float32), want.astype(np.float32)
    ok = np.where(np.isnan(w), np.isnan(g), g.view(np.uint32) == w.view(np.uint32))
    expect(ok.all(), f"{(~ok).sum()} of {ok.size} differ, e.g. got {g[~ok][:5]}, want {w[~ok][:5]}")


# ---- data movement: bit for bit ---------------------------------------------------------------
def broadcast_bits():
    for size in SIZES:
        for src in range(N):
            buf = words(RANK, size)
            dist.broadcast(buf, src=src)
            same_bits(buf, words(src, size))
        t = dtrain.tensor(words(RANK, size))
        dist.broadcast(t, src=N - 1, async_op=True).wait()
        same_bits(t, words(N - 1, size))
    strided = words(RANK, 64).reshape(8, 8).T  # not contiguous: through a copy written back
    dist.broadcast(strided, src=0)
    same_bits(strided, words(0, 64).reshape(8, 8).T)


def all_gather_bits():
    for size in SIZES:
        outs = [np.empty(size, BF16) for _ in range(N)]
        dist.all_gather(outs, words(RANK, size))
        for r in range(N):
            same_bits(outs[r], words(r, size))
        out = dtrain.tensor(np.empty(N * size, BF16))
        dist.all_gather_into_tensor(out, dtrain.tensor(words(RANK, size)), async_op=True).wait()
        same_bits(out, np.concatenate([words(r, size) for r in range(N)]))


def gather_scatter_bits():
    for size in SIZES:
        dst = N - 1
        outs = [np.empty(size, BF16) for _ in range(N)] if RANK == dst else None
        dist.gather(words(RANK, size), outs, dst=dst)
        if RANK == dst:
            for r in range(N):
                same_bits(outs[r], words(r, size))
        out = np.empty(size, BF16)
        dist.scatter(out, [words(r, size, salt=1) for r in range(N)] if RANK == 0 else None, src=0)
        same_bits(out, words(RANK, size, salt=1))


def all_to_all_bits():
    """Rank r sends its block j (words(r, size, salt=j)) to rank j."""
    for size in SIZES:
        outs = [np.empty(size, BF16) for _ in range(N)]
        dist.all_to_all(outs, [words(RANK, size, salt=j) for j in range(N)])
        for r in range(N):
            same_bits(outs[r], words(r, size, salt=RANK))
        out = np.empty(N * size, BF16)
        dist.all_to_all_single(out, np.concatenate([words(RANK, size, salt=j) for j in range(N)]))
        same_bits(out, np.concatenate([words(r, size, salt=RANK) for r in range(N)]))


def point_to_point_bits():
    """A ring: isend to the next rank, irecv from the one before; then send/recv between pairs."""
    nxt, prev = (RANK + 1) % N, (RANK - 1) % N
    for size in SIZES:
        got = np.empty(size, BF16)
        recv = dist.irecv(got, src=prev)
        send = dist.isend(words(RANK, size), dst=nxt)
        send.wait(), recv.wait()
        same_bits(got, words(prev, size))
    peer = RANK ^ 1
    if peer < N:
        got = dtrain.tensor(np.empty(SIZES[-1], BF16))
        if RANK % 2 == 0:
            dist.send(dtrain.tensor(words(RANK, SIZES[-1])), dst=peer)
            dist.recv(got, src=peer)
        else:
            dist.recv(got, src=peer)
            dist.send(dtrain.tensor(words(RANK, SIZES[-1])), dst=peer)
        same_bits(got, words(peer, SIZES[-1]))


# ---- reductions: in float32, rounded once ---------------------------------------------------------
def all_reduce_every_op():
    for op in OPS:
        for size in SIZES:
            buf = values(RANK, size, op)
            dist.all_reduce(buf, op=op)
            equal_values(buf, reference(size, op))
            t = dtrain.tensor(values(RANK, size, op, salt=1))
            dist.all_reduce(t, op=op, async_op=True).wait()
            equal_values(t, reference(size, op, salt=1))


def reduce_every_op():
    """Only the destination gets the result; the other ranks' tensors keep their bits."""
    dst = N - 1
    for op in OPS:
        for size in SIZES:
            buf = values(RANK, size, op)
            dist.reduce(buf, dst=dst, op=op)
            if RANK == dst:
                equal_values(buf, reference(size, op))
            else:
                same_bits(buf, values(RANK, size, op))


def reduce_scatter_every_op():
    """Block i of every rank's input, reduced, lands on rank i (list and single-tensor forms)."""
    for op in OPS:
        for size in SIZES:
            want = reference(N * size, op)[RANK * size:(RANK + 1) * size]
            whole = values(RANK, N * size, op)
            out = np.empty(size, BF16)
            dist.reduce_scatter(out, [whole[i * size:(i + 1) * size] for i in range(N)], op=op)
            equal_values(out, want)
            out = dtrain.tensor(np.empty(size, BF16))
            dist.reduce_scatter_tensor(out, dtrain.tensor(whole), op=op, async_op=True).wait()
            equal_values(out, want)


def all_reduce_coalesced_every_op():
    """One message of several tensors (DDP's and ZeRO's call): every op, and SUM with a scale."""
    sizes = (3, 70_001, 5)
    for op in OPS:
        ts = [values(RANK, s, op, salt=k) for k, s in enumerate(sizes)]
        dist.all_reduce_coalesced(ts, op=op)
        for k, s in enumerate(sizes):
            equal_values(ts[k], reference(s, op, salt=k))
    g = group_or_default(None, "all_reduce_coalesced")
    ts = [dtrain.tensor(values(RANK, s, ReduceOp.SUM, salt=k)) for k, s in enumerate(sizes)]
    g.all_reduce_coalesced(ts, scale=0.5)  # this rank's values halved (exact), then summed
    for k, s in enumerate(sizes):
        want = (reference(s, ReduceOp.SUM, salt=k).astype(np.float32) * np.float32(0.5)).astype(BF16)
        equal_values(ts[k], want)


def rounded_once_not_per_addition():
    """1 + (N - 1) * 2**-8 (2**-8: half a bfloat16 step at 1) is rounded once: 1 at 2 ranks (a
    tie, to even), 1 + 2**-6 at 4 (1.5 steps: a tie, to even). Rounding after each addition in
    rank order would stay at 1 at 4 ranks (each 1 + 2**-8 a tie, back to 1); PyTorch's gloo
    gets 1 + 2**-6 here (its ring adds the small ones first), but differs elsewhere."""
    buf = np.array([1.0 if RANK == 0 else 2.0 ** -8], np.float32).astype(BF16)
    dist.all_reduce(buf)
    want = {2: 1.0, 4: 1.0 + 2.0 ** -6}.get(N, float(np.float32(1 + (N - 1) * 2.0 ** -8).astype(BF16)))
    assert float(buf[0]) == want, f"{float(buf[0])!r} != {want!r}"


# ---- what the reports say, and what stays refused -----------------------------------------------
def descriptions_name_bfloat16():
    """The group's history (the hang report's) and the cross-rank check describe bfloat16."""
    g = group_or_default(None, "broadcast")
    host = np.zeros((2, 3), BF16)
    dist.broadcast(host, src=0)
    history = g._group_for(host).history  # under NCCL, host arrays run on the MPI group underneath
    assert str(history[-1]) == "broadcast(bfloat16[2, 3])", str(history[-1])
    mine = np.zeros(3, BF16 if RANK == 0 else np.float32)
    try:
        check_call(g, describe("broadcast", mine, src=0), every_call=True)
        raise AssertionError("ranks calling broadcast with bfloat16 and float32 passed the check")
    except DistError as e:
        others = "rank 1" if N == 2 else f"ranks {', '.join(map(str, range(1, N)))}"
        assert f"rank 0 called broadcast(bfloat16[3], src=0); {others} called broadcast(float32[3], src=0)" \
            in str(e), str(e)


def other_ml_dtypes_refused():
    """ml_dtypes' other types (float8 here) are refused, naming the dtype: no reduction for them."""
    import ml_dtypes
    for call in (lambda a: dist.all_reduce(a), lambda a: dist.broadcast(a, src=0)):
        try:
            call(np.zeros(3, ml_dtypes.float8_e4m3fn))
            raise AssertionError("a float8 array went through")
        except TypeError as e:
            assert "tensor has dtype float8_e4m3fn, which collectives cannot move" in str(e), str(e)


# ---- training ------------------------------------------------------------------------------------
STEPS, BATCH = 3, 8
X = np.random.default_rng(5).standard_normal((BATCH, 12)).astype(np.float32)
Y = np.random.default_rng(6).integers(0, 4, BATCH)


def model(dtype=None):
    dtrain.manual_seed(0)
    m = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4))
    return m if dtype is None else m.to(dtype)


def train(m, rows, cast=True):
    """STEPS steps of SGD on the batch rows ``rows``; the losses and the parameters as float32."""
    opt = dtrain.optim.SGD(m.parameters(), lr=0.5)
    losses = []
    for _ in range(STEPS):
        x = dtrain.tensor(X[rows])
        loss = F.cross_entropy(m(x.to(BF16) if cast else x), dtrain.tensor(Y[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses, [p.detach().float().numpy().copy() for p in m.parameters()]


def global_losses(losses):
    """The mean over ranks of each step's loss (every rank's local batch is the same size)."""
    out = np.array(losses, np.float64)
    dist.all_reduce(out)
    return out / N


def ddp_bfloat16_equals_one_process():
    """DDP of a bfloat16 model, each rank on BATCH / N rows, ends where one process on the whole
    batch does: parameters and losses within 1e-2 relative (measured at 2 and 4 ranks: at most
    2.9e-3 and 2.1e-3; bfloat16 keeps 8 significant bits, a step of 3.9e-3, and the two round the
    gradient's partial sums at other places). The parameters are bfloat16, and the same bits
    on every rank."""
    ddp = DDP(model(BF16))
    losses, params = train(ddp, slice(RANK, None, N))
    one_losses, one_params = train(model(BF16), slice(None))
    expect(all(p.dtype == BF16 for p in ddp.parameters()), "DDP's parameters are not bfloat16")
    for p, q in zip(params, one_params):
        expect(rel(p, q) < 1e-2, f"parameter differs from one process's by {rel(p, q):.2e}")
    loss_rel = rel(global_losses(losses), np.array(one_losses))
    expect(loss_rel < 1e-2, f"losses differ from one process's by {loss_rel:.2e}")
    for p in ddp.parameters():
        every = [np.empty(p.shape, BF16) for _ in range(N)]
        dist.all_gather(every, p.detach().numpy())
        for e in every:
            same_bits(e, p.detach().numpy())


def fully_shard_bfloat16_equals_ddp():
    """fully_shard with MixedPrecisionPolicy(param_dtype=bfloat16) (all-gathers in bfloat16,
    reduce-scatters in bfloat16, float32 shards) takes the steps of DDP of the bfloat16 model:
    parameters and losses within 1e-2 relative (measured at 2 and 4 ranks: at most 4.6e-3 and
    1.0e-3; DDP updates bfloat16 parameters, fully_shard float32 shards: they round differently)."""
    sharded = model()
    for layer in sharded:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mp_policy=MixedPrecisionPolicy(param_dtype=BF16))
    fully_shard(sharded, mp_policy=MixedPrecisionPolicy(param_dtype=BF16))
    expect(sharded(dtrain.tensor(X[:2])).dtype == BF16, "the forward did not compute in bfloat16")
    losses, _ = train(sharded, slice(RANK, None, N), cast=False)
    ddp_losses, ddp_params = train(DDP(model(BF16)), slice(RANK, None, N))
    loss_rel = rel(global_losses(losses), global_losses(ddp_losses))
    expect(loss_rel < 1e-2, f"losses differ from DDP's by {loss_rel:.2e}")
    full = [v.float().numpy() for v in sharded.state_dict().values()]  # gathered, in parameter order
    assert len(full) == len(ddp_params)
    for p, q in zip(full, ddp_params):
        assert p.shape == q.shape, f"{p.shape} != {q.shape}"
        assert rel(p, q) < 1e-2, f"parameter differs from DDP's by {rel(p, q):.2e}"


# ---- against PyTorch (--pytorch STORE: only this) ----------------------------------------------------
def all_reduce_equals_gloo():
    """all_reduce of bfloat16 equals PyTorch's on gloo bit for bit at 2 ranks, for every op gloo
    has (SUM, PRODUCT, MIN, MAX), on 100,000 random values over 2**-20 .. 2**20: gloo adds two
    values as floats and rounds once, as here. At 4 ranks gloo rounds after each addition of its
    ring, and the sums differ where those roundings moved them: not compared."""
    import torch
    import torch.distributed as tdist
    tdist.init_process_group("gloo", init_method=f"file://{sys.argv[2]}", rank=RANK, world_size=N)
    try:
        rng = np.random.default_rng(RANK)
        mine = (rng.standard_normal(100_000) * 2.0 ** rng.integers(-20, 20, 100_000)).astype(np.float32).astype(BF16)
        for op, theirs in ((ReduceOp.SUM, tdist.ReduceOp.SUM), (ReduceOp.PRODUCT, tdist.ReduceOp.PRODUCT),
                           (ReduceOp.MIN, tdist.ReduceOp.MIN), (ReduceOp.MAX, tdist.ReduceOp.MAX)):
            t = torch.from_numpy(mine.astype(np.float32)).to(torch.bfloat16)
            tdist.all_reduce(t, op=theirs)
            ours = mine.copy()
            dist.all_reduce(ours, op=op)
            same_bits(ours, t.float().numpy().astype(BF16))
    finally:
        tdist.destroy_process_group()


def no_bfloat16_on_a_gpu():
    """CuPy has no bfloat16 dtype, so neither has dtrain on a GPU: moving a bfloat16 tensor there
    fails naming bfloat16 (GPU bfloat16 reductions take uint16 bits: dist.all_reduce_bfloat16)."""
    try:
        dtrain.zeros(2, dtype=BF16).to("cuda")
        raise AssertionError("a bfloat16 tensor went to the GPU")
    except (TypeError, ValueError) as e:
        assert "bfloat16" in str(e), str(e)


PYTORCH = [("all_reduce equals PyTorch's gloo", all_reduce_equals_gloo)]
ALL = [("broadcast moves every bit", broadcast_bits),
       ("all_gather and all_gather_into_tensor move every bit", all_gather_bits),
       ("gather and scatter move every bit", gather_scatter_bits),
       ("all_to_all and all_to_all_single move every bit", all_to_all_bits),
       ("isend/irecv and send/recv move every bit", point_to_point_bits),
       ("all_reduce is float32's rounded once, every op", all_reduce_every_op),
       ("reduce is float32's rounded once, every op", reduce_every_op),
       ("reduce_scatter is float32's rounded once, every op", reduce_scatter_every_op),
       ("all_reduce_coalesced is float32's rounded once", all_reduce_coalesced_every_op),
       ("a sum is rounded once, not per addition", rounded_once_not_per_addition),
       ("descriptions name bfloat16", descriptions_name_bfloat16),
       ("other ml_dtypes types are refused", other_ml_dtypes_refused),
       ("DDP of a bfloat16 model equals one process", ddp_bfloat16_equals_one_process),
       ("fully_shard with bfloat16 param_dtype equals DDP", fully_shard_bfloat16_equals_ddp)]
if BACKEND == "nccl":
    ALL.append(("no bfloat16 tensor on a GPU", no_bfloat16_on_a_gpu))
for name, fn in PYTORCH if sys.argv[1:2] == ["--pytorch"] else ALL:
    checks.run(name, settled(fn))
checks.finish()
