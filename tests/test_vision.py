"""dtrain.vision: torchvision's datasets, transforms and utils.

torchvision is not installed here: the transforms are checked against hand-computed values
and torchvision's semantics as its sources state them; tensor resizing against PyTorch's
``interpolate`` (values and gradients) through ``check_op``.
"""
import io
import tarfile

import numpy as np
import pytest

import dtrain
from dtrain.data import DataLoader
from dtrain.vision import _pil, datasets, transforms as T, utils
from dtrain.vision.transforms import InterpolationMode
from dtrain.vision.transforms import functional as F
from helpers import check_op
from test_datasets import write_cifar, write_mnist

try:
    from PIL import Image
except ImportError:  # the tests of what needs no Pillow still run
    Image = None
needs_pil = pytest.mark.skipif(Image is None, reason="Pillow is not installed (pip install dtrain[vision])")
rng = np.random.default_rng(1)


def u8(*shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def tensor_of(array):
    return dtrain.from_numpy(np.ascontiguousarray(array))


@pytest.fixture
def no_pillow(monkeypatch):
    """dtrain.vision as it runs where Pillow is not installed."""
    monkeypatch.setattr(_pil, "Image", None)


# ---- datasets ----------------------------------------------------------------------------------

@needs_pil
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_items_are_pil_images(tmp_path, gz):
    """MNIST in torchvision's layout (root/MNIST/raw) gives (PIL image mode L, int label);
    ToTensor of it equals dtrain.data's float tensor; a loader batches the pipeline."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = write_mnist(raw, n=6, gz=gz)
    ds = datasets.MNIST(tmp_path, train=True)
    image, label = ds[3]
    assert isinstance(image, Image.Image) and image.mode == "L" and image.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(image), images[3])
    assert label == labels[3] and type(label) is int
    np.testing.assert_array_equal(T.ToTensor()(image).numpy(), dtrain.data.datasets.MNIST(str(tmp_path))[3][0].numpy())
    assert ds.class_to_idx["3 - three"] == 3 and ds.raw_folder == str(raw)
    pipeline = T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
    xb, yb = next(iter(DataLoader(datasets.MNIST(str(tmp_path), transform=pipeline), batch_size=4)))
    assert xb.shape == (4, 1, 28, 28) and yb.tolist() == labels[:4].tolist()
    expected = (images[1] / np.float32(255) - np.float32(0.1307)) / np.float32(0.3081)
    np.testing.assert_allclose(xb.numpy()[1, 0], expected, rtol=1e-5)


@pytest.mark.parametrize("download", [False, True])
def test_mnist_missing_files_are_named(tmp_path, download):
    """Missing MNIST files (download True or False) are an error naming every missing file
    of the split and the folder to place them in; dtrain does not download."""
    why = "download=True, but dtrain does not download datasets" if download else "dataset not found"
    with pytest.raises(FileNotFoundError, match=rf"MNIST: {why}: place t10k-images-idx3-ubyte\(\.gz\), "
                                                rf"t10k-labels-idx1-ubyte\(\.gz\) in {tmp_path / 'MNIST' / 'raw'} "
                                                r"\(from https://yann.lecun.com"):
        datasets.MNIST(tmp_path, train=False, download=download)


@needs_pil
def test_cifar10_items_and_archive_extraction(tmp_path):
    """CIFAR10 gives (PIL image mode RGB 32x32, int label) equal to data[i]; with
    download=True an archive cifar-10-python.tar.gz in root is extracted first."""
    source = tmp_path / "src"
    source.mkdir()
    batches = write_cifar(source)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = datasets.CIFAR10(root, train=False, download=True)
    image, label = ds[1]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(image), ds.data[1])
    expected = batches["test_batch"][b"data"][1].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(ds.data[1], expected)
    assert label == batches["test_batch"][b"labels"][1] and ds.class_to_idx["truck"] == 9
    assert len(datasets.CIFAR10(root, train=True)) == 10


@pytest.mark.parametrize("download", [False, True])
def test_cifar10_missing_files_are_named(tmp_path, download):
    """Missing CIFAR-10 batches are an error naming each missing batch, the folder, and the
    archive to extract."""
    with pytest.raises(FileNotFoundError, match=r"CIFAR10: .*place data_batch_1, data_batch_2, data_batch_3, "
                                                rf"data_batch_4, data_batch_5 in {tmp_path / 'cifar-10-batches-py'} "
                                                rf"\(extract cifar-10-python.tar.gz from .* into {tmp_path}\)"):
        datasets.CIFAR10(tmp_path, download=download)


@needs_pil
def test_fakedata_items():
    """FakeData item i is randn(image_size) from a generator seeded i + random_offset, made a
    PIL image as ToPILImage does (mul(255), truncated, wrapped), with a 0-d int64 target
    drawn after it; reads repeat, dtrain's global RNG is untouched, a loader batches it."""
    ds = datasets.FakeData(size=5, image_size=(3, 4, 6), num_classes=3, random_offset=10)
    image, target = ds[2]
    g = dtrain.Generator().manual_seed(12)
    values = dtrain.randn(3, 4, 6, generator=g).numpy()
    expected_target = dtrain.randint(0, 3, size=(1,), dtype=dtrain.int64, generator=g)[0]
    expected = (np.trunc(values * 255).astype(np.int64) % 256).astype(np.uint8).transpose(1, 2, 0)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (6, 4)
    np.testing.assert_array_equal(np.asarray(image), expected)
    assert target.shape == () and target.dtype == dtrain.int64 and target.item() == expected_target.item()
    np.testing.assert_array_equal(np.asarray(ds[2][0]), expected)
    np.testing.assert_array_equal(np.asarray(ds[-3][0]), expected)
    dtrain.manual_seed(0)
    before = dtrain.rand(3).tolist()
    dtrain.manual_seed(0)
    ds[0], ds[4]
    assert dtrain.rand(3).tolist() == before
    assert datasets.FakeData(1, (1, 2, 2))[0][0].mode == "L"
    xb, yb = next(iter(DataLoader(datasets.FakeData(8, (3, 5, 5), transform=T.ToTensor()), batch_size=4)))
    assert xb.shape == (4, 3, 5, 5) and yb.shape == (4,) and yb.dtype == dtrain.int64


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=-1), r"size must be an int >= 0, got -1"),
    (dict(num_classes=0), r"num_classes must be an int >= 1, got 0"),
    (dict(image_size=(5, 2, 2)), r"image_size must be \(C, H, W\) with C in 1..4, got \(5, 2, 2\)"),
    (dict(image_size=(3, 0, 2)), r"each of image_size must be an int >= 1, got 0"),
])
def test_fakedata_bad_arguments(kwargs, match):
    """Bad FakeData arguments are refused at construction, quoting the value."""
    with pytest.raises(ValueError, match=match):
        datasets.FakeData(**kwargs)


