"""save_checkpoint / load_checkpoint / latest_checkpoint: state, RNG streams, picking files."""
import os
import random

import numpy as np
import pytest

import dtrain
from dtrain.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from dtrain.serialization import CheckpointError, save


class FakeModel:
    """Anything with state_dict / load_state_dict can be checkpointed."""

    def __init__(self):
        self.weight = dtrain.randn(3, 2)
        self.bias = dtrain.zeros(2)

    def state_dict(self):
        return {"weight": self.weight, "bias": self.bias}

    def load_state_dict(self, state):
        self.weight, self.bias = state["weight"], state["bias"]


class FakeOptimizer:
    def __init__(self):
        self.state = {0: {"momentum_buffer": dtrain.randn(3, 2)}}
        self.param_groups = [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]

    def state_dict(self):
        return {"state": self.state, "param_groups": self.param_groups}

    def load_state_dict(self, state):
        self.state, self.param_groups = state["state"], state["param_groups"]


class FakeScheduler:
    def __init__(self, last_epoch=0):
        self.last_epoch = last_epoch

    def state_dict(self):
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.last_epoch = state["last_epoch"]


def draw():
    """One number from each RNG a checkpoint restores."""
    return dtrain.randn(4).array.copy(), np.random.rand(3), random.random()


def test_roundtrip_restores_all_objects(tmp_path):
    """Model, optimizer and scheduler states, epoch, step and extra come back as saved."""
    model, opt, sched = FakeModel(), FakeOptimizer(), FakeScheduler(last_epoch=7)
    extra = {"best_acc": 0.91, "tags": ["a", "b"]}
    save_checkpoint(tmp_path / "c.ckpt", model, opt, sched, epoch=3, step=1200, extra=extra)
    model2, opt2, sched2 = FakeModel(), FakeOptimizer(), FakeScheduler()
    info = load_checkpoint(tmp_path / "c.ckpt", model2, opt2, sched2)
    assert info == {"epoch": 3, "step": 1200, "extra": extra}
    np.testing.assert_array_equal(model2.weight.array, model.weight.array)
    np.testing.assert_array_equal(opt2.state[0]["momentum_buffer"].array, opt.state[0]["momentum_buffer"].array)
    assert opt2.param_groups == opt.param_groups and sched2.last_epoch == 7


def test_rng_state_restored(tmp_path):
    """After load_checkpoint, dtrain.randn, NumPy's and Python's global RNGs produce the
    same numbers as right after save_checkpoint."""
    dtrain.manual_seed(123)
    np.random.seed(5)
    random.seed(9)
    draw()  # move every stream away from its seed point
    save_checkpoint(tmp_path / "c.ckpt", epoch=0)
    expected = draw()
    draw()
    load_checkpoint(tmp_path / "c.ckpt")
    for got, want in zip(draw(), expected):
        np.testing.assert_array_equal(got, want)


def test_restore_rng_false_leaves_streams_alone(tmp_path):
    """restore_rng=False does not rewind the RNG streams."""
    dtrain.manual_seed(0)
    save_checkpoint(tmp_path / "c.ckpt")
    first = dtrain.randn(4).array.copy()
    load_checkpoint(tmp_path / "c.ckpt", restore_rng=False)
    assert not np.array_equal(dtrain.randn(4).array, first)


def test_missing_part_is_an_error(tmp_path):
    """Passing an optimizer to load a checkpoint saved without one says so by name."""
    save_checkpoint(tmp_path / "c.ckpt", model=FakeModel())
    with pytest.raises(CheckpointError, match="the checkpoint has no optimizer state"):
        load_checkpoint(tmp_path / "c.ckpt", FakeModel(), FakeOptimizer())


def test_plain_save_file_is_not_a_checkpoint(tmp_path):
    """A file written by dtrain.save (not save_checkpoint) is refused with a hint."""
    save({"weight": dtrain.ones(2)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint written by save_checkpoint"):
        load_checkpoint(tmp_path / "w.pt", FakeModel())


def touch(path, mtime):
    os.utime(path, ns=(mtime * 10 ** 9, mtime * 10 ** 9))


def test_latest_checkpoint_picks_newest(tmp_path):
    """The most recently modified matching file wins, whatever its name; other patterns,
    sub-directories and temporary files are ignored."""
    for name, mtime in (("b.ckpt", 100), ("a.ckpt", 200), ("c.ckpt", 50)):
        save_checkpoint(tmp_path / name, step=mtime)
        touch(tmp_path / name, mtime)
    save_checkpoint(tmp_path / "z.pt", step=0)
    (tmp_path / ".a.ckpt.1234.tmp").write_bytes(b"partial")
    (tmp_path / "dir.ckpt").mkdir()
    assert latest_checkpoint(tmp_path) == str(tmp_path / "a.ckpt")
    assert latest_checkpoint(tmp_path, pattern="*.pt") == str(tmp_path / "z.pt")


def test_latest_checkpoint_skips_bad_files_with_warning(tmp_path):
    """A truncated newest checkpoint and a newer non-checkpoint file are skipped, each with
    a warning naming it; the newest good one is returned."""
    save_checkpoint(tmp_path / "good.ckpt", step=1)
    touch(tmp_path / "good.ckpt", 100)
    save_checkpoint(tmp_path / "cut.ckpt", step=2)
    data = (tmp_path / "cut.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[:len(data) // 2])
    touch(tmp_path / "cut.ckpt", 300)
    save({"not": "a checkpoint"}, tmp_path / "plain.ckpt")
    touch(tmp_path / "plain.ckpt", 200)
    with pytest.warns(RuntimeWarning) as record:
        assert latest_checkpoint(tmp_path) == str(tmp_path / "good.ckpt")
    messages = [str(w.message) for w in record]
    assert "cut.ckpt" in messages[0] and "truncated" in messages[0]
    assert "plain.ckpt" in messages[1] and "not a checkpoint" in messages[1]


def test_latest_checkpoint_none(tmp_path):
    """An empty or missing directory, or one with only corrupted files, gives None."""
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "x.ckpt").write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="not a dtrain checkpoint"):
        assert latest_checkpoint(tmp_path) is None


def test_linear_sgd_checkpoint_resumes_identically(tmp_path):
    """A real Linear + SGD(momentum) run resumed from a checkpoint takes the same next
    step as the run that saved it."""
    nn = pytest.importorskip("dtrain.nn")
    optim = pytest.importorskip("dtrain.optim")
    if not (hasattr(nn, "Linear") and hasattr(optim, "SGD")):
        pytest.skip("dtrain.nn.Linear / dtrain.optim.SGD are not available yet")

    def make():
        model = nn.Linear(4, 3)
        return model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(model, opt, x):
        opt.zero_grad()
        (model(x) ** 2).sum().backward()
        opt.step()

    dtrain.manual_seed(0)
    x = dtrain.randn(5, 4)
    model, opt = make()
    step(model, opt, x)
    save_checkpoint(tmp_path / "c.ckpt", model, opt, epoch=1)
    model2, opt2 = make()
    assert load_checkpoint(tmp_path / "c.ckpt", model2, opt2)["epoch"] == 1
    step(model, opt, x)
    step(model2, opt2, x)
    for p, q in zip(model.parameters(), model2.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-6)
