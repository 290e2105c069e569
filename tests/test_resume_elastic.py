"""Elastic resume (issue 17): a run stopped on N ranks goes on on M ranks.

* The GPT example (examples/gpt.py, the launcher's job), preempted by SIGTERM at step 17 of 30
  on 4 ranks and resumed with ``--resume auto`` on 2: the global batch is kept (2 rows x 2
  accumulation steps per rank, said in the log); in the default mode it agrees with the
  uninterrupted 1-rank run within float32 rounding, in deterministic mode (with dropout) it
  ends bit-identical.
* A DataLoader + DistributedSampler + ZeroRedundancyOptimizer job under real ranks, stopped
  mid-epoch at 4 ranks and resumed at 3: every sample of the epoch once, the optimizer state
  resharded.
* The checkpoint's new parts (scaler, data, world size, global batch) and split_global_batch.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dtrain
from comm_helpers import clean_env, output, require_mpi, run
from dtrain.amp import GradScaler
from dtrain.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint, split_global_batch
from dtrain.data import DataLoader, DistributedSampler, TensorDataset
from dtrain.preemption import EXIT_PREEMPTED
from dtrain.serialization import CheckpointError, load, save_state
from test_stateful_loader import global_order, interleave

ROOT = Path(__file__).resolve().parents[1]
GPT = str(ROOT / "examples" / "gpt.py")
TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
        "--corpus-chars", "50000", "--eval-every", "0", "--sample-chars", "20", "--quiet", "--warmup", "4",
        "--steps", "30"]
DETERMINISTIC = ["--deterministic", "--micro-shard-size", "2", "--dropout", "0.1"]  # dropout: per-sample masks


def gpt(folder, name, *args, nproc=None, sigterm_at=None, expect=0):
    """Run the tiny GPT (one plain process, or --nproc ranks under the launcher) with its
    checkpoints in folder/name; ``sigterm_at=(step, rank)`` preempts it there."""
    script = [GPT] if sigterm_at is None else [str(ROOT / "tests" / "gpt_sigterm_at.py"), GPT]
    cmd = [sys.executable, *script] if nproc is None else [sys.executable, "-m", "dtrain.launch", "--nproc",
                                                           str(nproc), *script]
    env = clean_env(**({} if sigterm_at is None else {"DTRAIN_SIGTERM_AT": "%d:%d" % sigterm_at}))
    proc = subprocess.run(cmd + TINY + ["--checkpoint-dir", str(folder / name), *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=folder)
    assert proc.returncode == expect, output(proc)
    return proc


def final_parameters(folder, name):
    return {k: v.numpy() for k, v in load(folder / name / "gpt-30.ckpt")["model"].items()}


def stopped_at_17_on_4_resumed_on_2(folder, name, *args):
    """The 4 -> 2 run: preempted after step 17 (SIGTERM to rank 3 only), resumed with --resume auto."""
    first = gpt(folder, name, *args, nproc=4, sigterm_at=(17, 3), expect=EXIT_PREEMPTED)
    for rank in range(4):
        assert f"rank {rank}: preempted at step 17" in first.stderr, output(first)
    second = gpt(folder, name, *args, "--resume", "auto", nproc=2)
    assert f"resumed from {folder / name / 'gpt-17.ckpt'} at step 17" in second.stdout, output(second)
    assert ("elastic resume: saved at 4 rank(s) x 2 rows x 1 accumulation step(s); now 2 rank(s) x 2 rows x "
            "2 accumulation step(s): global batch 8 kept") in second.stdout, output(second)
    assert "ranks 2" in second.stdout
    return final_parameters(folder, name)


@pytest.mark.slow
def test_gpt_stopped_on_4_ranks_resumed_on_2_agrees_with_one_rank(tmp_path):
    """Default mode: the final parameters differ from the uninterrupted 1-rank run's only by
    float32 rounding: the whole parameter vector within 1e-5 relative (norm of the difference
    over norm), every step's loss within 1e-5. (Elementwise, a parameter whose true gradient is
    zero, the attention keys' bias, takes Adam steps of rounding noise that differ by rank
    count; it is why the comparison is of the whole vector.)"""
    gpt(tmp_path, "one", "--loss-log", str(tmp_path / "one.log"))
    resumed = stopped_at_17_on_4_resumed_on_2(tmp_path, "elastic", "--loss-log", str(tmp_path / "elastic.log"))
    straight = final_parameters(tmp_path, "one")
    diff = np.sqrt(sum(((resumed[k] - v) ** 2).sum() for k, v in straight.items()))
    norm = np.sqrt(sum((v ** 2).sum() for v in straight.values()))
    assert diff / norm < 1e-5, diff / norm
    one, elastic = np.loadtxt(tmp_path / "one.log"), np.loadtxt(tmp_path / "elastic.log")
    np.testing.assert_array_equal(elastic[:, 0], np.arange(1, 31))  # every step once across the two runs
    np.testing.assert_allclose(elastic[:, 1], one[:, 1], rtol=1e-5)


@pytest.mark.slow
def test_gpt_deterministic_stopped_on_4_ranks_resumed_on_2_is_bit_identical_to_one_rank(tmp_path):
    """Deterministic mode (micro-shards of 2 rows, exact gradient sums, dropout masks drawn per
    sample): the 4 -> 2 run ends with the same bits as the uninterrupted 1-rank run."""
    gpt(tmp_path, "one", *DETERMINISTIC)
    resumed = stopped_at_17_on_4_resumed_on_2(tmp_path, "elastic", *DETERMINISTIC)
    straight = final_parameters(tmp_path, "one")
    unequal = [k for k in straight if not np.array_equal(resumed[k], straight[k])]
    assert not unequal, f"not bit-identical: {unequal}"


@pytest.mark.slow
def test_a_global_batch_the_ranks_do_not_divide_is_an_error_naming_what_would(tmp_path):
    """Resuming the global batch 8 on 3 ranks stops with the world sizes that keep it and
    the global batches 3 ranks could run; --batch-size other than the checkpoint's is refused."""
    gpt(tmp_path, "run", "--steps", "3")
    proc = gpt(tmp_path, "run", "--resume", "auto", nproc=3, expect=1)
    assert ("gpt: the global batch 8 cannot be kept on 3 ranks: it is not a multiple of 3. Keep it with a number "
            "of ranks that divides it (1, 2, 4, 8), or start a new run with a global batch that 3 ranks divide "
            "(6 or 9; a different global batch changes the run) (--nproc; --batch-size)") in proc.stderr, \
        output(proc)
    proc = gpt(tmp_path, "run", "--resume", "auto", "--batch-size", "16", expect=1)
    assert "gpt: --batch-size 16 differs from the global batch 8 of" in proc.stderr, output(proc)


