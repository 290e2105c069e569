"""PowerSGD checks run on every rank under ``mpiexec -n N python powersgd_checks.py RESULTS.json``
(``--pytorch``: only the comparisons with PyTorch's hook and DDP, torch on gloo beside dtrain).

Each check runs on all ranks through tests/rank_harness.py; rank 0 writes
``{check: {rank: "ok" | error}}`` to RESULTS.json for test_powersgd.py. Every rank can make
every rank's gradients (seeded by step, bucket and rank), so each checks the hook's
output against powersgd_reference.py's simulation of all N ranks.
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
from dtrain.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD  # noqa: E402
from dtrain.examples.gpt import GPT  # noqa: E402
from dtrain.parallel import DistributedDataParallel as DDP  # noqa: E402
from powersgd_reference import FakeBucket, Reference  # noqa: E402
from rank_harness import RankChecks, gathered, rel  # noqa: E402

# two buckets: matrices compressed at rank 1 (two of one shape), vectors, a 3-D weight, one
# below the compression threshold at rank 3 (6 x 7), a scalar, and matrices of < 16 columns
BUCKETS = [[(20, 8), (8,), (20, 8), (5, 3, 2), (40, 12), (6, 7)], [(7,), (33, 17), (), (64, 3)]]
CONFIGS = {  # name: (PowerSGDState's keywords, Reference's)
    "default": ({}, {}),
    "rank 3 (QR), rate 0.5": ({"matrix_approximation_rank": 3, "min_compression_rate": 0.5}, {"rank": 3, "min_rate": 0.5}),
    "batched shapes": ({"batch_tensors_with_same_shape": True}, {"batch_same_shape": True}),
    "no warm start": ({"warm_start": False}, {"warm_start": False}),
    "no error feedback, rank 2": ({"use_error_feedback": False, "matrix_approximation_rank": 2},
                                  {"error_feedback": False, "rank": 2}),
}
START, STEPS = 2, 5
TORCH_STORE = None  # the file PyTorch's gloo group meets through (--pytorch)


def grads(step, index, dtype, scale=1.0):
    """Every rank's flat gradient of bucket ``index`` at ``step`` (rank r's: a shared part plus its own)."""
    n = sum(int(np.prod(s)) for s in BUCKETS[index])
    shared = np.random.default_rng([step, index]).standard_normal(n)
    return [(scale * (shared + 0.5 * np.random.default_rng([step, index, r]).standard_normal(n))).astype(dtype)
            for r in range(dist.get_world_size())]


def run_hook(hook, state, reference, batched, dtype, tol):
    """STEPS steps of the BUCKETS through ``hook`` on this rank and through the reference
    for all ranks: outputs and this rank's error feedback within ``tol``."""
    rank = dist.get_rank()
    for step in range(STEPS):
        for index, shapes in enumerate(BUCKETS):
            last = index == len(BUCKETS) - 1
            everyone = grads(step, index, dtype)
            got = hook(state, FakeBucket(everyone[rank].copy(), shapes, index, last)).wait()
            want = reference.batched_step(index, everyone, last) if batched else \
                reference.step(index, everyone, shapes, last)
            assert got.dtype == dtype, f"step {step}, bucket {index}: the hook returned {got.dtype}, not {dtype}"
            err = rel(got, want)
            assert err <= tol, f"step {step}, bucket {index}: {err:.3g} from the reference"
            if step >= START and state.use_error_feedback:
                err = rel(state.error_dict[index], reference.errors[index][rank])
                assert err <= tol, f"step {step}, bucket {index}: error feedback {err:.3g} from the reference's"
    assert state.iter == STEPS, f"state.iter is {state.iter} after {STEPS} steps"