def test_fakedata_index_out_of_range():
    """An index past the end is an IndexError naming it and the size."""
    with pytest.raises(IndexError, match="FakeData index 3 out of range for size 3"):
        datasets.FakeData(3)[3]


def test_without_pillow_datasets_give_arrays(tmp_path, no_pillow):
    """Without Pillow the datasets give uint8 arrays (H, W[, C]) that ToTensor takes, with
    the same tensors as from the PIL images."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, _ = write_mnist(raw, n=2)
    image, _ = datasets.MNIST(tmp_path)[1]
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, images[1])
    np.testing.assert_allclose(T.ToTensor()(image).numpy()[0], images[1] / np.float32(255))
    fake, _ = datasets.FakeData(2, (3, 4, 4))[0]
    assert isinstance(fake, np.ndarray) and fake.shape == (4, 4, 3)


def test_without_pillow_clear_errors(no_pillow, tmp_path):
    """Without Pillow, what needs it raises ImportError naming `pip install dtrain[vision]`."""
    for call in (lambda: utils.save_image(dtrain.rand(3, 2, 2), tmp_path / "x.png"),
                 lambda: T.ToPILImage()(dtrain.rand(3, 2, 2))):
        with pytest.raises(ImportError, match=r"needs Pillow, which is not installed: pip install dtrain\[vision\]"):
            call()


# ---- conversions -------------------------------------------------------------------------------

@needs_pil
def test_to_tensor_from_pil_and_arrays():
    """ToTensor: PIL RGB / L / '1' and uint8 HWC arrays become float32 CHW divided by 255;
    other array dtypes keep their values; a (H, W) array gets one channel."""
    rgb = u8(4, 5, 3)
    expected = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    for pic in (Image.fromarray(rgb), rgb):
        out = T.ToTensor()(pic)
        assert out.dtype == dtrain.float32 and out.shape == (3, 4, 5)
        np.testing.assert_array_equal(out.numpy(), expected)
    gray = u8(4, 5)
    np.testing.assert_array_equal(T.ToTensor()(Image.fromarray(gray)).numpy(), gray[None] / np.float32(255))
    bits = Image.fromarray(gray > 127)
    np.testing.assert_array_equal(T.ToTensor()(bits).numpy(), (gray > 127)[None].astype(np.float32))
    floats = rng.standard_normal((2, 3, 2))
    out = T.ToTensor()(floats)
    assert out.dtype == dtrain.float64
    np.testing.assert_array_equal(out.numpy(), floats.transpose(2, 0, 1))


@pytest.mark.parametrize("pic, error, match", [
    (dtrain.ones(3, 2, 2), TypeError, "pic should be PIL Image or ndarray. Got <class 'dtrain"),
    (np.zeros((1, 2, 2, 3), np.uint8), ValueError, "pic should be 2/3 dimensional. Got 4 dimensions."),
])
def test_to_tensor_errors(pic, error, match):
    """ToTensor refuses what torchvision refuses, with torchvision's messages."""
    with pytest.raises(error, match=match):
        T.ToTensor()(pic)


