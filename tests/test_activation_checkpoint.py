"""Activation checkpointing (dtrain.utils.checkpoint): the recomputed backward gives exactly the
gradients of the plain one (float64, dropout included: the random state is replayed), equals
PyTorch's from the same weights, and refuses what PyTorch refuses."""
import sys
import warnings

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from comm_helpers import assert_all_checks_passed, clean_env, require_mpi, run
from dtrain.tensor import memory
from dtrain.utils.checkpoint import checkpoint, checkpoint_sequential

REENTRANT = [False, True]


def _mlp():
    dtrain.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def _block(dropout=0.2):
    dtrain.manual_seed(0)
    return nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, dropout=dropout,
                                      batch_first=True, norm_first=True).double()


def _grads(model, x, run, seed=7):
    """Output, input gradient and parameter gradients of ``run(model, x)`` under ``seed``."""
    model.zero_grad()
    x = x.detach().requires_grad_(True)
    dtrain.manual_seed(seed)
    out = run(model, x)
    (out * dtrain.arange(out.numel(), dtype=dtrain.float64).view(out.shape)).sum().backward()
    return [out.detach().numpy(), x.grad.numpy()] + [p.grad.numpy().copy() for p in model.parameters()]


def _assert_same(a, b):
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(u, v, err_msg=f"entry {i} (0: output, 1: input grad, then parameters)")


def _plain(model, x):
    return model(x)


@pytest.mark.parametrize("reentrant", REENTRANT)
def test_mlp_gradients_equal_plain(reentrant):
    """An MLP checkpointed whole: output, input and parameter gradients bit-equal the plain run's."""
    model, x = _mlp(), dtrain.randn(5, 6, dtype=dtrain.float64)
    _assert_same(_grads(model, x, _plain), _grads(model, x, lambda m, x: checkpoint(m, x, use_reentrant=reentrant)))


@pytest.mark.parametrize("reentrant", REENTRANT)
def test_transformer_block_with_dropout_recomputes_the_same_masks(reentrant):
    """A pre-norm transformer block with dropout 0.2: the recomputation replays the random state,
    so the gradients bit-equal the plain run's under the same seed (and differ under another seed)."""
    model, x = _block(), dtrain.randn(2, 5, 16, dtype=dtrain.float64)
    model.train()
    plain = _grads(model, x, _plain)
    _assert_same(plain, _grads(model, x, lambda m, x: checkpoint(m, x, use_reentrant=reentrant)))
    other = _grads(model, x, _plain, seed=8)
    assert not np.array_equal(plain[0], other[0]), "dropout drew the same masks under another seed"


def test_random_state_after_checkpoint_is_the_plain_runs():
    """Recomputing in backward leaves the generator where the plain run leaves it."""
    model, x = _block(), dtrain.randn(2, 5, 16, dtype=dtrain.float64)
    _grads(model, x, _plain)
    after_plain = dtrain.rand(4).numpy()
    _grads(model, x, lambda m, x: checkpoint(m, x, use_reentrant=False))
    np.testing.assert_array_equal(dtrain.rand(4).numpy(), after_plain)


def test_without_preserve_rng_state_dropout_masks_differ():
    """preserve_rng_state=False: the recomputation draws new masks, so the gradients differ."""
    model, x = _block(dropout=0.5), dtrain.randn(2, 5, 16, dtype=dtrain.float64)
    plain = _grads(model, x, _plain)
    free = _grads(model, x, lambda m, x: checkpoint(m, x, use_reentrant=False, preserve_rng_state=False))
    np.testing.assert_array_equal(plain[0], free[0])  # the forward itself is the plain one
    assert not np.array_equal(plain[2], free[2])


@pytest.mark.parametrize("reentrant", REENTRANT)
def test_checkpoint_sequential_over_12_blocks(reentrant):
    """checkpoint_sequential over nn.Sequential of 12 blocks in 4 segments equals the plain run."""
    dtrain.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Dropout(0.1)) for _ in range(12)]).double()
    x = dtrain.randn(3, 8, dtype=dtrain.float64)
    _assert_same(_grads(model, x, _plain),
                 _grads(model, x, lambda m, x: checkpoint_sequential(m, 4, x, use_reentrant=reentrant)))