@pytest.mark.slow
@pytest.mark.parametrize("kind,before,after", [("zero", 4, 3), ("fsdp", 2, 3)])
def test_data_and_sharded_state_resume_on_another_world_size(tmp_path, kind, before, after):
    """Real ranks: a DataLoader (2 prefetching workers) over a shuffled DistributedSampler,
    with DDP + ZeroRedundancyOptimizer or fully_shard + Adam, checkpointed by
    CheckpointManager(data=loader) after 3 batches on `before` ranks and resumed on `after`:
    the epoch's order is trained on once (the resumed pass's padding aside), and the model
    and the optimizer state resharded over the new ranks gather back to the saved ones."""
    mpiexec = require_mpi()
    for n, args in ((before, ["stop", "3"]), (after, ["resume"])):
        result = run([mpiexec, "-n", str(n), sys.executable, "tests/rank_resume_data.py", str(tmp_path), *args,
                      kind], timeout=120)
        assert result.returncode == 0, output(result)
    reports = {(phase, r): json.loads((tmp_path / f"{phase}-{r}.json").read_text())
               for phase, ranks in (("stop", before), ("resume", after)) for r in range(ranks)}
    # rank r's list is its share of the order: positions r, r + ranks, ...
    stopped = interleave([reports["stop", r]["seen"] for r in range(before)])
    resumed = interleave([reports["resume", r]["seen"] for r in range(after)])
    rest = 103 - 3 * 4 * before
    assert len(stopped) == 3 * 4 * before and len(resumed) == after * -(-rest // after)
    assert (stopped + resumed)[:103] == global_order(103, True, 7, 2)
    report = reports["resume", 0]
    assert report["saved_world_size"] == before and report["optimizer_state_equal"] and report["model_equal"]


# ---- the checkpoint's parts -------------------------------------------------------------------

def test_the_checkpoint_carries_scaler_loader_world_size_and_global_batch(tmp_path):
    """A GradScaler's and a DataLoader's state, the world size (the process group's) and the
    global batch go into the checkpoint and come back (the loader resuming mid-pass)."""
    data = TensorDataset(dtrain.arange(20))
    loader = DataLoader(data, batch_size=3, sampler=DistributedSampler(data, num_replicas=1, rank=0, seed=2))
    it = iter(loader)
    seen = [next(it)[0].tolist() for _ in range(2)]
    scaler = GradScaler("cpu", init_scale=2.0 ** 10, enabled=True)
    save_checkpoint(tmp_path / "c.ckpt", step=2, scaler=scaler, data=loader, global_batch=3)
    rest = [b.tolist() for (b,) in it]
    scaler2, loader2 = GradScaler("cpu", enabled=True), DataLoader(data, batch_size=3, sampler=DistributedSampler(
        data, num_replicas=1, rank=0, seed=2))
    info = load_checkpoint(tmp_path / "c.ckpt", scaler=scaler2, data=loader2)
    assert (info["world_size"], info["global_batch"], info["step"]) == (1, 3, 2)
    assert scaler2.get_scale() == 2.0 ** 10
    assert [b.tolist() for (b,) in loader2] == rest and len(seen + rest) == 7


def test_version_1_checkpoints_still_load(tmp_path):
    """A file of the previous format (no scaler, data, world size, global batch) loads; those are None."""
    model = dtrain.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "new.ckpt", model, step=4)
    old = load(tmp_path / "new.ckpt")
    for key in ("scaler", "data", "world_size", "global_batch"):
        del old[key]
    old["dtrain_checkpoint"] = 1
    save_state(old, tmp_path / "old.ckpt")
    info = load_checkpoint(tmp_path / "old.ckpt", dtrain.nn.Linear(2, 2))
    assert (info["step"], info["world_size"], info["global_batch"]) == (4, None, None)
    with pytest.raises(CheckpointError, match="the checkpoint has no data state"):
        load_checkpoint(tmp_path / "old.ckpt", data=DataLoader(range(3)))


