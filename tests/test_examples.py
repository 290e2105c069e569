"""The examples run from the README: they learn, and a resumed run repeats an uninterrupted one."""
import os
import runpy
import sys

import pytest

pytest.importorskip("sklearn")
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _main(name):
    return runpy.run_path(os.path.join(EXAMPLES, name))["main"]


def test_digits_mlp_reaches_95_percent(tmp_path):
    """examples/digits_mlp.py reaches >= 95% test accuracy and keeps the last 2 of its
    per-epoch checkpoints, named by step."""
    acc, history = _main("digits_mlp.py")(["--quiet", "--checkpoint", str(tmp_path / "m.ckpt")])
    assert acc >= 0.95, f"test accuracy {acc:.4f} < 0.95"
    steps_per_epoch = -(-1437 // 32)  # 1437 training images (80% of 1797), batch 32
    assert sorted(os.listdir(tmp_path)) == [f"m-{19 * steps_per_epoch}.ckpt", f"m-{20 * steps_per_epoch}.ckpt"]
    assert history[-1] < history[0] / 5, f"loss did not fall: {history}"


def test_digits_mlp_resume_repeats_uninterrupted_run(tmp_path):
    """Stopping after 2 of 4 epochs and resuming gives the same per-epoch losses as one run."""
    main = _main("digits_mlp.py")
    _, full = main(["--quiet", "--epochs", "4", "--checkpoint", str(tmp_path / "a.ckpt")])
    _, first = main(["--quiet", "--epochs", "4", "--stop-after", "2", "--checkpoint", str(tmp_path / "b.ckpt")])
    _, rest = main(["--quiet", "--epochs", "4", "--resume", "--checkpoint", str(tmp_path / "b.ckpt")])
    assert len(first) == 2 and len(rest) == 2
    assert first + rest == pytest.approx(full, rel=1e-6, abs=0)


def test_digits_mlp_resume_without_checkpoint_is_an_error(tmp_path, capsys):
    """--resume with no checkpoint exits with a message naming the files looked for, while
    --resume auto starts fresh."""
    main = _main("digits_mlp.py")
    with pytest.raises(SystemExit):
        main(["--quiet", "--resume", "--checkpoint", str(tmp_path / "none.ckpt")])
    assert "none-<step>.ckpt" in capsys.readouterr().err
    _, history = main(["--quiet", "--epochs", "1", "--resume", "auto", "--checkpoint-dir", str(tmp_path / "d")])
    assert len(history) == 1 and os.listdir(tmp_path / "d") == [f"ckpt-{-(-1437 // 32)}.ckpt"]


def test_cnn_loss_falls():
    """examples/cnn.py: the loss falls over epochs and the test accuracy is well above chance."""
    losses, acc = _main("cnn.py")(["--quiet", "--epochs", "3"])
    assert losses[-1] < losses[0] * 0.5, losses
    assert acc > 0.8


def test_linear_regression_recovers_weights():
    """examples/linear_regression.py recovers the known weights and bias."""
    err = _main("linear_regression.py")(["--quiet", "--epochs", "10"])
    assert err < 0.02