def test_tuple_outputs_and_keyword_tensor():
    """A function of a positional and a keyword tensor returning (Tensor, int, Tensor): the
    int passes through, both tensors' gradients and the parameter's equal the plain run's (to
    rounding: each output backpropagates separately, so the contributions add in another order)."""
    w = dtrain.randn(4, 4, dtype=dtrain.float64, requires_grad=True)

    def f(a, b=None):
        h = (a @ w).tanh()
        return h * b, 3, (h + b).sin()

    def run(fn):
        w.grad = None
        a = dtrain.randn(2, 4, dtype=dtrain.float64, generator=dtrain.Generator().manual_seed(1)).requires_grad_()
        b = dtrain.randn(2, 4, dtype=dtrain.float64, generator=dtrain.Generator().manual_seed(2)).requires_grad_()
        y, n, z = fn(a, b=b)
        assert n == 3
        (y.sum() + (z * z).sum()).backward()
        return [y.detach().numpy(), z.detach().numpy(), a.grad.numpy(), b.grad.numpy(), w.grad.numpy()]

    plain, ckpt = run(f), run(lambda a, b: checkpoint(f, a, b=b, use_reentrant=False))
    np.testing.assert_array_equal(plain[0], ckpt[0])
    for u, v in zip(plain, ckpt):
        np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-15)


def _torch_mlp(nn_):
    return nn_.Sequential(nn_.Linear(6, 16), nn_.GELU(), nn_.Linear(16, 6))


def _torch_block(nn_):
    return nn_.TransformerEncoderLayer(d_model=6, nhead=2, dim_feedforward=12, dropout=0.0, batch_first=True,
                                       norm_first=True)


@pytest.mark.parametrize("build", [_torch_mlp, _torch_block], ids=["mlp", "transformer_block"])
def test_matches_torch_from_the_same_weights(build):
    """A checkpointed MLP and transformer block (no dropout) give PyTorch's checkpointed output
    and gradients from torch's weights (float64)."""
    torch = pytest.importorskip("torch")
    from torch.utils.checkpoint import checkpoint as torch_checkpoint
    torch.manual_seed(0)
    theirs, ours = build(torch.nn).double(), build(nn).double()
    ours.load_state_dict({k: dtrain.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 5, 6))
    xt, xd = torch.tensor(x, requires_grad=True), dtrain.tensor(x, requires_grad=True)
    yt, yd = torch_checkpoint(theirs, xt, use_reentrant=False), checkpoint(ours, xd, use_reentrant=False)
    (yt ** 2).sum().backward()
    (yd ** 2).sum().backward()
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    theirs_by_name = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), theirs_by_name[name].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_input_without_grad():
    """No input requiring grad: reentrant warns as PyTorch and the parameters get no gradient;
    non-reentrant records the node anyway and the parameters get the plain run's gradients."""
    model, x = _mlp(), dtrain.randn(5, 6, dtype=dtrain.float64)
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        out = checkpoint(model, x, use_reentrant=True)
    assert not out.requires_grad
    model(x).sum().backward()
    plain = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    checkpoint(model, x, use_reentrant=False).sum().backward()
    _assert_same(plain, [p.grad.numpy() for p in model.parameters()])


def test_bad_input_is_a_clear_error():
    """A function returning no Tensor, keywords with use_reentrant=True, a bad segment count,
    and a missing use_reentrant (a warning, as PyTorch's) are each reported."""
    x = dtrain.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match="returned int: it must return a Tensor"):
        checkpoint(lambda t: 3, x, use_reentrant=False)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: scale"):
        checkpoint(lambda t, scale: t * scale, x, scale=2.0, use_reentrant=True)
    with pytest.raises(ValueError, match="segments must be a positive int, got 0"):
        checkpoint_sequential([lambda t: t], 0, x, use_reentrant=False)
    with pytest.warns(UserWarning, match="use_reentrant parameter should be passed explicitly"):
        checkpoint(lambda t: t * 2, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoint(lambda t: t * 2, x, use_reentrant=False).requires_grad


def test_no_grad_mode_records_nothing():
    """Under no_grad the checkpointed call is the plain call: no node, no recomputation."""
    calls = []

    def f(t):
        calls.append(1)
        return t * 2

    with dtrain.no_grad():
        out = checkpoint(f, dtrain.ones(3, requires_grad=True), use_reentrant=False)
    assert out.grad_fn is None and len(calls) == 1


def test_backward_runs_the_function_again_once():
    """Backward reruns the function exactly once per backward pass (twice with retain_graph)."""
    calls = []

    def f(t):
        calls.append(1)
        return (t * t).sum()

    x = dtrain.ones(3, requires_grad=True)
    y = checkpoint(f, x, use_reentrant=False)
    assert len(calls) == 1
    y.backward(retain_graph=True)
    y.backward()
    assert len(calls) == 3
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 4.0, 4.0])


