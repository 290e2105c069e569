"""dtrain.data.datasets: MNIST / CIFAR-10 readers on small files written here in the official
formats, scikit-learn's digits, and the synthetic sets."""
import gzip
import os
import pickle
import sys

import numpy as np
import pytest

import dtrain
from dtrain.data import DataLoader
from dtrain.data.datasets import CIFAR10, MNIST, digits, make_classification, make_regression

rng = np.random.default_rng(0)


# ---- MNIST (IDX files) -------------------------------------------------------------------
def idx_bytes(array):
    """An IDX file of unsigned bytes: big-endian magic 0x000008NN (NN = ndim), the sizes, the data."""
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path, data, gz=False):
    if gz:
        path = f"{path}.gz"
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_mnist(root, prefix="train", n=5, gz=False):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write(os.path.join(root, f"{prefix}-images-idx3-ubyte"), idx_bytes(images), gz)
    write(os.path.join(root, f"{prefix}-labels-idx1-ubyte"), idx_bytes(labels), gz)
    return images, labels


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx(tmp_path, train, gz):
    """MNIST reads images and labels from raw or gzipped IDX files; a sample is a float32
    (1, 28, 28) image scaled to [0, 1] and an int label."""
    images, labels = write_mnist(tmp_path, "train" if train else "t10k", gz=gz)
    ds = MNIST(str(tmp_path), train=train)
    assert len(ds) == 5
    np.testing.assert_array_equal(ds.data.numpy(), images)
    assert ds.targets.dtype == dtrain.int64 and ds.targets.tolist() == labels.tolist()
    image, label = ds[2]
    assert image.shape == (1, 28, 28) and image.dtype == dtrain.float32
    np.testing.assert_allclose(image.numpy()[0], images[2] / 255, rtol=1e-6)
    assert label == labels[2] and isinstance(label, int)


