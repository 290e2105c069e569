"""Deterministic mode in one process: the switch, per-sample dropout streams, the exact
fixed-point sum, and DistributedDataParallel(micro_shard_size=m) at world size 1 (its errors,
accumulation, unused parameters). The 1/2/4-rank bit-identity is tests/parallel/test_deterministic.py."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.parallel import DistributedDataParallel as DDP
from dtrain.parallel.comm_hooks import fp16_compress_hook
from dtrain.parallel.exact_sum import HEADROOM_BITS, exact_sum
from dtrain.tensor.deterministic import per_sample_random


@pytest.fixture
def deterministic():
    """Deterministic mode on for the test (off again after)."""
    dtrain.use_deterministic_algorithms(True)
    yield
    dtrain.use_deterministic_algorithms(False)


# ---- the switch ---------------------------------------------------------------------------

def test_switch_as_pytorch():
    """use_deterministic_algorithms / are_deterministic_algorithms_enabled /
    is_deterministic_algorithms_warn_only_enabled behave as PyTorch's; non-bools are refused."""
    assert not dtrain.are_deterministic_algorithms_enabled()
    dtrain.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert dtrain.are_deterministic_algorithms_enabled()
        assert dtrain.is_deterministic_algorithms_warn_only_enabled()
    finally:
        dtrain.use_deterministic_algorithms(False)
    assert not dtrain.are_deterministic_algorithms_enabled()
    with pytest.raises(TypeError, match="expects a bool for mode, got int"):
        dtrain.use_deterministic_algorithms(1)
    with pytest.raises(TypeError, match="expects a bool for warn_only, got str"):
        dtrain.use_deterministic_algorithms(True, warn_only="yes")


def test_environment_variable_turns_it_on():
    """DTRAIN_DETERMINISTIC=1 at import turns deterministic mode on."""
    code = "import dtrain; print(dtrain.are_deterministic_algorithms_enabled())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DTRAIN_DETERMINISTIC": "1"},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


# ---- per-sample random streams ------------------------------------------------------------

def test_dropout_mask_of_a_row_depends_on_its_sample_only(deterministic):
    """A row's dropout mask is the same whether it is drawn in a batch of 8 or of 2 (rows 4-5
    of the 8), and changes with the stream and from one dropout call to the next."""
    x = dtrain.ones(8, 64)
    with per_sample_random(np.arange(8), stream=5):
        whole, second = F.dropout(x, 0.5).numpy(), F.dropout(x, 0.5).numpy()
    with per_sample_random([4, 5], stream=5):
        part = F.dropout(x[:2], 0.5).numpy()
    with per_sample_random(np.arange(8), stream=6):
        other = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(part, whole[4:6])
    assert not np.array_equal(whole, second) and not np.array_equal(whole, other)
    assert set(np.unique(whole)) == {0.0, 2.0} and 0.35 < (whole == 0).mean() < 0.65


def test_attention_dropout_is_per_sample(deterministic):
    """scaled_dot_product_attention's dropout draws per sample too: sample 1's output is the
    same computed alone as in a batch of 3."""
    rng = np.random.default_rng(0)
    q, k, v = (dtrain.tensor(rng.standard_normal((3, 2, 5, 4)).astype(np.float32)) for _ in range(3))
    with per_sample_random([0, 1, 2], stream=1):
        whole = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3).numpy()
    with per_sample_random([1], stream=1):
        alone = F.scaled_dot_product_attention(q[1:2], k[1:2], v[1:2], dropout_p=0.3).numpy()
    np.testing.assert_array_equal(alone[0], whole[1])


def test_outside_deterministic_mode_the_scope_changes_nothing():
    """Without deterministic mode dropout draws from dtrain's generator, scope or not."""
    x = dtrain.ones(4, 16)
    dtrain.manual_seed(3)
    plain = F.dropout(x, 0.5).numpy()
    dtrain.manual_seed(3)
    with per_sample_random(np.arange(4), stream=0):
        scoped = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(plain, scoped)


