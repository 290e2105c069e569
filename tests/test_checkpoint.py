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
    assert info == {"epoch": 3, "step": 1200, "world_size": 1, "global_batch": None, "extra": extra}
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
    import dtrain.nn as nn
    import dtrain.optim as optim

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


# ---- CheckpointManager ------------------------------------------------------------------

from dtrain.checkpoint import CheckpointManager  # noqa: E402


def test_save_or_load_refuses_truncated_and_bitflipped_files(tmp_path):
    """A checkpoint cut short or with one flipped bit in its array data is refused by
    load_checkpoint with a CheckpointError naming the file and the problem."""
    model = FakeModel()
    save_checkpoint(tmp_path / "c.ckpt", model, epoch=1)
    data = (tmp_path / "c.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[:-40])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt: file is truncated"):
        load_checkpoint(tmp_path / "cut.ckpt", FakeModel())
    flipped = bytearray(data)
    pos = data.index(model.weight.array.tobytes())  # inside the weight's raw bytes
    flipped[pos + 3] ^= 0x10
    (tmp_path / "flip.ckpt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"flip\.ckpt: checksum mismatch"):
        load_checkpoint(tmp_path / "flip.ckpt", FakeModel())


def test_manager_keeps_last_k_and_names_by_step(tmp_path):
    """save(step) writes <prefix>-<step>.ckpt and keeps only the newest keep_last steps."""
    manager = CheckpointManager(tmp_path / "run", keep_last=2, prefix="m")
    for step in (5, 10, 100, 150):
        assert manager.save(step, FakeModel(), epoch=0) == str(tmp_path / "run" / f"m-{step}.ckpt")
    assert [s for s, _ in manager.checkpoints()] == [100, 150]
    assert sorted(os.listdir(tmp_path / "run")) == ["m-100.ckpt", "m-150.ckpt"]


def test_manager_prunes_only_after_the_new_file_is_written(tmp_path, monkeypatch):
    """If writing the new checkpoint fails, no older checkpoint is deleted and no temporary
    file is left; a later save removes temporary files a killed save left behind."""
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(1, FakeModel())

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        manager.save(2, FakeModel())
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt-1.ckpt"]
    (tmp_path / ".ckpt-2.ckpt.0123456789ab.tmp").write_bytes(b"left by a SIGKILL")
    (tmp_path / "notes.txt").write_text("not ours")
    manager.save(3, FakeModel())
    assert sorted(os.listdir(tmp_path)) == ["ckpt-3.ckpt", "notes.txt"]


def test_manager_leaves_later_steps_alone(tmp_path):
    """Checkpoints of later steps than the one saved (a run restarted from an earlier
    checkpoint) are not pruned, and the new one is never pruned."""
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(50, FakeModel())
    manager.save(10, FakeModel())
    assert [s for s, _ in manager.checkpoints()] == [10, 50]


def test_manager_resume_auto_skips_broken_newest(tmp_path):
    """resume="auto" loads the newest intact checkpoint, warning about the newer broken one;
    the returned dict names the file and the step."""
    manager = CheckpointManager(tmp_path, keep_last=None)
    models = {step: FakeModel() for step in (1, 2, 3)}
    for step, m in models.items():
        manager.save(step, m, epoch=step)
    data = bytearray((tmp_path / "ckpt-3.ckpt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "ckpt-3.ckpt").write_bytes(bytes(data))
    model = FakeModel()
    with pytest.warns(RuntimeWarning, match=r"skipping checkpoint .*ckpt-3\.ckpt"):
        info = manager.load(model, resume="auto")
    assert info["step"] == 2 and info["path"] == str(tmp_path / "ckpt-2.ckpt")
    np.testing.assert_array_equal(model.weight.array, models[2].weight.array)
    with pytest.warns(RuntimeWarning):
        assert manager.latest() == str(tmp_path / "ckpt-2.ckpt")


def test_manager_resume_explicit_and_empty(tmp_path):
    """resume=None and an empty directory load nothing; an explicit broken path is an error."""
    manager = CheckpointManager(tmp_path / "none")
    assert manager.load(FakeModel(), resume="auto") is None
    assert manager.load(FakeModel(), resume=None) is None
    (tmp_path / "bad.ckpt").write_bytes(b"PK\x03\x04")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        manager.load(FakeModel(), resume=tmp_path / "bad.ckpt")


def test_manager_resume_wrong_objects_is_not_skipped(tmp_path):
    """A checkpoint that is intact but lacks the optimizer state raises, rather than being
    skipped for an older one."""
    manager = CheckpointManager(tmp_path)
    manager.save(1, FakeModel(), FakeOptimizer())
    manager.save(2, FakeModel())
    with pytest.raises(CheckpointError, match="no optimizer state"):
        manager.load(FakeModel(), FakeOptimizer())


@pytest.mark.parametrize("kwargs, match", [
    ({"keep_last": 0}, "keep_last must be an int >= 1 or None"),
    ({"keep_last": 1.5}, "keep_last must be an int >= 1 or None"),
    ({"prefix": ""}, "prefix must be a non-empty file name part"),
    ({"prefix": "a/b"}, "prefix must be a non-empty file name part"),
])
def test_manager_validates_arguments(tmp_path, kwargs, match):
    """Bad constructor arguments raise ValueError quoting the value."""
    with pytest.raises(ValueError, match=match):
        CheckpointManager(tmp_path, **kwargs)


def test_manager_save_validates_step(tmp_path):
    """A negative or non-int step is refused before anything is written."""
    with pytest.raises(ValueError, match=r"step must be an int >= 0, got -1"):
        CheckpointManager(tmp_path).save(-1, FakeModel())
    assert os.listdir(tmp_path) == []


def test_checkpoint_extra_that_needs_pickle_is_refused_at_save(tmp_path):
    """A checkpoint must load with the default weights_only=True: an ``extra`` that only a
    pickle could hold (a set) is a TypeError when saving, and no file is left behind."""
    import pytest
    from dtrain.checkpoint import save_checkpoint
    path = tmp_path / "c.ckpt"
    with pytest.raises(TypeError, match="set"):
        save_checkpoint(path, extra={"seen": {1, 2}})
    assert list(tmp_path.iterdir()) == []