@needs_pil
def test_to_pil_image():
    """ToPILImage: a float tensor in [0, 1] becomes uint8 by mul(255) truncated, with mode L,
    LA, RGB or RGBA by channel count; an ndarray HWC keeps its values; mode= converts."""
    x = dtrain.tensor(np.array([[[0.0, 0.5], [0.999, 1.0]]], np.float32))
    img = T.ToPILImage()(x)
    assert img.mode == "L" and np.asarray(img).tolist() == [[0, 127], [254, 255]]
    for c, mode in ((2, "LA"), (3, "RGB"), (4, "RGBA")):
        array = u8(3, 2, c)
        img = F.to_pil_image(array)
        assert img.mode == mode
        np.testing.assert_array_equal(np.asarray(img), array)
    assert T.ToPILImage(mode="L")(u8(2, 2, 3)).mode == "L"
    assert repr(T.ToPILImage()) == "ToPILImage()"


@pytest.mark.parametrize("pic, error, match", [
    (dtrain.ones(5, 2, 2), ValueError, "pic should not have > 4 channels. Got 5 channels."),
    (dtrain.ones(1, 1, 2, 2), ValueError, "pic should be 2/3 dimensional. Got 4 dimensions."),
    ([[0]], TypeError, "pic should be Tensor or ndarray. Got <class 'list'>"),
    (np.zeros((2, 2, 3), np.int32), TypeError, "Input type int32 is not supported"),
])
@needs_pil
def test_to_pil_image_errors(pic, error, match):
    """ToPILImage refuses bad shapes and types, naming them."""
    with pytest.raises(error, match=match):
        F.to_pil_image(pic)


# ---- Normalize, Lambda, Compose ----------------------------------------------------------------

def test_normalize_values_and_gradients():
    """Normalize is (x - mean[c]) / std[c] per channel, values and gradients as PyTorch's
    composite; inplace changes the input; a batch (N, C, H, W) works."""
    mean, std = [0.5, -1.0, 2.0], [0.25, 2.0, 4.0]
    m, s = np.array(mean)[:, None, None], np.array(std)[:, None, None]
    check_op(lambda x: T.Normalize(mean, std)(x), (3, 2, 4), ref=lambda x: (x - m) / s,
             torch_fn=lambda x: (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None])
    batch = dtrain.ones(2, 3, 1, 1)
    np.testing.assert_allclose(F.normalize(batch, mean, std).numpy()[:, :, 0, 0], [[2.0, 1.0, -0.25]] * 2)
    x = dtrain.ones(3, 1, 1)
    assert F.normalize(x, mean, std, inplace=True) is x and x.numpy().ravel().tolist() == [2.0, 1.0, -0.25]
    assert repr(T.Normalize((0.5,), (0.5,))) == "Normalize(mean=(0.5,), std=(0.5,))"


