"""dtrain.cuda.get_rng_state / set_rng_state (_all) and the CUDA RNG states in checkpoints.

The GPU tests run on the CuPy emulation (``DTRAIN_CUPY_EMULATION=2``, the README's second
pytest run): a stream restored from a state, directly or through a checkpoint, draws what
the uninterrupted stream draws. The CPU tests feed the paths without a GPU: a checkpoint
from a machine with GPUs loads, an old one without CUDA states loads, a malformed state is
refused with a message naming what is wrong.
"""
import re
import warnings

import numpy as np
import pytest

import dtrain
import dtrain.nn.functional as F
from dtrain import cuda
from dtrain.checkpoint import load_checkpoint, save_checkpoint
from dtrain.serialization import CheckpointError, load, save_state
from dtrain.tensor import backend, device_rng

# a GPU generator state as get_rng_state gives it after a few draws (and one at its seed's start)
STATE = {"seed": 7, "state": {"block": 2, "calls": [["random", [4, 3], "float32"], ["integers", -5, 9, []],
                                                      ["permutation", 6], ["standard_normal", [2], "float64"]],
                              "order": [0, 1, 0, 2, 3]}}
FRESH = {"seed": 8, "state": None}


def draws(device, n=1):
    """n draws of every kind dtrain makes on ``device`` (dropout included), as NumPy arrays."""
    out = []
    for _ in range(n):
        x = dtrain.ones(5, 4, device=device)
        for t in (dtrain.randn(3, device=device), dtrain.rand(2, 2, device=device, dtype=dtrain.float16),
                  dtrain.randint(-3, 9, (4,), device=device), dtrain.randperm(5, device=device),
                  F.dropout(x, 0.5, training=True)):
            out.append(t.cpu().numpy())
    return out