def test_mnist_torchvision_layout_transforms_and_loader(tmp_path):
    """Files in root/MNIST/raw are found; transforms apply; a DataLoader batches the samples."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = write_mnist(raw, n=6)
    ds = MNIST(str(tmp_path), transform=lambda x: x * 2, target_transform=lambda y: y + 100)
    np.testing.assert_allclose(ds[0][0].numpy()[0], images[0] / 255 * 2, rtol=1e-6)
    assert ds[0][1] == labels[0] + 100
    xb, yb = next(iter(DataLoader(MNIST(str(tmp_path)), batch_size=4)))
    assert xb.shape == (4, 1, 28, 28) and yb.dtype == dtrain.int64 and yb.tolist() == labels[:4].tolist()


def test_mnist_missing_file(tmp_path):
    """A missing file is named with the directory and where to download it."""
    with pytest.raises(FileNotFoundError, match=r"MNIST file train-images-idx3-ubyte\(\.gz\) not found in "
                                                rf"{tmp_path}.*download it from https://yann.lecun.com/exdb/mnist/"):
        MNIST(str(tmp_path))
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((1, 28, 28))))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        MNIST(str(tmp_path), train=False)


@pytest.mark.parametrize("images, labels, match", [
    (idx_bytes(np.zeros((2, 28, 28)))[:-10], idx_bytes(np.zeros(2)),
     r"images-idx3-ubyte is corrupted: 1558 bytes of data, expected 2 x 28 x 28 = 1568"),
    (idx_bytes(np.zeros(2)), idx_bytes(np.zeros(2)), r"magic number 0x00000801, expected 0x00000803"),
    (idx_bytes(np.zeros((2, 28, 28))), idx_bytes(np.zeros((2, 28, 28))),
     "magic number 0x00000803, expected 0x00000801"),
    (b"\x00\x00\x08", idx_bytes(np.zeros(2)), "truncated: 3 bytes, shorter than the 16-byte IDX header"),
    (idx_bytes(np.zeros((3, 28, 28))), idx_bytes(np.zeros(2)), "holds 3 images but .* holds 2 labels"),
    (idx_bytes(np.zeros((2, 28, 28))) + b"\x00", idx_bytes(np.zeros(2)), "1569 bytes of data, expected"),
], ids=["truncated data", "labels as images", "images as labels", "short header", "count mismatch", "extra byte"])
def test_mnist_corrupted(tmp_path, images, labels, match):
    """Truncated files, wrong magic numbers and disagreeing counts raise ValueError naming the file."""
    write(tmp_path / "train-images-idx3-ubyte", images)
    write(tmp_path / "train-labels-idx1-ubyte", labels)
    with pytest.raises(ValueError, match=match):
        MNIST(str(tmp_path))


@pytest.mark.parametrize("damage", [lambda z: z[:len(z) // 2], lambda z: b"not gzip at all"], ids=["cut", "foreign"])
def test_mnist_corrupted_gzip(tmp_path, damage):
    """A truncated or non-gzip .gz file raises ValueError naming it."""
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(damage(gzip.compress(idx_bytes(np.zeros((2, 28, 28))))))
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(2)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is corrupted: not a complete gzip file"):
        MNIST(str(tmp_path))


# ---- CIFAR-10 (python batches) -----------------------------------------------------------
def cifar_batch(n, label_offset=0):
    """An official-format batch: a pickled dict with bytes keys, data uint8 (n, 3072) holding
    the R, G and B planes of each 32x32 image, labels a list of ints."""
    return {b"batch_label": b"testing batch", b"labels": [(i + label_offset) % 10 for i in range(n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_cifar(root, sizes=(2, 3, 1, 2, 2), test=3, overrides=None):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    batches = {f"data_batch_{i + 1}": cifar_batch(n, i) for i, n in enumerate(sizes)}
    batches["test_batch"] = cifar_batch(test, 7)
    for name, entry in batches.items():
        data = (overrides or {}).get(name, pickle.dumps(entry, protocol=2))
        (folder / name).write_bytes(data)
    return batches


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_reads_batches(tmp_path, train):
    """CIFAR10 concatenates the batches; data is (N, 32, 32, 3) HWC uint8 as torchvision's; a
    sample is a float32 (3, 32, 32) image in [0, 1] and an int label."""
    batches = write_cifar(tmp_path)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    rows = np.concatenate([batches[n][b"data"] for n in names])
    targets = sum((batches[n][b"labels"] for n in names), [])
    ds = CIFAR10(str(tmp_path), train=train)
    assert len(ds) == len(rows) and ds.targets == targets
    assert ds.data.shape == (len(rows), 32, 32, 3) and ds.data.dtype == np.uint8
    r = rows[-1]
    assert ds.data[-1][4, 7, 2] == r[2 * 1024 + 4 * 32 + 7]  # blue plane, row 4, column 7
    image, label = ds[len(ds) - 1]
    assert image.shape == (3, 32, 32) and image.dtype == dtrain.float32 and label == targets[-1]
    np.testing.assert_allclose(image.numpy(), r.reshape(3, 32, 32) / 255, rtol=1e-6)


def test_cifar10_in_loader(tmp_path):
    """A DataLoader over CIFAR10 yields (B, 3, 32, 32) float32 images and int64 labels."""
    write_cifar(tmp_path)
    xb, yb = next(iter(DataLoader(CIFAR10(str(tmp_path)), batch_size=4, shuffle=True)))
    assert xb.shape == (4, 3, 32, 32) and xb.dtype == dtrain.float32 and yb.dtype == dtrain.int64


def test_cifar10_missing_file(tmp_path):
    """A missing batch is named, with the directory and where to get the archive."""
    with pytest.raises(FileNotFoundError, match=r"CIFAR10 file data_batch_1 not found in .*cifar-10-batches-py.*"
                                                r"download cifar-10-python.tar.gz from https://www.cs.toronto.edu"):
        CIFAR10(str(tmp_path))
    write_cifar(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_4")
    with pytest.raises(FileNotFoundError, match="data_batch_4 not found"):
        CIFAR10(str(tmp_path))


class Evil:
    """A pickle that would create a directory when loaded by an unrestricted unpickler."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def _bad_batches(tmp_path):
    good = cifar_batch(2)
    return {
        "garbage": (b"\x80\x02garbage", "cannot unpickle it"),
        "truncated": (pickle.dumps(good, protocol=2)[:100], "cannot unpickle it"),
        "not a dict": (pickle.dumps([1, 2], protocol=2), "expected a dict, found a list"),
        "no labels": (pickle.dumps({b"data": good[b"data"]}, protocol=2), "no 'labels' entry"),
        "wrong shape": (pickle.dumps({**good, b"data": good[b"data"][:, :100]}, protocol=2),
                        r"'data' should be uint8 of shape \(N, 3072\), got uint8 \(2, 100\)"),
        "label count": (pickle.dumps({**good, b"labels": [1]}, protocol=2), "'labels' should be 2 ints in 0..9"),
        "label range": (pickle.dumps({**good, b"labels": [1, 12]}, protocol=2), "'labels' should be 2 ints in 0..9"),
        "code": (pickle.dumps(Evil(str(tmp_path / "pwned"))), "global os.makedirs is not allowed"),
    }


@pytest.mark.parametrize("case", ["garbage", "truncated", "not a dict", "no labels", "wrong shape", "label count",
                                  "label range", "code"])
