"""Checkpoints keep each rank's RNG streams (``rng_ranks``): a collective save gathers them, a
load on as many ranks gives each rank its own, a load on another world size gives every rank
rank 0's and warns once; a single-process save is as before; a malformed per-rank entry is
refused before anything is restored."""
import sys
import warnings

import numpy as np
import pytest

import dtrain
from dtrain.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from dtrain.serialization import CheckpointError, save_state

from comm_helpers import assert_all_checks_passed, require_mpi, run
from rank_rng_ranks import GPU_DRAWS, draw, recorded_after, seed

V2_KEYS = {"dtrain_checkpoint", "model", "optimizer", "scheduler", "scaler", "data", "epoch", "step", "world_size",
           "global_batch", "extra", "rng"}


def ranks_job(folder, world, *args):
    mpiexec = require_mpi()
    return run([mpiexec, "-n", str(world), sys.executable, "tests/rank_rng_ranks.py", str(folder), *args],
               timeout=120)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The 2-rank job's folder: its checks passed (3 on each rank), and it holds
    gathered-2.ckpt with after-2.npy, rank 0's draws right after that save."""
    folder = tmp_path_factory.mktemp("rng_ranks")
    assert_all_checks_passed(ranks_job(folder, 2), 2, 3)
    return folder


def test_each_of_2_ranks_gets_its_own_streams_back(two_ranks):
    """2 ranks seeded apart: after CheckpointManager.save / load and after
    save_checkpoint(gather_rng=True) / load_checkpoint each draws its own recorded numbers
    again (without a warning); a save on rank 0 alone restores rank 0's on both."""
    saved = dtrain.load(two_ranks / "gathered-2.ckpt")
    assert set(saved) == V2_KEYS | {"rng_ranks"} and len(saved["rng_ranks"]) == 2


def test_4_ranks_and_checkpoints_of_2_ranks_and_of_1_process_resumed_on_4(two_ranks):
    """The same checks on 4 ranks, and the 2-rank file and a single-process file loaded on 4
    ranks: every rank draws what rank 0 (the process) drew after that save, and rank 0 alone
    warns, once per load."""
    seed(9)
    draw(gpu=0)
    save_checkpoint(two_ranks / "gathered-1.ckpt", step=1)
    np.save(two_ranks / "after-1.npy", draw(gpu=0))
    job = ranks_job(two_ranks, 4, str(two_ranks / "gathered-2.ckpt"), str(two_ranks / "gathered-1.ckpt"))
    assert_all_checks_passed(job, 4, 5)


def test_a_2_rank_checkpoint_in_one_process_restores_rank_0s_and_warns_once(two_ranks):
    """2 -> 1: rank 0's streams, and one warning naming both world sizes and why
    deterministic mode is not affected."""
    seed(5)
    with pytest.warns(RuntimeWarning) as caught:
        load_checkpoint(two_ranks / "gathered-2.ckpt")
    np.testing.assert_array_equal(draw(gpu=0), np.load(two_ranks / "after-2.npy"))
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert ("gathered-2.ckpt: the checkpoint holds the RNG states of 2 rank(s), this job has 1: every rank restored "
            "rank 0's") in message and "deterministic mode does not depend on them" in message, message


@pytest.mark.gpu
def test_each_rank_gets_its_own_gpu_streams_back(tmp_path):
    """On GPUs (the CuPy emulation in CI: 2 per process), each rank on its own device: the
    checks of the 2-rank job pass with GPU draws in every comparison (rng["cuda"] per rank)."""
    assert_all_checks_passed(ranks_job(tmp_path, 2), 2, 3)
    assert np.load(tmp_path / "after-2.npy").shape == (16 + GPU_DRAWS,)


def test_a_single_process_save_is_unchanged(tmp_path):
    """One process: no per-rank list (gather_rng=True changes nothing), the file's keys are
    version 2's, and a load restores the streams without a warning."""
    for gather in (False, True):
        path = tmp_path / f"{gather}.ckpt"
        seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            after, again, caught = recorded_after(lambda: save_checkpoint(path, step=1, gather_rng=gather),
                                                  lambda: load_checkpoint(path))
        np.testing.assert_array_equal(again, after)
        assert caught == [] and set(dtrain.load(path)) == V2_KEYS, (caught, sorted(dtrain.load(path)))


def test_gather_rng_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match=r"save_checkpoint: gather_rng must be a bool, got 'yes'"):
        save_checkpoint(tmp_path / "c.ckpt", gather_rng="yes")
    assert not (tmp_path / "c.ckpt").exists()


class RecordingModel:
    loaded = 0

    def state_dict(self):
        return {"w": dtrain.zeros(2)}

    def load_state_dict(self, state):
        self.loaded += 1


BAD_NUMPY = ("MT19937", np.zeros(3, np.uint32), 0, 0, 0.0)  # 3 words of the 624 a state has


@pytest.mark.parametrize("entries,match", [
    (lambda good: "not a list", r"the per-rank RNG states \(rng_ranks\) are 'not a list', not a list of one dict "
                                r"per rank"),
    (lambda good: [], r"the per-rank RNG states \(rng_ranks\) are \[\], not a list of one dict per rank"),
    (lambda good: [good, {"dtrain": None}], r"the RNG states of rank 1 \(rng_ranks\[1\]\) are .*, not a dict "
                                            r"with the keys \['dtrain', 'numpy', 'python'\]"),
    (lambda good: [good, {**good, "numpy": BAD_NUMPY}], r"the numpy RNG state of rank 1 \(rng_ranks\[1\]\) "
                                                        r"\('MT19937', .*\) does not restore \(IndexError"),
], ids=["not a list", "empty", "no numpy key", "bad numpy state"])
def test_a_malformed_per_rank_entry_is_refused_before_anything_is_restored(tmp_path, entries, match):
    """Each per-rank entry is checked as "rng" is: a bad one is a CheckpointError naming the
    rank's entry, raised before the model or any stream is restored; resume="auto" skips it."""
    model = RecordingModel()
    save_checkpoint(tmp_path / "ckpt-1.ckpt", model, step=1)
    ckpt = dtrain.load(tmp_path / "ckpt-1.ckpt")
    ckpt["rng_ranks"] = entries(ckpt["rng"])
    save_state(ckpt, tmp_path / "ckpt-2.ckpt")
    seed(0)
    expected = draw()
    seed(0)
    with pytest.raises(CheckpointError, match=rf"ckpt-2.ckpt: file is corrupted: {match}"):
        load_checkpoint(tmp_path / "ckpt-2.ckpt", model)
    assert model.loaded == 0
    np.testing.assert_array_equal(draw(), expected)
    with pytest.warns(RuntimeWarning, match=rf"skipping checkpoint .*ckpt-2.ckpt: .*{match}"):
        assert CheckpointManager(tmp_path).load(model)["path"].endswith("ckpt-1.ckpt")