@pytest.mark.parametrize("x, mean, std, error, match", [
    (np.zeros((1, 2, 2)), [0.0], [1.0], TypeError, "img should be Tensor Image. Got <class 'numpy.ndarray'>"),
    (dtrain.zeros(1, 2, 2, dtype=dtrain.int64), [0.0], [1.0], TypeError, "Input tensor should be a float tensor"),
    (dtrain.zeros(2, 2), [0.0], [1.0], ValueError, r"Expected tensor to be a tensor image of size \(..., C, H, W\)"),
    (dtrain.zeros(3, 2, 2), [0.0], [1.0, 0.0, 1.0], ValueError, "std evaluated to zero after conversion to float32"),
    (dtrain.zeros(3, 2, 2), [0.0, 1.0], [1.0], ValueError, "normalize: mean has 2 values but the image has 3 channels"),
])
def test_normalize_errors(x, mean, std, error, match):
    """Normalize refuses non-tensors, integer tensors, images without channels, a zero std
    and a per-channel list of the wrong length."""
    with pytest.raises(error, match=match):
        F.normalize(x, mean, std)


def test_lambda_and_compose():
    """Lambda applies its function; Compose applies in order and prints torchvision's layout;
    non-callables are refused by name."""
    t = T.Compose([T.Lambda(lambda x: x + 1), T.Lambda(lambda x: x * 10)])
    assert t(1) == 20
    assert repr(T.Compose([T.ToTensor(), T.RandomHorizontalFlip(0.3)])) == \
        "Compose(\n    ToTensor()\n    RandomHorizontalFlip(p=0.3)\n)"
    with pytest.raises(TypeError, match="Argument lambd should be callable, got 'int'"):
        T.Lambda(3)
    with pytest.raises(TypeError, match="Compose: every transform must be callable, got str"):
        T.Compose(["ToTensor"])


# ---- flips and crops ---------------------------------------------------------------------------

@needs_pil
def test_horizontal_flip_probability_and_seed():
    """RandomHorizontalFlip mirrors the last axis (tensor) or left-right (PIL) when
    dtrain.rand(1) < p: always at p=1, never at p=0, reproducibly under manual_seed, and
    about p of the time."""
    array = u8(3, 4, 5)
    x = tensor_of(array)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(x).numpy(), array[..., ::-1])
    np.testing.assert_array_equal(np.asarray(T.RandomHorizontalFlip(1.0)(Image.fromarray(array[0]))), array[0, :, ::-1])
    assert T.RandomHorizontalFlip(0.0)(x) is x
    flip = T.RandomHorizontalFlip(0.3)
    dtrain.manual_seed(5)
    first = [flip(x) is not x for _ in range(400)]
    dtrain.manual_seed(5)
    draws = [dtrain.rand(1).item() < 0.3 for _ in range(400)]
    assert first == draws and 0.2 < sum(first) / 400 < 0.4
    check_op(lambda t: F.hflip(t), (2, 3, 4), ref=lambda a: a[..., ::-1], torch_fn=lambda t: t.flip(-1))


def test_horizontal_flip_bad_probability():
    """A p outside [0, 1] is refused, quoting it."""
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip: p should be a probability in \[0, 1\], got 1.5"):
        T.RandomHorizontalFlip(1.5)


@needs_pil
@pytest.mark.parametrize("as_pil", [False, True])
def test_random_crop_is_a_window_of_the_padded_image(as_pil):
    """RandomCrop(size, padding) pads (zeros), then crops at (top, left) drawn by
    dtrain.randint (top first): the output is that window of the padded image, the same for
    a PIL image and a tensor under the same seed."""
    array = u8(6, 7, 3)
    img = Image.fromarray(array) if as_pil else tensor_of(array.transpose(2, 0, 1))
    padded = np.pad(array, ((2, 2), (2, 2), (0, 0)))
    crop = T.RandomCrop((5, 4), padding=2)
    for seed in range(5):
        dtrain.manual_seed(seed)
        top = dtrain.randint(0, 10 - 5 + 1, size=(1,)).item()
        left = dtrain.randint(0, 11 - 4 + 1, size=(1,)).item()
        dtrain.manual_seed(seed)
        out = crop(img)
        got = np.asarray(out) if as_pil else out.numpy().transpose(1, 2, 0)
        np.testing.assert_array_equal(got, padded[top:top + 5, left:left + 4])