def test_per_sample_scope_refuses_negative_ids():
    with pytest.raises(ValueError, match="sample_ids must be >= 0, got -2"):
        with per_sample_random([0, -2], stream=0):
            pass
    with pytest.raises(ValueError, match="stream must be >= 0, got -1"):
        with per_sample_random([0], stream=-1):
            pass


# ---- the exact sum ------------------------------------------------------------------------

def _summands(seed=0, n=6, size=1000):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(size) * rng.choice([1e-6, 1.0, 1e3], size)).astype(np.float32) for _ in range(n)]


def test_exact_sum_does_not_depend_on_order_or_grouping(world):
    """The same summands in any order, or pre-scaled by a power of two and divided back, give
    the same bits; the result is within 2**-40 of the largest magnitude of the float64 sum."""
    parts = _summands()
    like = [parts[0]]
    ref = exact_sum([parts], like)[0]
    for order in itertools.islice(itertools.permutations(parts), 0, 720, 97):
        np.testing.assert_array_equal(exact_sum([list(order)], like)[0], ref)
    np.testing.assert_array_equal(exact_sum([[p * 4 for p in parts]], like, divisor=4)[0], ref)
    exact = np.sum([p.astype(np.float64) for p in parts], axis=0)
    assert np.abs(ref - exact).max() <= np.abs(exact).max() * 2.0 ** -23  # float32's rounding of the result
    # float32's naive sum in two orders is not order-independent: what the fixed point buys
    naive = [np.sum(np.stack(o), axis=0, dtype=np.float32) for o in (parts, parts[::-1])]
    assert not np.array_equal(*naive)


def test_exact_sum_missing_and_non_finite(world):
    """A tensor nobody summed is None; one with an inf or NaN summand is all NaN; zeros sum to
    zeros; a float64 tensor stays float64."""
    like = [np.zeros(2, np.float32), np.zeros(3), np.zeros(2, np.float32)]
    out = exact_sum([[], [np.zeros(3)], [np.array([np.inf, 1.0], np.float32)]], like)
    assert out[0] is None
    np.testing.assert_array_equal(out[1], np.zeros(3))
    assert out[1].dtype == np.float64 and np.isnan(out[2]).all() and out[2].dtype == np.float32


def test_exact_sum_refuses_too_many_summands(world):
    """More summands than the headroom of int64 allows is an error naming the limit."""
    one = np.ones(1, np.float32)
    with pytest.raises(ValueError, match=rf"more than the 2\*\*{HEADROOM_BITS}"):
        exact_sum([[one] * ((1 << HEADROOM_BITS) + 1)], [one])
    with pytest.raises(ValueError, match="2 lists of summands for 1 tensors"):
        exact_sum([[one], [one]], [one])


# ---- DistributedDataParallel(micro_shard_size=m) at world size 1 -------------------------------

def _net(dropout=0.0):
    dtrain.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


def _batch(rows=8, seed=0):
    rng = np.random.default_rng(seed)
    return dtrain.tensor(rng.standard_normal((rows, 6)).astype(np.float32)), dtrain.tensor(rng.integers(0, 3, rows))


@pytest.mark.parametrize("rows, passes", [(8, 2), (8, 4), (6, 3)], ids=["4 in 2 passes", "4 in 4", "3 in 3"])
def test_accumulation_passes_give_the_bits_of_one_pass(world, deterministic, rows, passes):
    """The same micro-shards in one forward or in ``passes`` no_sync accumulation passes give
    the same gradient and the same BatchNorm running statistics, bit for bit: the buffers move
    once per step, from all its micro-shards (a no_sync pass leaves them as they were)."""
    x, y = _batch(rows)

    def step(split):
        model = _net()
        ddp = DDP(model, micro_shard_size=2)
        dtrain.manual_seed(3)
        per = rows // split
        for k in range(split):
            part = slice(k * per, (k + 1) * per)
            if k < split - 1:
                with ddp.no_sync():
                    F.cross_entropy(ddp(x[part]), y[part]).div(split).backward()
                    # between passes the buffers are the step's starting values
                    np.testing.assert_array_equal(model[1].running_mean.numpy(), np.zeros(16, np.float32))
            else:
                F.cross_entropy(ddp(x[part]), y[part]).div(split).backward()
        return [t.numpy().copy() for t in (*(p.grad for p in model.parameters()), *model.buffers())]

    one, split = step(1), step(passes)
    assert len(one) == 9  # 6 parameters, running mean and variance, batches tracked
    for a, b in zip(one, split):
        np.testing.assert_array_equal(a, b)
    assert int(split[-1]) == 1 and not np.array_equal(split[6], np.zeros(16, np.float32))