def check_hook_equals_reference():
    """powerSGD_hook on each config, 5 steps x 2 buckets, float64: every rank's output (the
    average every rank receives) and its error feedback are within 1e-12 of the reference
    simulating all ranks; in float32 within 1e-5."""
    for name, (ours, theirs) in CONFIGS.items():
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
            try:
                state = powerSGD.PowerSGDState(None, start_powerSGD_iter=START, random_seed=5, **ours)
                reference = Reference(dist.get_world_size(), start=START, seed=5, **theirs)
                run_hook(powerSGD.powerSGD_hook, state, reference, False, dtype, tol)
            except AssertionError as e:
                raise AssertionError(f"{name}, {np.dtype(dtype)}: {e}") from None


def check_batched_hook_equals_reference():
    """batched_powerSGD_hook (the bucket as one zero-padded square), rank 1 and 2, with and
    without warm start: outputs and error feedback within 1e-12 of the reference (float64)."""
    for ours, theirs in (({}, {}), ({"matrix_approximation_rank": 2, "warm_start": False},
                                    {"rank": 2, "warm_start": False})):
        state = powerSGD.PowerSGDState(None, start_powerSGD_iter=START, random_seed=9, **ours)
        reference = Reference(dist.get_world_size(), start=START, seed=9, **theirs)
        run_hook(powerSGD.batched_powerSGD_hook, state, reference, True, np.float64, 1e-12)


def gpt():
    dtrain.manual_seed(0)
    return GPT(24, 8, 2, 2, 16).double()


def batches(steps, seed=7):
    """This rank's rows of each step's global batch of 8 sequences."""
    rank, n = dist.get_rank(), dist.get_world_size()
    tokens = np.random.default_rng(seed).integers(0, 24, (steps, 8, 9))[:, rank * 8 // n:(rank + 1) * 8 // n]
    return [(dtrain.tensor(t[:, :-1]), dtrain.tensor(t[:, 1:])) for t in tokens]


def train(model, data, hook=None, state=None, after_backward=None, **ddp_kw):
    ddp = DDP(model, **ddp_kw)
    if hook is not None:
        ddp.register_comm_hook(state, hook)
    opt = dtrain.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    for x, y in data:
        opt.zero_grad()
        ddp(x, y)[1].backward()
        if after_backward:
            after_backward(model)
        opt.step()
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def check_ddp_full_rank_equals_plain_ddp():
    """DDP + PowerSGD at full rank (matrix_approximation_rank >= every dimension, every tensor
    compressed: min_compression_rate 0) is exact, so 8 SGD steps of the GPT example's model
    (float64, several buckets) end within 1e-9 of plain DDP's: the P and Q sums over the
    ranks and the averaging are right."""
    data = batches(8)
    state = powerSGD.PowerSGDState(None, matrix_approximation_rank=64, min_compression_rate=0, start_powerSGD_iter=2)
    got = train(gpt(), data, powerSGD.powerSGD_hook, state, bucket_cap_mb=0.004)
    want = train(gpt(), data, bucket_cap_mb=0.004)
    assert state.iter == 8 and len(state.q_memory_dict) > 1, (state.iter, len(state.q_memory_dict))
    err = rel(got, want)
    assert err <= 1e-9, f"full-rank PowerSGD is {err:.3g} from plain DDP"


def check_ddp_low_rank_through_reference():
    """DDP + PowerSGD at rank 1 on the GPT example's model (float64, several buckets, 8 steps,
    compression from step 3): the parameters are bit-identical on every rank; the first 3
    steps equal plain DDP's; every bucket's output equals the reference fed with all
    ranks' bucket inputs (1e-10); each .grad after backward holds its slot of the output;
    the error feedback kept is input + previous error - output."""
    data, calls = batches(8), []

    def recording(state, bucket):
        call = {"index": bucket.index(), "last": bucket.is_last(), "input": bucket.buffer().copy(),
                "shapes": [tuple(g.shape) for g in bucket.gradients()], "params": bucket.parameters()}
        calls.append(call)

        def keep(fut):
            call["output"] = fut.value().copy()
            call["error"] = state.error_dict[call["index"]].copy() if call["index"] in state.error_dict else None
            return fut.value()
        return powerSGD.powerSGD_hook(state, bucket).then(keep)

    grads_seen = []
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=3)
    got = train(gpt(), data, recording, state, lambda m: grads_seen.append(
        {id(p): p.grad.numpy().copy() for p in m.parameters()}), bucket_cap_mb=0.004)
    step_of, step = [], 0
    for call in calls:  # a step's calls end with its last bucket's
        step_of.append(step)
        step += call["last"]
    assert step == 8, f"{step} hook calls with is_last() in 8 steps"
    everyone = gathered(got)
    assert all(np.array_equal(everyone[0], other) for other in everyone), "ranks ended with different parameters"
    early = train(gpt(), data[:3])
    first3 = train(gpt(), data[:3], powerSGD.powerSGD_hook, powerSGD.PowerSGDState(None, start_powerSGD_iter=3))
    assert rel(first3, early) <= 1e-14, f"before start_powerSGD_iter: {rel(first3, early):.3g} from plain DDP"
    inputs = gathered([c["input"] for c in calls])
    reference, rank, previous = Reference(dist.get_world_size(), start=3), dist.get_rank(), {}
    for k, call in enumerate(calls):
        want = reference.step(call["index"], [inputs[r][k] for r in range(len(inputs))], call["shapes"], call["last"])
        assert rel(call["output"], want) <= 1e-10, f"call {k}: {rel(call['output'], want):.3g} from the reference"
        if call["error"] is not None:
            kept = call["input"] + previous.get(call["index"], 0) - call["output"]
            np.testing.assert_allclose(call["error"], kept, rtol=0, atol=1e-14)
            previous[call["index"]] = call["error"]
    assert len(calls) > 8, f"{len(calls)} hook calls in 8 steps: expected several buckets"
    compressed = [call for call, step in zip(calls, step_of) if step >= 3]
    assert all(c["error"] is not None for c in compressed), "no error feedback after compression started"
    for call, step in zip(calls, step_of):  # each .grad after backward holds its slot of the bucket's output
        offsets = np.cumsum([0] + [int(np.prod(s)) for s in call["shapes"]])
        for p, a, b in zip(call["params"], offsets, offsets[1:]):
            np.testing.assert_array_equal(grads_seen[step][id(p)].ravel(), call["output"][a:b])