def assert_same(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(backend, "cupy", None)


# ---- without a GPU --------------------------------------------------------------------------

def test_without_a_gpu_as_pytorch(no_cupy):
    """No GPU: get_rng_state raises (as PyTorch), get_rng_state_all is [], set_rng_state(_all)
    check the state and do nothing else (PyTorch defers them to a CUDA start that never comes)."""
    with pytest.raises(RuntimeError, match=r"get_rng_state: no CUDA device is available"):
        cuda.get_rng_state()
    assert cuda.get_rng_state_all() == []
    cuda.set_rng_state(STATE)
    cuda.set_rng_state(FRESH, device=3)
    cuda.set_rng_state_all([STATE, FRESH, STATE])
    with pytest.raises(ValueError, match="a GPU generator state is a dict with the keys"):
        cuda.set_rng_state_all([STATE, "junk"])


BAD_STATES = [
    ("junk", r"a GPU generator state is a dict with the keys \['seed', 'state'\], got 'junk'"),
    ({"seed": 1}, r"a GPU generator state is a dict with the keys \['seed', 'state'\], got \{'seed': 1\}"),
    ({"seed": 1.5, "state": None}, "the GPU generator state's seed is 1.5, not an int"),
    ({"seed": True, "state": None}, "the GPU generator state's seed is True, not an int"),
    ({"seed": 1, "state": {"block": 0, "calls": []}},
     r"a device RNG stream state is a dict with the keys \['block', 'calls', 'order'\]"),
    ({"seed": 1, "state": {"block": -1, "calls": [], "order": []}},
     "the device RNG stream state's block is -1, not an int >= 0"),
    ({"seed": 1, "state": {"block": 0, "calls": "random", "order": []}},
     "the device RNG stream state's calls are 'random', not a list"),
    ({"seed": 1, "state": {"block": 0, "calls": [["gamma", [2], "float32"]], "order": [0]}},
     r"malformed: a draw is \['gamma', \[2\], 'float32'\], not \[name, \*args\] with name one of"),
    ({"seed": 1, "state": {"block": 0, "calls": [["random", [2]]], "order": [0]}},
     r"malformed: the random draw \['random', \[2\]\] has 1 arguments \(size, dtype expected\)"),
    ({"seed": 1, "state": {"block": 0, "calls": [["random", [2, -1], "float32"]], "order": [0]}},
     r"malformed: the random draw .* has size \[2, -1\]"),
    ({"seed": 1, "state": {"block": 0, "calls": [["random", [2], "int64"]], "order": [0]}},
     "malformed: the random draw .* has dtype 'int64'"),
    ({"seed": 1, "state": {"block": 0, "calls": [["integers", 0, 2.5, [3]]], "order": [0]}},
     "malformed: the integers draw .* has high 2.5"),
    ({"seed": 1, "state": {"block": 0, "calls": [["permutation", -4]], "order": [0]}},
     "malformed: the permutation draw .* has n -4"),
    ({"seed": 1, "state": {"block": 0, "calls": [["permutation", 4]], "order": [0, 1]}},
     r"order is \[0, 1\], not a list of fewer than 1024 indices into its 1 calls"),
    ({"seed": 1, "state": {"block": 0, "calls": [["permutation", 4]], "order": [0] * 1024}},
     "not a list of fewer than 1024 indices"),
]


@pytest.mark.parametrize("state, match", BAD_STATES, ids=range(len(BAD_STATES)))
def test_malformed_gpu_state_is_refused_naming_what_is_wrong(state, match):
    """set_rng_state refuses a state get_rng_state cannot have given (with or without a GPU,
    before any generator changes), saying which part is wrong."""
    with pytest.raises(ValueError, match=match):
        cuda.set_rng_state(state)


def checkpoint_with(tmp_path, monkeypatch, cuda_states, name="c.ckpt"):
    """A checkpoint saved as a process seeing ``len(cuda_states)`` GPUs with those generator
    states saves it; returns its path and the CPU draws that follow the save."""
    monkeypatch.setattr(cuda, "get_rng_state_all", lambda: cuda_states)
    path = tmp_path / name
    save_checkpoint(path, dtrain.nn.Linear(3, 2), step=1)
    monkeypatch.undo()
    return path, dtrain.rand(4).numpy()


def test_checkpoint_from_a_gpu_machine_loads_without_one(tmp_path, monkeypatch, no_cupy):
    """A checkpoint holding the CUDA states of 2 GPUs loads on a CPU-only process: no error, no
    warning (no draw there uses a CUDA generator: the states are ignored, as
    torch.cuda.set_rng_state_all on a CPU build), the CPU streams restored; the states stay
    in the file."""
    dtrain.manual_seed(3)
    path, after = checkpoint_with(tmp_path, monkeypatch, [STATE, FRESH])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(path, dtrain.nn.Linear(3, 2))
    assert np.array_equal(dtrain.rand(4).numpy(), after)
    assert load(path)["rng"]["cuda"] == [STATE, FRESH]


def test_checkpoint_without_cuda_states_loads(tmp_path):
    """A checkpoint written before CUDA states were saved (no "cuda" RNG key) loads and
    restores the CPU streams."""
    dtrain.manual_seed(4)
    save_checkpoint(tmp_path / "new.ckpt", dtrain.nn.Linear(3, 2), step=1)
    old = load(tmp_path / "new.ckpt")
    del old["rng"]["cuda"]
    save_state(old, tmp_path / "old.ckpt")
    after = dtrain.rand(4).numpy()
    load_checkpoint(tmp_path / "old.ckpt", dtrain.nn.Linear(3, 2))
    assert np.array_equal(dtrain.rand(4).numpy(), after)


BAD_CHECKPOINT_RNG = [
    ({"cuda": "states"}, r"the cuda RNG state 'states' does not restore \(TypeError: the CUDA RNG states are str, "
                         r"not a list \(one per device\)\)"),
    ({"cuda": [STATE, {"seed": 1}]}, r"the cuda RNG state .* does not restore \(ValueError: a GPU generator state "
                                     r"is a dict with the keys"),
    ({"cuda": [FRESH], "mps": []}, r"the RNG states are .*, not a dict with the keys \['dtrain', 'numpy', "
                                   r"'python'\] \(and optionally \['cuda'\]\)"),
]


@pytest.mark.parametrize("change, match", BAD_CHECKPOINT_RNG, ids=range(len(BAD_CHECKPOINT_RNG)))
def test_malformed_cuda_states_make_the_checkpoint_corrupted(tmp_path, change, match):
    """CUDA RNG states that set_rng_state would refuse (or an unknown RNG kind) make the file
    a CheckpointError naming it, on a machine without a GPU too, before anything is restored."""
    save_checkpoint(tmp_path / "good.ckpt", dtrain.nn.Linear(3, 2))
    ckpt = load(tmp_path / "good.ckpt")
    ckpt["rng"].update(change)
    path = tmp_path / "bad.ckpt"
    save_state(ckpt, path)
    model, state = dtrain.nn.Linear(3, 2), dtrain.get_rng_state()
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))}: file is corrupted: {match}"):
        load_checkpoint(path, model)
    assert dtrain.get_rng_state()["state"] == state["state"]