@pytest.mark.parametrize("rows, tree", [(8, True), (6, False)], ids=["4 micro-shards", "3 micro-shards"])
def test_micro_shard_gradient_is_the_mean_of_the_micro_shards(world, rows, tree):
    """At one rank, micro_shard_size=2 gives the mean of the micro-shards' own gradients (each
    with its own BatchNorm statistics), and the running statistics are the mean of the
    micro-shards' updates; 4 micro-shards are summed in the fixed tree, 3 by the exact integer sum."""
    x, y = _batch(rows)
    model = _net()
    ddp = DDP(model, micro_shard_size=2)
    F.cross_entropy(ddp(x), y).backward()
    assert (ddp._micro.tree is not None) == tree
    grads = [p.grad.numpy() for p in model.parameters()]
    running = model[1].running_mean.numpy().copy()
    ref, ref_running = [], []
    for c in range(rows // 2):
        alone = _net()
        F.cross_entropy(alone(x[2 * c:2 * c + 2]), y[2 * c:2 * c + 2]).backward()
        ref.append([p.grad.numpy() for p in alone.parameters()])
        ref_running.append(alone[1].running_mean.numpy())
    for k, g in enumerate(grads):
        # atol: the bias before BatchNorm has a gradient of ~0 (float noise around 1e-8)
        np.testing.assert_allclose(g, np.mean([r[k] for r in ref], axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(running, np.mean(ref_running, axis=0), rtol=1e-6)
    assert int(model[1].num_batches_tracked) == 1


@pytest.mark.parametrize("rows", [8, 12], ids=["tree", "integer-sum"])
def test_accumulation_under_no_sync_equals_one_pass_bit_for_bit(world, deterministic, rows):
    """Two passes of rows/2 (the first under no_sync, each loss halved) give the same bits as
    one pass of all rows: the micro-shards, their dropout masks and the sum are the same (what
    lets a resumed run trade ranks for accumulation passes); 4 micro-shards go through the fixed
    tree, 6 through the exact integer sum."""
    x, y = _batch(rows)

    def run(passes):
        dtrain.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
        ddp = DDP(model, micro_shard_size=2)
        share = rows // passes
        for k in range(passes):
            xs, ys = x[k * share:(k + 1) * share], y[k * share:(k + 1) * share]
            if k < passes - 1:
                with ddp.no_sync():
                    (F.cross_entropy(ddp(xs), ys) / passes).backward()
            else:
                (F.cross_entropy(ddp(xs), ys) / passes).backward()
        return [p.grad.numpy() for p in model.parameters()]

    for a, b in zip(run(1), run(2)):
        np.testing.assert_array_equal(a, b)


def test_micro_shard_size_errors(world):
    """Bad sizes, a batch that is not a whole number of micro-shards, and the options it cannot
    be combined with are refused with messages naming them."""
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=f"micro_shard_size must be a positive int .*got {bad!r}"):
            DDP(_net(), micro_shard_size=bad)
    x, y = _batch(rows=6)
    with pytest.raises(ValueError, match=r"micro_shard_size=4\): this rank's batch has 6 rows .* not a multiple of 4"):
        DDP(_net(), micro_shard_size=4)(x)
    with pytest.raises(ValueError, match="cannot be combined with gradient_sharding=True"):
        DDP(_net(), micro_shard_size=2, gradient_sharding=True)
    hooked = DDP(_net(), micro_shard_size=2)
    hooked.register_comm_hook(None, fp16_compress_hook)
    with pytest.raises(RuntimeError, match="cannot use a comm hook"):
        hooked(x)
    joined = DDP(_net(), micro_shard_size=2)
    with pytest.raises(RuntimeError, match=r"join\(\) cannot be combined with micro_shard_size"):
        with joined.join():
            joined(x)


def test_deterministic_mode_without_micro_shards_warns(world, deterministic):
    with pytest.warns(UserWarning, match="micro_shard_size is not set"):
        DDP(_net())


def test_unused_parameter(world):
    """A parameter forward does not use: the next forward raises naming it, as DDP; with
    find_unused_parameters=True its .grad stays None and the others are reduced."""
    class OneOfTwo(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 3), nn.Linear(6, 3)

        def forward(self, x):
            return self.a(x)

    x, y = _batch()
    ddp = DDP(OneOfTwo(), micro_shard_size=4)
    F.cross_entropy(ddp(x), y).backward()
    with pytest.raises(RuntimeError, match=r"received no gradient in some micro-shard: b\.bias, b\.weight"):
        ddp(x)
    model = OneOfTwo()
    ddp = DDP(model, micro_shard_size=4, find_unused_parameters=True)
    for _ in range(2):
        F.cross_entropy(ddp(x), y).backward()
    assert model.b.weight.grad is None and model.a.weight.grad is not None


def test_outputs_are_put_back_together(world):
    """Tensors with a batch dimension come back concatenated, a 0-dim loss as the mean of the
    micro-shards' losses, other values as the first micro-shard's; eval forwards run whole."""
    class Out(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x, y):
            logits = self.fc(x)
            return {"logits": logits, "loss": F.cross_entropy(logits, y), "rows": x.shape[0]}

    x, y = _batch()
    model = Out()
    out = DDP(model, micro_shard_size=2)(x, y)
    assert tuple(out["logits"].shape) == (8, 3) and out["rows"] == 2
    losses = [F.cross_entropy(model.fc(x[i:i + 2]), y[i:i + 2]).item() for i in range(0, 8, 2)]
    assert out["loss"].item() == pytest.approx(np.mean(losses), rel=1e-6)
    with dtrain.no_grad():
        assert DDP(model, micro_shard_size=2)(x, y)["rows"] == 8


def test_augmentation_drawn_per_sample():
    """Inside sample_random(key, index), random transforms draw from a stream of (key, index)
    alone: the same crop and flip whatever was drawn before, another for another index, the
    default generator's state untouched, and another thread unaffected."""
    import threading

    from dtrain.tensor.random import sample_random
    from dtrain.vision import transforms

    aug = transforms.Compose([transforms.RandomCrop(4, padding=2), transforms.RandomHorizontalFlip()])
    image = dtrain.arange(3 * 8 * 8, dtype=dtrain.float32).reshape(3, 8, 8)

    def augmented(index):
        with sample_random(key=11, index=index):
            return aug(image).numpy()

    dtrain.manual_seed(0)
    first = augmented(5)
    state = dtrain.get_rng_state()
    dtrain.rand(100)  # the default stream moves on; the per-sample one does not care
    np.testing.assert_array_equal(augmented(5), first)
    assert any(not np.array_equal(augmented(i), first) for i in range(6, 12))
    dtrain.manual_seed(0)
    with sample_random(key=11, index=5):
        aug(image)
    assert dtrain.get_rng_state()["state"] == state["state"]
    seen = []
    with sample_random(key=11, index=5):
        worker = threading.Thread(target=lambda: seen.append(dtrain.rand(4).numpy()))
        dtrain.manual_seed(0)
        worker.start()
        worker.join()
    dtrain.manual_seed(0)
    np.testing.assert_array_equal(seen[0], dtrain.rand(4).numpy())



@pytest.mark.gpu
@pytest.mark.parametrize("rows", [8, 6], ids=["tree", "integer-sum"])
def test_micro_shards_on_the_gpu_give_the_cpu_bits(world, deterministic, rows):
    """On 'cuda', micro-shards, per-sample dropout (drawn on the host) and both sums give the
    CPU's gradient bits, and the gradients stay on the device."""
    x, y = _batch(rows)

    def grads(device):
        model = _net(0.3).to(device)
        ddp = DDP(model, micro_shard_size=2)
        dtrain.manual_seed(5)
        F.cross_entropy(ddp(x.to(device)), y.to(device)).backward()
        assert all(p.grad.device == model[0].weight.device for p in model.parameters())
        return [p.grad.cpu().numpy() for p in model.parameters()]

    for a, b in zip(grads("cpu"), grads("cuda")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("use_reentrant, preserve", [(True, True), (False, True), (False, False)])
def test_activation_checkpointing_inside_micro_shards(world, deterministic, use_reentrant, preserve):
    """A checkpointed block inside a micro-shard recomputes with the micro-shard's parameter
    aliases (its gradients reach the reduction) and, in deterministic mode, with its per-sample
    dropout masks (whatever preserve_rng_state says): the gradients equal the plain run's bits."""
    from dtrain.utils.checkpoint import checkpoint

    class Net(nn.Module):
        def __init__(self, checkpointed):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 16))
            self.head, self.checkpointed = nn.Linear(16, 3), checkpointed

        def forward(self, x):
            h = (checkpoint(self.block, x, use_reentrant=use_reentrant, preserve_rng_state=preserve)
                 if self.checkpointed else self.block(x))
            return self.head(F.dropout(h, 0.2))

    x, y = _batch()
    x.requires_grad_(use_reentrant)  # the reentrant variant needs an input that requires grad

    def grads(checkpointed):
        dtrain.manual_seed(0)
        model = Net(checkpointed)
        F.cross_entropy(DDP(model, micro_shard_size=2)(x), y).backward()
        return [p.grad.numpy() for p in model.parameters()]

    for a, b in zip(grads(False), grads(True)):
        np.testing.assert_array_equal(a, b)


def test_second_backward_through_one_forward_is_refused(world):
    """A second backward through a synchronized forward's graph (retain_graph) raises naming a
    parameter, as DDP; under no_sync two backwards of one forward add up, as without DDP."""
    x, y = _batch()
    model = _net()
    ddp = DDP(model, micro_shard_size=2)
    loss = F.cross_entropy(ddp(x), y)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="whose reduction is over: two backward passes ran for one forward"):
        loss.backward()
    twice = _net()
    ddp = DDP(twice, micro_shard_size=2)
    with ddp.no_sync():
        loss = F.cross_entropy(ddp(x), y)
        loss.backward(retain_graph=True)
        loss.backward()
    F.cross_entropy(ddp(x[:0 + 2]), y[:2]).backward()  # the synchronized pass
    once = _net()
    ddp = DDP(once, micro_shard_size=2)
    with ddp.no_sync():
        (2 * F.cross_entropy(ddp(x), y)).backward()
    F.cross_entropy(ddp(x[:2]), y[:2]).backward()
    for a, b in zip(twice.parameters(), once.parameters()):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-6, atol=1e-7)


class _Sum(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(dtrain.ones(4))
        self.q = nn.Parameter(dtrain.ones(4))

    def forward(self, x):
        return (self.p + self.q) * x.sum(0)


def test_micro_shard_sums_of_parameters_added_together(world):
    """At one rank the fixed tree sums the micro-shard gradients in their own arrays: two
    aliases holding one array get it added into twice (44 instead of 24 for p[0])."""
    x = dtrain.tensor(np.arange(16, dtype=np.float32).reshape(4, 4))
    model = _Sum()
    DDP(model, micro_shard_size=2)(x).sum().backward()
    expected = x.numpy().sum(0)  # the mean over ranks (1) of the sum over micro-shards
    np.testing.assert_array_equal(model.p.grad.numpy(), expected)
    np.testing.assert_array_equal(model.q.grad.numpy(), expected)