def check_changed_bucket_is_an_error():
    """A bucket whose size changes after compression started is a RuntimeError naming the
    bucket and both sizes (error feedback and warm start cannot carry over), on every rank."""
    state = powerSGD.PowerSGDState(None, start_powerSGD_iter=2)
    for step in range(3):
        powerSGD.powerSGD_hook(state, FakeBucket(grads(step, 0, np.float64)[dist.get_rank()], BUCKETS[0], 0,
                                                 True)).wait()
    try:
        powerSGD.powerSGD_hook(state, FakeBucket(np.ones(10), [(5, 2)], 0, True))
    except RuntimeError as e:
        size = sum(int(np.prod(s)) for s in BUCKETS[0])
        assert "bucket 0 holds 10 gradient elements" in str(e) and f"has {size}" in str(e), str(e)
    else:
        raise AssertionError("a bucket of another size went through")


# ---- against PyTorch (2 ranks, --pytorch) ----------------------------------------------
def torch_group():
    """PyTorch's gloo group over the same ranks, met through a file beside the results (no
    TCP port to choose: a free port found by one process can be taken by another meanwhile)."""
    import torch.distributed as tdist
    if not tdist.is_initialized():
        tdist.init_process_group("gloo", init_method=f"file://{TORCH_STORE}", rank=dist.get_rank(),
                                 world_size=dist.get_world_size())