def test_checkpointing_keeps_fewer_activation_bytes():
    """Per-block checkpointing of 8 blocks keeps only the block inputs alive after forward:
    the tracked bytes after forward drop by more than 3x."""
    dtrain.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 32)) for _ in range(8)]
    params = [p for b in blocks for p in b.parameters()]
    x = dtrain.randn(64, 32, requires_grad=True)

    def alive_after_forward(run):
        with memory.track(params + [x]):
            base = memory.memory_allocated()
            h = x
            for b in blocks:
                h = run(b, h)
            alive = memory.memory_allocated() - base
            h.sum().backward()
        return alive

    plain = alive_after_forward(lambda b, h: b(h))
    ckpt = alive_after_forward(lambda b, h: checkpoint(b, h, use_reentrant=False))
    assert ckpt * 3 < plain, (ckpt, plain)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_recomputed_dropout_mask_is_the_forward_one(device):
    """Dropout checkpointed alone on ones: the input's gradient is the mask of the recomputation
    and must equal the forward's output (its mask); on CUDA through the forked generator."""
    x = dtrain.ones(4000, dtype=dtrain.float64, device=device, requires_grad=True)
    y = checkpoint(lambda t: nn.functional.dropout(t, 0.5), x, use_reentrant=False)
    y.sum().backward()
    got, want = x.grad.cpu().numpy(), y.detach().cpu().numpy()
    np.testing.assert_array_equal(got, want)
    assert 0 < (want == 0).sum() < want.size  # the mask drops some elements, not all


@pytest.mark.gpu
def test_the_rng_state_can_be_read_and_set_inside_a_checkpointed_cuda_forward():
    """Inside the checkpointed forward the device's generator is the forked one: its state reads
    and restores (a draw after set_rng_state repeats), in the forward and in the recomputation."""
    x = dtrain.ones(64, device="cuda", requires_grad=True)
    seen = []

    def body(t):
        state = dtrain.cuda.get_rng_state()
        first = dtrain.rand(8, device="cuda").cpu().numpy()
        dtrain.cuda.set_rng_state(state)
        seen.append((first, dtrain.rand(8, device="cuda").cpu().numpy()))
        return t * 2

    checkpoint(body, x, use_reentrant=False).sum().backward()
    assert len(seen) == 2  # the forward and the recomputation
    for first, again in seen:
        np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(seen[0][0], seen[1][0])  # the recomputation draws the forward's numbers


DDP_SCRIPT = """
import numpy, dtrain, dtrain.nn as nn
from dtrain.nn.parallel import DistributedDataParallel
from dtrain.utils.checkpoint import checkpoint_sequential
from rank_harness import RankChecks


class CheckpointedSequential(nn.Sequential):
    def forward(self, x):  # 4 segments: the first 3 checkpointed, the last run plainly
        return checkpoint_sequential(self, 4, x, use_reentrant=False)


def grads(checkpointed):
    dtrain.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 8)) for _ in range(4)]
    model = (CheckpointedSequential if checkpointed else nn.Sequential)(*blocks).double()
    ddp = DistributedDataParallel(model)
    x = dtrain.randn(3, 8, dtype=dtrain.float64, generator=dtrain.Generator().manual_seed(10 + checks.rank))
    dtrain.manual_seed(1)
    ddp(x).pow(2).sum().backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


def ddp_gradients_equal_plain():
    plain, ckpt = grads(False), grads(True)
    assert len(plain) == len(ckpt) == 16
    for i, (a, b) in enumerate(zip(plain, ckpt)):
        assert numpy.array_equal(a, b), (checks.rank, i, float(abs(a - b).max()))

checks = RankChecks("mpi")
checks.run("DDP over checkpointed blocks equals DDP over plain blocks", ddp_gradients_equal_plain)
checks.finish()
"""


def test_ddp_over_checkpointed_blocks_equals_plain():
    """2 ranks: DDP over 4 blocks (with dropout) run by checkpoint_sequential averages exactly
    the gradients DDP over the plain blocks averages (each parameter's hook fires once, from
    the recomputation's nested backward)."""
    result = run([require_mpi(), "-n", "2", sys.executable, "-c", DDP_SCRIPT], timeout=120, env=clean_env())
    assert_all_checks_passed(result, 2, 1)


def test_recomputation_runs_under_the_forwards_autocast():
    """An MLP checkpointed inside autocast("cpu", float16) and backpropagated outside it: the
    recomputation casts as the forward did, so the gradients equal the plain autocast run's."""
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3))
    x = dtrain.randn(5, 6)

    def run(fn):
        model.zero_grad()
        with dtrain.autocast("cpu", dtype=dtrain.float16):
            out = fn(x)
        assert out.dtype == dtrain.float16
        out.float().pow(2).sum().backward()
        return [out.detach().float().numpy()] + [p.grad.numpy().copy() for p in model.parameters()]

    plain = run(model)
    _assert_same(plain, run(lambda x: checkpoint(model, x, use_reentrant=False)))
    assert not dtrain.amp.is_autocast_enabled("cpu")  # the region reopened for the recomputation is closed