@needs_pil
def test_random_crop_padding_modes_and_pad_if_needed():
    """Padding modes edge and reflect pad as NumPy's (PIL; symmetric too, and 'edge' and
    'reflect' on tensors); pad_if_needed grows a small image to the size; a full-size crop
    is the image."""
    array = u8(3, 4)
    for mode in ("edge", "reflect", "symmetric"):
        out = F.pad(Image.fromarray(array), [1, 2, 3, 1], padding_mode=mode)
        np.testing.assert_array_equal(np.asarray(out), np.pad(array, ((2, 1), (1, 3)), mode=mode))
    for mode in ("edge", "reflect"):
        out = F.pad(tensor_of(array[None]), [1, 2], padding_mode=mode)
        np.testing.assert_array_equal(out.numpy()[0], np.pad(array, ((2, 2), (1, 1)), mode=mode))
    out = F.pad(Image.fromarray(u8(2, 2, 3)), 1, fill=(9, 8, 7))
    assert np.asarray(out)[0, 0].tolist() == [9, 8, 7]
    out = T.RandomCrop(6, pad_if_needed=True, fill=3)(tensor_of(array[None]))
    assert out.shape == (1, 6, 6) and (out.numpy() == 3).sum() == 36 - 12
    np.testing.assert_array_equal(T.RandomCrop((3, 4))(tensor_of(array[None])).numpy()[0], array)


@pytest.mark.parametrize("build, error, match", [
    (lambda: T.RandomCrop(8)(dtrain.zeros(1, 4, 9)), ValueError,
     r"Required crop size \(8, 8\) is larger than input image size \(4, 9\)"),
    (lambda: T.RandomCrop((1, 2, 3)), ValueError, r"please provide only two dimensions \(h, w\) for size"),
    (lambda: T.RandomCrop(4, padding=(1, 2, 3)), ValueError, "Padding must be an int or a 1, 2, or 4 element tuple, "
                                                             "not a 3 element tuple"),
    (lambda: T.RandomCrop(4, padding_mode="wrap"), ValueError, "padding_mode should be either constant, edge, "
                                                               "reflect or symmetric, got 'wrap'"),
    (lambda: F.pad(dtrain.zeros(1, 2, 2), 1, padding_mode="symmetric"), NotImplementedError,
     "'symmetric' is supported for PIL images only"),
    (lambda: F.hflip([1, 2]), TypeError, "img should be PIL Image or Tensor. Got <class 'list'>"),
])
def test_crop_and_pad_errors(build, error, match):
    """Crops larger than the image, bad sizes, paddings and padding modes are refused by name."""
    with pytest.raises(error, match=match):
        build()


def test_crop_and_pad_gradients():
    """crop and constant/reflect padding on tensors are differentiable, values and gradients
    as PyTorch's slicing and F.pad."""
    torch = pytest.importorskip("torch")
    check_op(lambda t: F.crop(t, 1, 2, 3, 2), (2, 5, 6), ref=lambda a: a[:, 1:4, 2:4],
             torch_fn=lambda t: t[:, 1:4, 2:4])
    check_op(lambda t: F.pad(t, [1, 2, 3, 1], padding_mode="reflect"), (2, 5, 6),
             torch_fn=lambda t: torch.nn.functional.pad(t, (1, 3, 2, 1), mode="reflect"))


@needs_pil
def test_center_crop():
    """CenterCrop takes rows/cols from round((H - h) / 2), round((W - w) / 2) (as
    torchvision), the same for PIL; a crop larger than the image pads zeros around it."""
    array = u8(7, 6)
    np.testing.assert_array_equal(T.CenterCrop((3, 4))(tensor_of(array[None])).numpy()[0], array[2:5, 1:5])
    np.testing.assert_array_equal(np.asarray(T.CenterCrop((3, 4))(Image.fromarray(array))), array[2:5, 1:5])
    out = T.CenterCrop(9)(tensor_of(array[None])).numpy()[0]
    np.testing.assert_array_equal(out, np.pad(array, ((1, 1), (1, 2))))
    np.testing.assert_array_equal(np.asarray(T.CenterCrop(9)(Image.fromarray(array))), out)


# ---- Resize ------------------------------------------------------------------------------------

def _torch_resize(size, mode, antialias=False):
    torch = pytest.importorskip("torch")
    corners = {} if "nearest" in mode else {"align_corners": False}
    return lambda t: torch.nn.functional.interpolate(t[None], size=size, mode=mode, antialias=antialias, **corners)[0]