def pytorch_hook_equals_dtrain():
    """PyTorch's powerSGD_hook (on gloo) and dtrain's, the same state and the same per-rank
    gradients (2 buckets x 5 steps, each config, float64 and float32, same random_seed: no
    Q is copied over): every output, error feedback and warm-start Q within 1e-12 (float64)
    or 1e-5 (float32)."""
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as theirs_module
    torch_group()
    rank = dist.get_rank()
    for name, (kw, _) in CONFIGS.items():
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
            ours = powerSGD.PowerSGDState(None, start_powerSGD_iter=START, random_seed=11, **kw)
            theirs = theirs_module.PowerSGDState(None, start_powerSGD_iter=START, random_seed=11, **kw)
            for step in range(STEPS):
                for index, shapes in enumerate(BUCKETS):
                    shapes = [s or (1,) for s in shapes]  # PyTorch's hook cannot view a 0-d gradient as a matrix
                    g = grads(step, index, dtype)[rank]
                    last = index == len(BUCKETS) - 1
                    got = powerSGD.powerSGD_hook(ours, FakeBucket(g.copy(), shapes, index, last)).wait()
                    want = theirs_module.powerSGD_hook(theirs, TorchBucket(torch.from_numpy(g.copy()), shapes, index,
                                                                           last)).wait()
                    want = (want[0] if isinstance(want, list) else want).numpy()
                    where = f"{name}, {np.dtype(dtype)}, step {step}, bucket {index}"
                    assert rel(got, want) <= tol, f"{where}: output {rel(got, want):.3g} from PyTorch's"
                    for field in ("error_dict", "q_memory_dict"):
                        if index in getattr(theirs, field):
                            a, b = getattr(ours, field)[index], getattr(theirs, field)[index].numpy()
                            assert rel(a, b) <= tol, f"{where}: {field} {rel(a, b):.3g} from PyTorch's"
            assert ours.compression_stats() == theirs.compression_stats(), \
                (ours.compression_stats(), theirs.compression_stats())


class TorchBucket(FakeBucket):
    """FakeBucket over a torch tensor (gradients: views of it, as PyTorch's GradBucket gives)."""

    def gradients(self):
        offsets = np.cumsum([0] + [int(np.prod(s)) for s in self.shapes])
        return [self.flat[a:b].view(s) for a, b, s in zip(offsets, offsets[1:], self.shapes)]

    def set_buffer(self, tensor):  # what PyTorch's fp16_compress_wrapper calls
        self.flat = tensor


def wrapped_powersgd_steps(wrapper):
    """PyTorch's ``wrapper(powerSGD_hook)`` (on gloo) and dtrain's (``wrapper``: the name of a
    default_hooks wrapper), rank 1 and 3 (same random_seed), 2 buckets x 5 steps of the same
    float32 per-rank gradients; yields ``(where, got, want, ours, theirs, index)`` per call:
    dtrain's output, PyTorch's as float32 NumPy, the two states, the bucket index."""
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks as theirs_default
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as theirs_module
    from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks as ours_default
    torch_group()
    ours_hook = getattr(ours_default, wrapper)(powerSGD.powerSGD_hook)
    theirs_hook = getattr(theirs_default, wrapper)(theirs_module.powerSGD_hook)
    for kw in ({}, {"matrix_approximation_rank": 3}):
        ours = powerSGD.PowerSGDState(None, start_powerSGD_iter=START, random_seed=2, **kw)
        theirs = theirs_module.PowerSGDState(None, start_powerSGD_iter=START, random_seed=2, **kw)
        for step in range(STEPS):
            for index, shapes in enumerate(BUCKETS):
                shapes = [s or (1,) for s in shapes]
                g = grads(step, index, np.float32)[dist.get_rank()]
                last = index == len(BUCKETS) - 1
                got = ours_hook(ours, FakeBucket(g.copy(), shapes, index, last)).wait()
                want = theirs_hook(theirs, TorchBucket(torch.from_numpy(g.copy()), shapes, index, last)).wait()
                yield f"{kw}, step {step}, bucket {index}", got, want.float().numpy(), ours, theirs, index


