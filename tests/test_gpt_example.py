"""examples/gpt.py (the launcher's built-in job): 2 ranks train as 1 on the same global
batches, and a run stopped and resumed gives the same per-step losses as one straight run."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
        "--corpus-chars", "50000", "--eval-every", "0", "--sample-chars", "20", "--quiet", "--warmup", "4"]


def run_gpt(tmp_path, name, *args, nproc=None):
    log = tmp_path / f"{name}.log"
    cmd = [sys.executable, str(ROOT / "examples" / "gpt.py")] if nproc is None else \
        [sys.executable, "-m", "dtrain.launch", "--nproc", str(nproc), str(ROOT / "examples" / "gpt.py")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd + TINY + ["--checkpoint-dir", str(tmp_path / name), "--loss-log", str(log), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps, losses = np.loadtxt(log, ndmin=2).T
    return steps.astype(int).tolist(), losses, proc.stdout


def test_two_ranks_train_as_one(tmp_path):
    """Under --nproc 2 every step's loss (averaged over the ranks) equals one process's on the
    same global batch, and the final report names the ranks and prints a sample."""
    steps1, one, out1 = run_gpt(tmp_path, "one", "--steps", "12")
    steps2, two, out2 = run_gpt(tmp_path, "two", "--steps", "12", nproc=2)
    assert steps1 == steps2 == list(range(1, 13))
    np.testing.assert_allclose(two, one, rtol=2e-5)
    assert one[-1] < one[0]
    assert "ranks 1" in out1 and "ranks 2" in out2 and "tokens/s" in out2 and "sample:" in out2


def test_resume_continues_the_same_run(tmp_path):
    """--stop-after 5 then --resume auto gives the straight run's losses for steps 6..12."""
    _, straight, _ = run_gpt(tmp_path, "straight", "--steps", "12")
    steps_a, first, _ = run_gpt(tmp_path, "split", "--steps", "12", "--stop-after", "5")
    steps_b, rest, out = run_gpt(tmp_path, "split", "--steps", "12", "--resume", "auto")
    assert "resumed from" in out and "at step 5" in out
    assert steps_b == list(range(1, 13))  # the log file is appended: the first 5 steps, then 6..12
    np.testing.assert_array_equal(rest, straight)
