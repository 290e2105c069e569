"""What the DataLoader's resume and deterministic-mode machinery costs per batch: loading a
pass in the default mode, in deterministic mode (every sample loaded inside its own
``sample_random`` block), and ``state_dict()`` / ``load_state_dict()`` themselves.

    .venv/bin/python benchmarks/loader_resume.py [--rounds 5] [--batches 40]

Two datasets, batch 256 over a DistributedSampler (2 ranks' view, rank 0):

* tensors: a TensorDataset of 784-float rows (nothing random: the bare cost of the blocks);
* augmented: 3x32x32 images through RandomCrop(32, padding=4) + RandomHorizontalFlip (the
  draws are what deterministic mode makes per sample).

A round times ``--batches`` batches of each variant in turn (a noisy machine slows all alike);
the table gives the median ms per batch over rounds and the median of per-round ratios to the
default mode. Writes benchmarks/results/loader_resume.json.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import dtrain  # noqa: E402
from dtrain.data import DataLoader, Dataset, DistributedSampler, TensorDataset  # noqa: E402
from dtrain.vision import transforms  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "loader_resume.json")
BATCH = 256


class Augmented(Dataset):
    def __init__(self, n):
        self.images = dtrain.randn(n, 3, 32, 32)
        self.aug = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.aug(self.images[i])


def time_pass(dataset, deterministic, batches):
    """ms per batch of the first ``batches`` batches of a pass."""
    dtrain.use_deterministic_algorithms(deterministic)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=DistributedSampler(dataset, 2, 0, seed=1))
    started = time.perf_counter()
    for _ in itertools.islice(loader, batches):
        pass
    dtrain.use_deterministic_algorithms(False)
    return (time.perf_counter() - started) / batches * 1e3


def time_state(dataset, calls=200):
    """ms per state_dict() + load_state_dict() of a loader in the middle of a pass."""
    loader = DataLoader(dataset, batch_size=BATCH, sampler=DistributedSampler(dataset, 2, 0, seed=1))
    it = iter(loader)
    next(it)
    fresh = DataLoader(dataset, batch_size=BATCH, sampler=DistributedSampler(dataset, 3, 1, seed=1))
    started = time.perf_counter()
    for _ in range(calls):
        fresh.load_state_dict(loader.state_dict())
    return (time.perf_counter() - started) / calls * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args()
    n = BATCH * args.batches * 2  # two ranks' worth: rank 0 reads `batches` batches
    dtrain.manual_seed(0)
    datasets = {"tensors": TensorDataset(dtrain.randn(n, 784), dtrain.arange(n)), "augmented": Augmented(n)}
    times = {(name, det): [] for name in datasets for det in (False, True)}
    state = []
    for _ in range(args.rounds):
        for (name, det), got in times.items():
            got.append(time_pass(datasets[name], det, args.batches))
        state.append(time_state(datasets["tensors"]))
    rows = []
    print(f"{'dataset':<10} {'default ms/batch':>17} {'deterministic':>14} {'ratio':>6}")
    for name in datasets:
        default, det = times[name, False], times[name, True]
        ratio = statistics.median(d / b for b, d in zip(default, det))
        rows.append({"dataset": name, "default_ms": statistics.median(default),
                     "deterministic_ms": statistics.median(det), "ratio": ratio})
        print(f"{name:<10} {rows[-1]['default_ms']:>17.2f} {rows[-1]['deterministic_ms']:>14.2f} {ratio:>6.2f}")
    print(f"state_dict() + load_state_dict() (2 -> 3 ranks' samplers): {statistics.median(state):.4f} ms")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump({"batch": BATCH, "batches": args.batches, "rounds": args.rounds, "passes": rows,
                   "state_roundtrip_ms": statistics.median(state)}, f, indent=1)


if __name__ == "__main__":
    main()