# ---- on (emulated) GPUs ---------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("cut", range(0, 13, 3))
def test_restored_stream_draws_what_the_uninterrupted_one_draws(monkeypatch, cut):
    """With blocks of 4 draws, a state taken after ``cut`` draws (0 to 12 draws of the five kinds,
    in and at the ends of blocks) and restored after more draws gives the draws that followed
    it; a fresh generator seeded the same and drawing the same also gives them (the state is
    the stream's position, not a copy of its past)."""
    monkeypatch.setattr(device_rng, "BLOCK", 4)
    dtrain.manual_seed(11)
    draws("cuda:0", cut // 5)
    for _ in range(cut % 5):
        dtrain.rand(1, device="cuda:0")
    state = cuda.get_rng_state(0)
    assert state["state"]["block"] == cut // 4 and len(state["state"]["order"]) == cut % 4
    following = draws("cuda:0", 2)
    cuda.set_rng_state(state, "cuda:0")
    assert_same(draws("cuda:0", 2), following)
    dtrain.manual_seed(11)
    draws("cuda:0", cut // 5)
    for _ in range(cut % 5):
        dtrain.rand(1, device="cuda:0")
    assert_same(draws("cuda:0", 2), following)


@pytest.mark.gpu
def test_state_moves_between_devices_and_across_a_real_block():
    """A state carries its seed: cuda:0's state set on cuda:1 makes cuda:1 draw what cuda:0
    does; past the first BLOCK draws (the stream re-seeded) it still restores exactly."""
    dtrain.manual_seed(5)
    for _ in range(device_rng.BLOCK + 2):
        dtrain.randn(1, device="cuda:0")
    state = cuda.get_rng_state("cuda:0")
    assert state["state"]["block"] == 1 and state["state"]["order"] == [0, 0]
    assert cuda.get_rng_state() == state == cuda.get_rng_state(dtrain.device("cuda:0"))  # current: cuda:0
    cuda.set_rng_state(state, device=1)
    assert_same(draws("cuda:1"), draws("cuda:0"))


@pytest.mark.gpu
def test_states_are_read_and_restored_without_touching_a_device(monkeypatch):
    """get_rng_state_all / set_rng_state_all build no device generator (no CUDA context on a
    GPU the job does not use); the first draw builds one and replays the position there."""
    dtrain.manual_seed(6)
    draws("cuda:1")
    states = cuda.get_rng_state_all()
    built = []
    real = backend.make_rng
    monkeypatch.setattr(backend, "make_rng", lambda device, seed: built.append(device) or real(device, seed))
    assert len(cuda.get_rng_state_all()) == cuda.device_count() == 2
    cuda.set_rng_state_all(states)
    assert built == []
    following = draws("cuda:1")
    assert built == [dtrain.device("cuda:1")]
    cuda.set_rng_state_all(states)
    assert_same(draws("cuda:1"), following)


@pytest.mark.gpu
def test_set_rng_state_all_refuses_more_states_than_devices():
    """PyTorch's set_rng_state_all fails on a state for a device that is not there; here before
    any device changes, naming both counts."""
    states = cuda.get_rng_state_all()
    before = draws("cuda:0")
    cuda.set_rng_state_all(states)
    with pytest.raises(ValueError, match=r"set_rng_state_all: 3 states for 2 visible CUDA device\(s\)"):
        cuda.set_rng_state_all([FRESH] + states)
    with pytest.raises(ValueError, match=r"set_rng_state: invalid device cuda:5: only 2 CUDA device\(s\) are"):
        cuda.set_rng_state(FRESH, 5)
    assert_same(draws("cuda:0"), before)


@pytest.mark.gpu
def test_checkpoint_resumes_gpu_draws_identically(tmp_path):
    """Dropout masks and randn on two GPUs (and the CPU): save a checkpoint, draw on, load, draw
    again: the same numbers on every device."""
    dtrain.manual_seed(7)
    draws("cuda:0", 3), draws("cuda:1", 2), draws("cpu")
    save_checkpoint(tmp_path / "c.ckpt", dtrain.nn.Linear(3, 2), step=3)
    following = [draws(device, 2) for device in ("cuda:0", "cuda:1", "cpu")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(tmp_path / "c.ckpt", dtrain.nn.Linear(3, 2))
    for device, expected in zip(("cuda:0", "cuda:1", "cpu"), following):
        assert_same(draws(device, 2), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("saved, match", [
    (3, r"holds the CUDA RNG states of 3 device\(s\), this process sees 2: restored cuda:0 to cuda:1; random"),
    (1, r"holds the CUDA RNG states of 1 device\(s\), this process sees 2: restored cuda:0 \(cuda:1 keep their "
        r"state\); random draws on a device without its saved state differ")])
def test_another_number_of_gpus_restores_the_common_ones_and_warns(tmp_path, monkeypatch, saved, match):
    """A checkpoint from a process seeing 3 (or 1) GPUs loaded by one seeing 2: the devices both
    have are restored, the others keep their state, and a warning names the file and both
    counts."""
    dtrain.manual_seed(8)
    draws("cuda:0"), draws("cuda:1", 2)
    states = cuda.get_rng_state_all()
    path, _ = checkpoint_with(tmp_path, monkeypatch, (states + [FRESH])[:saved])
    following = [draws("cuda:0"), draws("cuda:1")]
    with pytest.warns(RuntimeWarning, match=f"{re.escape(str(path))}: the checkpoint {match}"):
        load_checkpoint(path, dtrain.nn.Linear(3, 2))
    assert_same(draws("cuda:0"), following[0])
    if saved == 1:  # cuda:1 kept its state: it goes on after the draws above
        assert not np.array_equal(draws("cuda:1")[0], following[1][0])
    else:
        assert_same(draws("cuda:1"), following[1])