def test_cifar10_corrupted(tmp_path, case):
    """A damaged or foreign batch raises ValueError naming the file; a pickle that would run
    code is refused without running it."""
    data, match = _bad_batches(tmp_path)[case]
    write_cifar(tmp_path, overrides={"test_batch": data})
    with pytest.raises(ValueError, match=f"test_batch is corrupted: .*({match})"):
        CIFAR10(str(tmp_path), train=False)
    assert not (tmp_path / "pwned").exists()


# ---- digits (scikit-learn) ---------------------------------------------------------------
def test_digits_splits():
    """digits: 1437 train / 360 test images, float32 (1, 8, 8) in [0, 1], int64 labels 0..9;
    the split is the same on every call, and the two splits are disjoint and cover the data."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    train, test = digits(), digits(train=False)
    (xtr, ytr), (xte, yte) = train.tensors, test.tensors
    assert (len(train), len(test)) == (1437, 360)
    assert xtr.shape == (1437, 1, 8, 8) and xtr.dtype == dtrain.float32 and ytr.dtype == dtrain.int64
    assert xtr.numpy().min() == 0.0 and xtr.numpy().max() == 1.0
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(10))
    np.testing.assert_array_equal(digits().tensors[0].numpy(), xtr.numpy())
    full = sklearn_datasets.load_digits()
    ours = np.concatenate([xtr.numpy().reshape(-1, 64), xte.numpy().reshape(-1, 64)]) * 16
    key = lambda rows, y: sorted(map(tuple, np.column_stack([rows, y]).tolist()))  # noqa: E731
    assert key(ours, np.concatenate([ytr.numpy(), yte.numpy()])) == key(full.data, full.target)


def test_digits_flat():
    """flatten=True gives (N, 64) rows, the same pixels."""
    pytest.importorskip("sklearn")
    np.testing.assert_array_equal(digits(flatten=True).tensors[0].numpy(),
                                  digits().tensors[0].numpy().reshape(1437, 64))


def test_digits_without_sklearn(monkeypatch):
    """Without scikit-learn, digits() raises ImportError saying what to install."""
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        digits()


# ---- synthetic ---------------------------------------------------------------------------
def test_make_classification():
    """Balanced Gaussian clusters, reproducible from the seed, separable by nearest center."""
    ds = make_classification(600, 20, 3, seed=1)
    x, y = ds.tensors
    assert x.shape == (600, 20) and x.dtype == dtrain.float32 and y.dtype == dtrain.int64
    assert np.bincount(y.numpy()).tolist() == [200, 200, 200]
    np.testing.assert_array_equal(make_classification(600, 20, 3, seed=1).tensors[0].numpy(), x.numpy())
    assert not np.array_equal(make_classification(600, 20, 3, seed=2).tensors[0].numpy(), x.numpy())
    dist = ((x.numpy()[:, None, :] - ds.centers.numpy()[None]) ** 2).sum(-1)
    assert (dist.argmin(1) == y.numpy()).mean() > 0.95


def test_make_regression():
    """Targets are the attached linear map of the inputs plus noise of the given std."""
    exact = make_regression(300, 5, noise=0.0, seed=3)
    x, y = exact.tensors
    assert x.shape == (300, 5) and y.shape == (300, 1) and y.dtype == dtrain.float32
    np.testing.assert_allclose(y.numpy(), x.numpy() @ exact.weight.numpy().T + exact.bias.numpy(), atol=1e-5)
    noisy = make_regression(4000, 5, noise=0.5, seed=3, n_targets=2)
    x, y = noisy.tensors
    residual = y.numpy() - (x.numpy() @ noisy.weight.numpy().T + noisy.bias.numpy())
    assert y.shape == (4000, 2) and abs(residual.std() - 0.5) < 0.03
    w, *_ = np.linalg.lstsq(np.column_stack([x.numpy(), np.ones(4000)]), y.numpy(), rcond=None)
    np.testing.assert_allclose(w[:5].T, noisy.weight.numpy(), atol=0.05)


@pytest.mark.parametrize("fn, kwargs, match", [
    (make_classification, dict(n_samples=0), "make_classification: n_samples must be an int >= 1, got 0"),
    (make_classification, dict(n_classes=1), "n_classes must be an int >= 2, got 1"),
    (make_classification, dict(n_features=2.5), "n_features must be an int >= 1, got 2.5"),
    (make_regression, dict(noise=-1.0), "make_regression: noise must be a standard deviation >= 0, got -1.0"),
    (make_regression, dict(n_targets=0), "n_targets must be an int >= 1, got 0"),
])
def test_synthetic_errors(fn, kwargs, match):
    """Bad sizes or noise raise ValueError naming the function, the argument and the value."""
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)
