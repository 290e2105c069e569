"""examples/digits_mlp.py resumes on any world size (issue 17).

A one-epoch run (1,437 samples, a global batch of 64: 32 rows on each of 2 ranks) is preempted
by SIGTERM after step 10 of 23 on 2 ranks, mid-epoch, and resumed with ``--resume auto`` on 1
rank (32 rows x 2 accumulation steps) and on 4 (16 rows): the global batch is kept, said in
the log, and each rank records the training samples it loads (a wrapper around
``digits(train=True)``), so the tests compare sample indices, not only exit codes:

* default mode: the stop and the resume together load every sample of the epoch once, in
  the epoch's order (the 4-rank pass's padding aside, which repeats the order's first 3), and
  the parameters after the last full global batch agree with an uninterrupted 1-rank run of
  the same global batch within float32 rounding (after the epoch's short last step too at 1
  rank, whose tail has no padding);
* deterministic mode (``--deterministic``): 22 steps, the tail of 29 samples left out, and
  the final parameters bit-identical to the uninterrupted 1-rank run's;
* on 3 ranks, which do not divide 64, the resume stops with an error naming the world sizes
  that keep the global batch.
"""
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from comm_helpers import clean_env, output, require_mpi
from dtrain.preemption import EXIT_PREEMPTED
from dtrain.serialization import load
from test_stateful_loader import global_order, interleave

pytest.importorskip("sklearn")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "examples" / "digits_mlp.py")
SIGTERM_AT = str(ROOT / "tests" / "gpt_sigterm_at.py")  # any script's preemption at a chosen step
SAMPLES, GLOBAL_BATCH, STOP = 1437, 64, 10  # the digits training split; 2 ranks x 32 rows; the preempted step
COMMON = ["--quiet", "--epochs", "1", "--save-every", "1", "--keep-last", "2"]
DETERMINISTIC = ["--deterministic", "--micro-shard-size", "8"]

# Run a script (argv[1:]) with digits(train=True) wrapped so that every sample the rank loads
# is recorded, in order; written to $DIGITS_SAMPLES/<rank>.json as the rank exits (a
# preempted one too: SystemExit runs atexit). The loader has no workers: loaded = trained.
RECORDER = """
import atexit, json, os, runpy, sys
import dtrain.comm as dist
import dtrain.data.datasets as datasets
from dtrain.data import Dataset

real = datasets.digits


class Recorded(Dataset):
    def __init__(self, data):
        self.data, self.seen = data, []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.data[i]


def digits(train=True, **kwargs):
    data = real(train=train, **kwargs)
    if not train:
        return data
    recorded, path = Recorded(data), os.path.join(os.environ["DIGITS_SAMPLES"], f"{dist.get_rank()}.json")
    atexit.register(lambda: open(path, "w").write(json.dumps(recorded.seen)))
    return recorded


datasets.digits = digits
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def digits(folder, name, *args, nproc=None, stop=False, expect=0):
    """Run digits_mlp.py (one plain process, or ``nproc`` ranks under the launcher) with its
    checkpoints in folder/name, recording each rank's samples in folder/name-samples; with
    ``stop``, SIGTERM to rank 1 after step STOP. Returns (the process, the ranks' sample lists)."""
    recorder, samples = folder / "record_samples.py", folder / f"{name}-samples"
    recorder.write_text(RECORDER)
    samples.mkdir()
    script = [str(recorder), *([SIGTERM_AT] if stop else []), DIGITS]
    launch = [] if nproc is None else ["-m", "dtrain.launch", "--nproc", str(nproc)]
    env = clean_env(DIGITS_SAMPLES=str(samples), **({"DTRAIN_SIGTERM_AT": f"{STOP}:1"} if stop else {}))
    proc = subprocess.run([sys.executable, *launch, *script, *COMMON, "--checkpoint-dir", str(folder / name), *args],
                          capture_output=True, text=True, timeout=180, env=env, cwd=folder)
    assert proc.returncode == expect, output(proc)
    ranks = sorted(samples.iterdir(), key=lambda p: int(p.stem))
    return proc, [json.loads(p.read_text()) for p in ranks]


def parameters(folder, name, step):
    return {k: v.numpy() for k, v in load(folder / name / f"ckpt-{step}.ckpt")["model"].items()}


def relative_difference(a, b):
    """|a - b| / |b| over the whole parameter vector."""
    return np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in b)) / np.sqrt(sum((v ** 2).sum() for v in b.values()))