@pytest.mark.parametrize("size", [(3, 5), (9, 13), (4, 13)], ids=str)
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_bilinear_matches_interpolate(size, antialias):
    """Bilinear resize of a tensor (down, up, mixed) equals PyTorch's interpolate
    (bilinear, align_corners=False, with or without antialias) in values and gradients."""
    check_op(lambda t: F.resize(t, list(size), antialias=antialias), (2, 6, 7),
             torch_fn=_torch_resize(size, "bilinear", antialias))


@pytest.mark.parametrize("mode", [InterpolationMode.NEAREST, InterpolationMode.NEAREST_EXACT])
@pytest.mark.parametrize("size", [(3, 5), (9, 13)], ids=str)
def test_resize_nearest_matches_interpolate(mode, size):
    """Nearest (and nearest-exact) resize of a tensor equals interpolate's, gradients included."""
    check_op(lambda t: F.resize(t, list(size), interpolation=mode), (2, 6, 7), torch_fn=_torch_resize(size, mode.value))


@needs_pil
def test_resize_sizes():
    """An int sets the smaller edge and keeps the aspect ratio (int() of the longer), as
    torchvision; max_size caps the longer edge; (h, w) is exact; the same size returns the
    input."""
    assert F.resize(dtrain.zeros(3, 8, 16), 4).shape == (3, 4, 8)
    assert F.resize(dtrain.zeros(3, 10, 7), 5).shape == (3, 7, 5)
    assert F.resize(dtrain.zeros(3, 10, 7), [5]).shape == (3, 7, 5)
    assert F.resize(dtrain.zeros(3, 8, 32), 4, max_size=10).shape == (3, 2, 10)
    assert T.Resize((5, 3))(dtrain.zeros(1, 8, 8)).shape == (1, 5, 3)
    x = dtrain.zeros(1, 4, 6)
    assert T.Resize(4)(x) is x
    assert T.Resize(2)(Image.fromarray(u8(6, 9))).size == (3, 2)


@needs_pil
def test_resize_pil_is_close_to_tensor_antialias():
    """Pillow's bilinear resize (antialiased) and the tensor path with antialias agree to
    one gray level (Pillow works in fixed point); a uint8 tensor comes back rounded uint8."""
    array = u8(20, 24)
    pil = np.asarray(T.Resize((7, 9))(Image.fromarray(array))).astype(np.int64)
    tensor = T.Resize((7, 9))(tensor_of(array[None]))
    assert tensor.dtype == dtrain.uint8
    assert np.abs(tensor.numpy()[0].astype(np.int64) - pil).max() <= 1
    small = np.asarray(T.Resize(3, interpolation=InterpolationMode.NEAREST)(Image.fromarray(array)))
    assert small.shape == (3, 3) and set(small.ravel()) <= set(array.ravel())


@pytest.mark.parametrize("build, error, match", [
    (lambda: T.Resize("big"), TypeError, "Size should be int or sequence. Got <class 'str'>"),
    (lambda: T.Resize((1, 2, 3)), ValueError, "If size is a sequence, it should have 1 or 2 values"),
    (lambda: T.Resize(0), ValueError, "Resize: size must be positive ints, got 0"),
    (lambda: T.Resize(4, interpolation="bilinear"), TypeError, "interpolation should be an InterpolationMode"),
    (lambda: T.Resize(2, InterpolationMode.BICUBIC)(dtrain.zeros(1, 4, 4)), NotImplementedError,
     "interpolation BICUBIC is not supported on tensors"),
    (lambda: T.Resize(4, max_size=4)(dtrain.zeros(1, 8, 8)), ValueError,
     "max_size = 4 must be strictly greater than the requested size for the smaller edge size = 4"),
    (lambda: T.Resize((4, 4), max_size=9)(dtrain.zeros(1, 8, 8)), ValueError, "max_size should only be passed"),
])
def test_resize_errors(build, error, match):
    """Bad sizes, interpolation values and max_size uses are refused by name; tensor modes
    dtrain lacks say so."""
    with pytest.raises(error, match=match):
        build()


# ---- utils -------------------------------------------------------------------------------------