def pytorch_fp16_wrapper_equals_dtrain():
    """fp16_compress_wrapper(powerSGD_hook), PyTorch's and dtrain's, on the same float32
    per-rank gradients (2 buckets x 5 steps, rank 1 and 3; float16 orthogonalizes by
    Gram-Schmidt at any rank): float32 outputs within 5e-3 and float16 error feedback within
    2e-2 of PyTorch's (float16 rounds at 5e-4 and the matrix products sum in other orders;
    the differences grow over the steps through the error feedback)."""
    for where, got, want, ours, theirs, index in wrapped_powersgd_steps("fp16_compress_wrapper"):
        assert got.dtype == np.float32, f"{where}: the wrapper returned {got.dtype}"
        assert rel(got, want) <= 5e-3, f"{where}: output {rel(got, want):.3g} from PyTorch's"
        if index in theirs.error_dict:
            a, b = ours.error_dict[index], theirs.error_dict[index].float().numpy()
            assert a.dtype == np.float16, f"{where}: error feedback kept as {a.dtype}"
            assert rel(a, b) <= 2e-2, f"{where}: error feedback {rel(a, b):.3g} from PyTorch's"


def pytorch_ddp_equals_dtrain():
    """PyTorch's DDP + powerSGD_hook and dtrain's on the same MLP (float64, same weights and
    batches, compression from step 3, SGD momentum, 10 steps): parameters within 1e-10."""
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as theirs_module
    torch_group()
    rank, n = dist.get_rank(), dist.get_world_size()
    dtrain.manual_seed(3)
    ours = nn.Sequential(nn.Linear(12, 40), nn.Tanh(), nn.Linear(40, 24), nn.Tanh(), nn.Linear(24, 3)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(12, 40), torch.nn.Tanh(), torch.nn.Linear(40, 24), torch.nn.Tanh(),
                                 torch.nn.Linear(24, 3)).double()
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    ddp_ours, ddp_theirs = DDP(ours), torch.nn.parallel.DistributedDataParallel(theirs)
    ddp_ours.register_comm_hook(powerSGD.PowerSGDState(None, start_powerSGD_iter=3), powerSGD.powerSGD_hook)
    ddp_theirs.register_comm_hook(theirs_module.PowerSGDState(None, start_powerSGD_iter=3), theirs_module.powerSGD_hook)
    opts = [dtrain.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9),
            torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)]
    rng = np.random.default_rng(4)
    for _ in range(10):
        x, y = rng.standard_normal((8, 12)), rng.integers(0, 3, 8)
        x, y = x[rank * 8 // n:(rank + 1) * 8 // n], y[rank * 8 // n:(rank + 1) * 8 // n]
        for model, opt, lib, fn in ((ddp_ours, opts[0], dtrain, F), (ddp_theirs, opts[1], torch, torch.nn.functional)):
            opt.zero_grad()
            fn.cross_entropy(model(lib.tensor(x)), lib.tensor(y)).backward()
            opt.step()
    err = rel(np.concatenate([p.detach().numpy().ravel() for p in ours.parameters()]),
              np.concatenate([p.detach().numpy().ravel() for p in theirs.parameters()]))
    assert err <= 1e-10, f"dtrain's DDP + PowerSGD is {err:.3g} from PyTorch's"


def main(path, pytorch):
    global TORCH_STORE
    TORCH_STORE = os.path.join(os.path.dirname(os.path.abspath(path)), "torch_store")
    checks = RankChecks()
    if pytorch:
        selected = [("pytorch_hook_equals_dtrain", pytorch_hook_equals_dtrain),
                    ("pytorch_fp16_wrapper_equals_dtrain", pytorch_fp16_wrapper_equals_dtrain),
                    ("pytorch_ddp_equals_dtrain", pytorch_ddp_equals_dtrain)]
    else:
        selected = [(name, fn) for name, fn in globals().items() if name.startswith("check_")]
    for name, fn in selected:
        checks.run(name, fn)
    if pytorch:
        import torch.distributed as tdist
        if tdist.is_initialized():
            tdist.destroy_process_group()
    everyone = gathered(checks.results)
    if checks.rank == 0:
        with open(path, "w") as f:
            json.dump({name: {r: res[name] for r, res in enumerate(everyone)} for name, _ in selected}, f, indent=1)
    checks.finish()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] == ["--pytorch"])