def elastic(rows, accumulation):
    return (f"elastic resume: saved at 2 rank(s) x 32 rows x 1 accumulation step(s); now {64 // rows // accumulation} "
            f"rank(s) x {rows} rows x {accumulation} accumulation step(s): global batch 64 kept")


def stopped_on_2_resumed_on_1_and_4(folder, *args):
    """The stop at step STOP on 2 ranks, then --resume auto from copies of its checkpoints on 1
    and on 4 ranks. Returns {"stop" | 1 | 4: the ranks' sample lists}."""
    first, seen = digits(folder, "stop", *args, nproc=2, stop=True, expect=EXIT_PREEMPTED)
    for rank in (0, 1):  # rank 1 got the signal, rank 0 agreed at the step boundary
        assert re.search(rf"rank {rank}: preempted \(signal \w+\) at step {STOP}; checkpoint "
                         rf"{re.escape(str(folder / 'stop' / f'ckpt-{STOP}.ckpt'))} saved", first.stderr), output(first)
    saved = load(folder / "stop" / f"ckpt-{STOP}.ckpt")
    assert (saved["world_size"], saved["global_batch"], saved["epoch"]) == (2, GLOBAL_BATCH, 0)
    assert saved["data"]["sampler"]["samples_consumed"] == STOP * GLOBAL_BATCH
    out = {"stop": seen}
    for ranks, split in ((1, (32, 2)), (4, (16, 1))):
        shutil.copytree(folder / "stop", folder / f"on{ranks}")
        proc, out[ranks] = digits(folder, f"on{ranks}", *args, "--resume", "auto", nproc=None if ranks == 1 else ranks)
        assert (f"resumed from {folder / f'on{ranks}' / f'ckpt-{STOP}.ckpt'} at epoch 0, step {STOP} "
                f"({STOP * GLOBAL_BATCH} of the epoch's {SAMPLES} samples done)") in proc.stdout, output(proc)
        assert elastic(*split) in proc.stdout, output(proc)
    return out


@pytest.fixture(scope="module")
def default_mode(tmp_path_factory):
    require_mpi()
    folder = tmp_path_factory.mktemp("digits_default")
    digits(folder, "straight", "--batch-size", str(GLOBAL_BATCH))
    return folder, stopped_on_2_resumed_on_1_and_4(folder, "--loss-log", "loss.log")


def test_default_mode_sees_every_sample_of_the_epoch_once_across_the_stop_and_the_resume(default_mode):
    """The 2 ranks' first 640 samples are the epoch's first 640 positions (strided: interleaved
    back into order); the resumed pass goes on at position 640 on 1 rank (32 x 2 rows a step)
    and on 4 (the pass of 797 padded to 800 with the order's first 3 samples); 23 steps, each logged
    once."""
    folder, seen = default_mode
    order = global_order(SAMPLES, True, 0, 0)
    assert [len(s) for s in seen["stop"]] == [STOP * 32] * 2
    assert interleave(seen["stop"]) == order[:STOP * GLOBAL_BATCH]
    assert seen[1] == [order[STOP * GLOBAL_BATCH:]]
    assert [len(s) for s in seen[4]] == [200] * 4
    assert interleave(seen[4]) == order[STOP * GLOBAL_BATCH:] + order[:3]
    for ranks in (1, 4):
        together = Counter(interleave(seen["stop"]) + interleave(seen[ranks]))
        assert sorted(together) == list(range(SAMPLES)) and sum(together.values()) == SAMPLES + 3 * (ranks == 4)
    steps = np.loadtxt(folder / "loss.log")[:, 0]  # rank 0's 'step loss' lines: the stop's, then each resume's
    np.testing.assert_array_equal(steps, [*range(1, STOP + 1), *range(STOP + 1, 24), *range(STOP + 1, 24)])