@pytest.mark.parametrize("key,value,match", [
    ("world_size", 0, "the world_size is 0, not a positive int or None"),
    ("global_batch", "8", "the global_batch is '8', not a positive int or None"),
    ("data", [1], r"the data state is list \[1\], not a dict or None"),
])
def test_malformed_new_parts_are_a_checkpoint_error(tmp_path, key, value, match):
    """A world size or global batch that is no positive int, a data state that is no dict: corrupted."""
    save_checkpoint(tmp_path / "c.ckpt", step=1)
    ckpt = load(tmp_path / "c.ckpt")
    ckpt[key] = value
    save_state(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=f"file is corrupted: {match}"):
        load_checkpoint(tmp_path / "bad.ckpt")


def test_save_refuses_a_global_batch_that_is_no_positive_int(tmp_path):
    """A global batch of 0 is refused before anything is written."""
    with pytest.raises(ValueError, match=r"global_batch must be a positive int \(samples per optimizer step.* got 0"):
        CheckpointManager(tmp_path / "run").save(1, global_batch=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("global_batch,world,max_rows,expected", [
    (16, 4, None, (4, 1)), (16, 2, 4, (4, 2)), (16, 1, 4, (4, 4)), (12, 3, 4, (4, 1)),
    (16, 2, 3, (2, 4)), (10, 2, 3, (1, 5)), (8, 8, 1, (1, 1)), (6, 2, 100, (3, 1)),
])
def test_split_global_batch_keeps_the_global_batch_with_the_fewest_accumulation_steps(global_batch, world,
                                                                                     max_rows, expected):
    """per_rank x accumulation x world == global batch, per_rank <= max_rows, fewest steps."""
    per_rank, steps = split_global_batch(global_batch, world, max_rows)
    assert (per_rank, steps) == expected and per_rank * steps * world == global_batch


@pytest.mark.parametrize("args,match", [
    ((16, 3), r"the global batch 16 cannot be kept on 3 ranks: it is not a multiple of 3. Keep it with a number "
              r"of ranks that divides it \(1, 2, 4, 8, 16\), or start a new run with a global batch that 3 ranks "
              r"divide \(15 or 18; a different global batch changes the run\)"),
    ((2, 3), r"\(1, 2\), .* \(3; a different"),
    ((0, 2), "global_batch must be a positive int, got 0"),
    ((4, True), "world_size must be a positive int, got True"),
    ((4, 2, 0), "max_per_rank must be a positive int or None, got 0"),
])
def test_split_global_batch_errors_say_what_would_work(args, match):
    with pytest.raises(ValueError, match=match):
        split_global_batch(*args)


def adam_steps(model, steps=2):
    opt = dtrain.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(dtrain.ones(2, 3)).square().sum().backward()
        opt.step()
    return opt


def test_a_plain_runs_optimizer_state_loads_into_fully_shard_and_back(tmp_path, world):
    """A checkpoint of a plain model's optimizer (keyed by index) loads into a fully_shard
    model's optimizer (named by the optimizer's order, sliced to the shards); a fully_shard
    run's (keyed by name) loads into a plain one; its state without model= is a clear error."""
    from dtrain.distributed.fsdp import fully_shard
    make = lambda: dtrain.nn.Sequential(dtrain.nn.Linear(3, 4), dtrain.nn.Linear(4, 2))  # noqa: E731
    dtrain.manual_seed(0)
    plain = make()
    opt = adam_steps(plain)
    save_checkpoint(tmp_path / "plain.ckpt", plain, opt)
    sharded = fully_shard(make())
    sharded_opt = dtrain.optim.Adam(sharded.parameters(), lr=0.5)
    load_checkpoint(tmp_path / "plain.ckpt", sharded, sharded_opt)
    save_checkpoint(tmp_path / "sharded.ckpt", sharded, sharded_opt)
    saved = load(tmp_path / "sharded.ckpt")["optimizer"]
    assert saved["param_groups"][0]["params"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert saved["param_groups"][0]["lr"] == 0.1
    back = make()
    back_opt = dtrain.optim.Adam(back.parameters(), lr=0.5)
    load_checkpoint(tmp_path / "sharded.ckpt", back, back_opt)
    for p, q in zip(plain.parameters(), back.parameters()):
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[p][name].numpy(), back_opt.state[q][name].numpy())
    with pytest.raises(CheckpointError, match="sharded.ckpt: the optimizer state is keyed by parameter name .* pass "
                                              "model= too"):
        load_checkpoint(tmp_path / "sharded.ckpt", optimizer=dtrain.optim.Adam(make().parameters()))
    with pytest.raises(CheckpointError, match="plain.ckpt: the optimizer state has 4 parameters, the optimizer 2"):
        other = fully_shard(make())
        load_checkpoint(tmp_path / "plain.ckpt", other, dtrain.optim.Adam(list(other.parameters())[:2]))