def test_make_grid_layout():
    """make_grid places image k at row k // nrow, column k % nrow, each cell offset by
    padding, the rest pad_value; one channel becomes three; a single image is returned as is."""
    images = [dtrain.full((1, 2, 2), float(k + 1)) for k in range(3)]
    grid = utils.make_grid(images, nrow=2, padding=1, pad_value=-1.0).numpy()
    assert grid.shape == (3, 7, 7)
    expected = np.full((7, 7), -1.0)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0)]):
        expected[1 + 3 * r:3 + 3 * r, 1 + 3 * c:3 + 3 * c] = k + 1
    np.testing.assert_array_equal(grid, np.stack([expected] * 3))
    assert utils.make_grid(dtrain.ones(1, 3, 4, 5)).shape == (3, 4, 5)
    assert utils.make_grid(dtrain.ones(2, 3, 4, 5), padding=0).shape == (3, 4, 10)


def test_make_grid_normalize():
    """normalize maps [min, max] (or a clamped value_range) to [0, 1]; scale_each per image."""
    x = dtrain.tensor(np.array([[[[0.0, 2.0]]], [[[4.0, 8.0]]]], np.float32))
    np.testing.assert_allclose(utils.make_grid(x, padding=0, normalize=True).numpy()[0], [[0, 0.25, 0.5, 1.0]])
    np.testing.assert_allclose(utils.make_grid(x, padding=0, normalize=True, value_range=(1.0, 5.0)).numpy()[0],
                               [[0, 0.25, 0.75, 1.0]])
    np.testing.assert_allclose(utils.make_grid(x, padding=0, normalize=True, scale_each=True).numpy()[0],
                               [[0, 1.0, 0, 1.0]])
    assert x.numpy().max() == 8.0, "the input is not modified"


@pytest.mark.parametrize("build, error, match", [
    (lambda: utils.make_grid([1, 2]), TypeError, "tensor or list of tensors expected, got <class 'list'>"),
    (lambda: utils.make_grid(dtrain.zeros(1, 1, 1, 1, 1)), ValueError, r"got shape \[1, 1, 1, 1, 1\]"),
    (lambda: utils.make_grid(dtrain.zeros(2, 1, 2, 2), nrow=0), ValueError, "nrow must be an int >= 1, got 0"),
    (lambda: utils.make_grid(dtrain.zeros(2, 1, 2, 2), normalize=True, value_range=[0, 1]), ValueError,
     r"value_range has to be a tuple \(min, max\)"),
])
def test_make_grid_errors(build, error, match):
    """make_grid refuses non-tensors, wrong ranks, nrow < 1 and a value_range that is no pair."""
    with pytest.raises(error, match=match):
        build()


@needs_pil
def test_save_image_writes_png(tmp_path):
    """save_image writes the grid as a PNG whose pixels are round(x * 255) clamped; a file
    object needs format='PNG'."""
    x = dtrain.tensor(np.array([[[0.0, 0.5], [1.2, 0.2]]] * 3, np.float32))[None].expand(2, 3, 2, 2)
    utils.save_image(x, tmp_path / "grid.png", nrow=2, padding=1)
    with Image.open(tmp_path / "grid.png") as img:
        assert img.format == "PNG" and img.size == (7, 4) and img.mode == "RGB"
        pixels = np.asarray(img)
    assert pixels[1:3, 1:3, 0].tolist() == [[0, 128], [255, 51]] and pixels[0, 0].tolist() == [0, 0, 0]
    buf = io.BytesIO()
    utils.save_image(x[0], buf, format="PNG")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"



@pytest.mark.gpu
def test_tensor_transforms_on_cuda_match_cpu():
    """Resize (bilinear, nearest), Normalize, flip, pad and crop on a CUDA tensor stay on the
    GPU and give the CPU's values."""
    x = dtrain.rand(3, 12, 10)
    steps = [lambda t: F.resize(t, [5, 7]), lambda t: F.resize(t, 20, InterpolationMode.NEAREST),
             lambda t: F.normalize(t, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]), F.hflip,
             lambda t: F.pad(t, [1, 2], padding_mode="reflect"), lambda t: F.center_crop(t, 14)]
    for step in steps:
        got = step(x.to("cuda:0"))
        assert got.device == dtrain.device("cuda:0")
        np.testing.assert_allclose(got.cpu().numpy(), step(x).numpy(), rtol=1e-5, atol=1e-6)