def test_default_mode_resumed_runs_agree_with_one_rank_within_float_rounding(default_mode):
    """After the 22 full global batches (step 22) the 2 -> 1 and 2 -> 4 runs hold the parameters
    of the uninterrupted 1-rank run to 1e-5 relative (only the order of additions differs);
    after the short last step (29 samples) the 2 -> 1 run too, the 2 -> 4 run's 3 padding
    samples make its last step another one."""
    folder, _ = default_mode
    straight = {step: parameters(folder, "straight", step) for step in (22, 23)}
    for ranks in (1, 4):
        assert relative_difference(parameters(folder, f"on{ranks}", 22), straight[22]) < 1e-5
    assert relative_difference(parameters(folder, "on1", 23), straight[23]) < 1e-5
    assert relative_difference(parameters(folder, "on4", 23), straight[23]) > 1e-5  # the padding, not rounding


def test_deterministic_resume_on_1_and_4_ranks_is_bit_identical_to_one_rank(tmp_path):
    """--deterministic (micro-shards of 8 rows, drop_last): 22 steps of 64 at every world size;
    the stop and each resume load the epoch's first 1,408 positions once and the 29-sample tail
    never, and the final parameters equal the uninterrupted 1-rank run's bit for bit."""
    require_mpi()
    digits(tmp_path, "straight", *DETERMINISTIC, "--batch-size", str(GLOBAL_BATCH))
    seen = stopped_on_2_resumed_on_1_and_4(tmp_path, *DETERMINISTIC)
    order = global_order(SAMPLES, True, 0, 0)
    for ranks in (1, 4):
        together = Counter(i for share in seen["stop"] + seen[ranks] for i in share)
        assert sorted(together.elements()) == sorted(order[:22 * GLOBAL_BATCH])
    straight = parameters(tmp_path, "straight", 22)
    for ranks in (1, 4):
        resumed = parameters(tmp_path, f"on{ranks}", 22)
        unequal = [k for k in straight if not np.array_equal(resumed[k], straight[k])]
        assert not unequal, f"2 -> {ranks} ranks: not bit-identical: {unequal}"


def test_a_world_size_that_does_not_divide_the_global_batch_is_an_error_naming_what_would(default_mode):
    """Resuming the global batch 64 on 3 ranks stops every rank before training, naming the world
    sizes that keep it and the flags; the checkpoints are left as they were."""
    folder, _ = default_mode
    shutil.copytree(folder / "stop", folder / "on3")
    proc, _ = digits(folder, "on3", "--resume", "auto", nproc=3, expect=1)
    assert ("digits_mlp: the global batch 64 cannot be kept on 3 ranks: it is not a multiple of 3. Keep it with a "
            "number of ranks that divides it (1, 2, 4, 8, 16, 32, 64), or start a new run with a global batch that 3 "
            "ranks divide (63 or 66; a different global batch changes the run) (--nproc sets the ranks; a new run's "
            "global batch is --batch-size x ranks)") in proc.stderr, output(proc)
    assert sorted(p.name for p in (folder / "on3").iterdir()) == ["ckpt-10.ckpt", "ckpt-9.ckpt"]
    assert "epoch   0" not in proc.stdout


def test_a_checkpoint_without_the_loader_position_is_named_not_a_traceback(tmp_path):
    """A checkpoint of an older digits_mlp (no loader state: data=None at save) cannot give the
    epoch's position: the resume stops with a message saying so, not a KeyError traceback."""
    from dtrain.serialization import save_state
    folder = tmp_path / "old"
    run = [sys.executable, DIGITS, "--quiet", "--epochs", "1", "--checkpoint-dir", str(folder)]
    subprocess.run(run, env=clean_env(), check=True, capture_output=True, timeout=120)
    (path,) = folder.glob("*.ckpt")
    ckpt = load(path)
    ckpt["data"] = None  # as the older example saved it
    save_state(ckpt, path)
    result = subprocess.run(run + ["--resume", "auto"], env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "digits_mlp: cannot resume" in result.stderr and "older digits_mlp" in result.stderr
    assert "no data state" in result.stderr
