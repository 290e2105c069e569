"""The convolution family beyond conv2d: conv1d, conv_transpose2d, 1-D and adaptive pools,
interpolate, pixel_shuffle, fold/unfold, padding layers. Functions go through check_op
(float64 values and gradients against PyTorch, gradcheck, NumPy references where cheap);
layers are compared to PyTorch from the same weights; each error path's message is checked."""
import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
import dtrain.nn.functional as F
from helpers import rand
from test_functional import _np_conv2d, check_f
from test_nn_layers import matches_torch

rng = np.random.default_rng(0)


def _torch():
    return pytest.importorskip("torch")


def _np(t):
    return t.detach().numpy()


# ---- conv1d -----------------------------------------------------------------------------

def _np_conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d's direct NumPy reference over a height of 1."""
    pad = padding if isinstance(padding, str) else (0, padding)
    return _np_conv2d(x[:, :, None], w[:, :, None], b, (1, stride), pad, (1, dilation), groups)[:, :, 0]


CONV1D_CASES = [  # input shape, weight shape, options
    ((2, 3, 9), (4, 3, 3), {}),
    ((2, 3, 9), (4, 3, 3), {"stride": 2, "padding": 1}),
    ((1, 2, 10), (3, 2, 2), {"padding": "same", "dilation": 3}),
    ((1, 4, 8), (6, 2, 3), {"groups": 2, "padding": "valid", "stride": 3}),
    ((2, 2, 7), (2, 2, 4), {"dilation": 2, "padding": 2}),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs,ws,opts", CONV1D_CASES)
def test_conv1d(xs, ws, opts, bias):
    """conv1d (stride, padding int/'same'/'valid', dilation, groups, bias): values and the
    gradients of input, weight and bias equal PyTorch's and a direct NumPy convolution."""
    inputs = (xs, ws, (ws[0],)) if bias else (xs, ws)
    check_f("conv1d", *inputs, **opts, ref=lambda *a: _np_conv1d(*a, **opts))


def test_conv1d_unbatched():
    """A (C, L) input convolves as a batch of one."""
    check_f("conv1d", (2, 6), (3, 2, 3), padding=1, ref=lambda x, w: _np_conv1d(x[None], w, padding=1)[0])


def test_conv1d_errors():
    """Wrong rank and channel mismatch name the op and both shapes; 'same' refuses a stride."""
    with pytest.raises(RuntimeError, match=r"conv1d: expected a 2-D \(C, L\) or 3-D \(N, C, L\) input, got shape "
                                           r"\[2, 3, 4, 5\]"):
        F.conv1d(dtrain.randn(2, 3, 4, 5), dtrain.randn(4, 3, 3))
    with pytest.raises(RuntimeError, match=r"conv1d: input of shape \[2, 3, 8\] has 3 channels, but weight of shape "
                                           r"\[4, 2, 3\] with groups=1 expects 2"):
        F.conv1d(dtrain.randn(2, 3, 8), dtrain.randn(4, 2, 3))
    with pytest.raises(RuntimeError, match=r"conv1d: weight must be 3-D .* got \[4, 3, 3, 3\]"):
        F.conv1d(dtrain.randn(2, 3, 8), dtrain.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"conv1d: padding='same' is not supported for strided"):
        F.conv1d(dtrain.randn(2, 3, 8), dtrain.randn(4, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match=r"conv1d: input of shape \[2, 3, 4\] \(spatial 4, .*too small for kernel 5"):
        F.conv1d(dtrain.randn(2, 3, 4), dtrain.randn(4, 3, 5))


# ---- conv_transpose2d -------------------------------------------------------------------

def _np_conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The definition: every input pixel adds its value times the kernel into the output."""
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = [(v, v) if isinstance(v, int) else v
                                                for v in (stride, padding, output_padding, dilation)]
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    full = np.zeros((n, og * groups, (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw))
    cg = c // groups
    for g in range(groups):
        for i in range(h):
            for j in range(wd):
                patch = np.einsum("nc,cokl->nokl", x[:, g * cg:(g + 1) * cg, i, j], w[g * cg:(g + 1) * cg])
                full[:, g * og:(g + 1) * og, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                     j * sw:j * sw + dw * (kw - 1) + 1:dw] += patch
    out = full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]
    return out if b is None else out + b[:, None, None]


CONVT_CASES = [  # input shape, weight shape (C_in, C_out / groups, kH, kW), options
    ((2, 3, 4, 4), (3, 2, 3, 3), {}),
    ((1, 2, 3, 5), (2, 3, 3, 2), {"stride": 2}),
    ((2, 2, 4, 3), (2, 2, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((1, 4, 3, 3), (4, 1, 2, 3), {"groups": 2, "stride": (1, 2), "dilation": (2, 1)}),
    ((1, 2, 3, 4), (2, 2, 3, 3), {"stride": (3, 2), "padding": (1, 0), "output_padding": (2, 1)}),
    ((1, 2, 4, 4), (2, 1, 3, 3), {"dilation": 2, "padding": 2, "output_padding": 1, "stride": 1}),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs,ws,opts", CONVT_CASES)
def test_conv_transpose2d(xs, ws, opts, bias):
    """conv_transpose2d (stride, padding, output_padding, groups, dilation, bias): values and
    gradients equal PyTorch's and the scatter-every-pixel definition."""
    groups = opts.get("groups", 1)
    inputs = (xs, ws, (ws[1] * groups,)) if bias else (xs, ws)
    check_f("conv_transpose2d", *inputs, **opts, ref=lambda *a: _np_conv_transpose2d(*a, **opts))


def test_conv_transpose2d_is_conv2d_input_gradient():
    """conv_transpose2d(g, w) is the gradient of sum(conv2d(x, w) * g) with respect to x."""
    x = dtrain.randn(2, 3, 10, 9, dtype=dtrain.float64, requires_grad=True)
    w = dtrain.randn(4, 3, 3, 3, dtype=dtrain.float64)
    g = dtrain.randn(2, 4, 5, 5, dtype=dtrain.float64)
    (F.conv2d(x, w, stride=2, padding=1) * g).sum().backward()
    np.testing.assert_allclose(_np(F.conv_transpose2d(g, w, stride=2, padding=1, output_padding=(1, 0))),
                               _np(x.grad), rtol=1e-12, atol=1e-12)


def test_conv_transpose2d_unbatched_and_float32():
    """A (C, H, W) input is a batch of one; float32 agrees with PyTorch to float32 precision."""
    torch = _torch()
    x, w = rand(3, 5, 5).astype(np.float32), rand(3, 2, 3, 3).astype(np.float32)
    ours = F.conv_transpose2d(dtrain.tensor(x), dtrain.tensor(w), stride=2)
    theirs = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), stride=2)
    assert ours.dtype == dtrain.float32 and tuple(ours.shape) == (2, 11, 11)
    np.testing.assert_allclose(_np(ours), theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_conv_transpose2d_errors():
    """Channel mismatch names both shapes; output_padding and empty outputs are refused with the values."""
    x = dtrain.randn(1, 3, 4, 4)
    with pytest.raises(RuntimeError, match=r"conv_transpose2d: input of shape \[1, 3, 4, 4\] has 3 channels, but "
                                           r"weight of shape \[2, 3, 3, 3\] expects 2"):
        F.conv_transpose2d(x, dtrain.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"output_padding must be smaller than either stride or dilation, but got "
                                         r"output_padding=\(1, 1\), stride=\(1, 1\)"):
        F.conv_transpose2d(x, dtrain.randn(3, 2, 3, 3), output_padding=1)
    with pytest.raises(ValueError, match=r"conv_transpose2d: input of shape \[1, 3, 4, 4\].*empty output of size "
                                         r"-2x-2"):
        F.conv_transpose2d(x, dtrain.randn(3, 2, 1, 1), padding=3)
    with pytest.raises(RuntimeError, match=r"conv_transpose2d: expected a 3-D \(C, H, W\) or 4-D .* shape \[3, 4\]"):
        F.conv_transpose2d(dtrain.randn(3, 4), dtrain.randn(3, 2, 3, 3))
    with pytest.raises(RuntimeError, match=r"conv_transpose2d: weight of shape \[3, 2, 3, 3\] has 3 input channels, "
                                           r"not divisible by groups=2"):
        F.conv_transpose2d(x, dtrain.randn(3, 2, 3, 3), groups=2)


# ---- 1-D and adaptive pools -------------------------------------------------------------

@pytest.mark.parametrize("opts", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1},
                                  {"kernel_size": 2, "stride": 2, "ceil_mode": True},
                                  {"kernel_size": 3, "stride": 1, "dilation": 2}])
def test_max_pool1d(opts):
    """max_pool1d (stride, padding, ceil_mode, dilation) equals PyTorch's, indices included."""
    check_f("max_pool1d", (2, 3, 9), **opts)
    values, idx = check_f("max_pool1d", (2, 3, 9), return_indices=True, **opts)
    assert idx.dtype == dtrain.int64


def test_max_pool1d_reference_and_unbatched():
    """Values against a NumPy reshape-max; a (C, L) input pools as a batch of one."""
    check_f("max_pool1d", (2, 3, 8), kernel_size=2, ref=lambda x: x.reshape(2, 3, 4, 2).max(axis=3))
    check_f("max_pool1d", (3, 8), kernel_size=4, ref=lambda x: x.reshape(3, 2, 4).max(axis=2))


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("opts", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1},
                                  {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}])
def test_avg_pool1d(opts, include_pad):
    """avg_pool1d with and without the padding in the divisor, in ceil_mode, as PyTorch."""
    check_f("avg_pool1d", (2, 3, 9), count_include_pad=include_pad, **opts)
    check_f("avg_pool1d", (2, 8), kernel_size=2, ref=lambda x: x.reshape(2, 4, 2).mean(axis=2))


@pytest.mark.parametrize("size", [1, (2, 3), (3, None), (4, 7), (5, 2)])
def test_adaptive_max_pool2d(size):
    """adaptive_max_pool2d with equal and with PyTorch's overlapping bins: values, gradient
    (overlapping bins send it to the same input twice) and indices."""
    check_f("adaptive_max_pool2d", (2, 2, 6, 7), output_size=size)
    check_f("adaptive_max_pool2d", (2, 5, 6), output_size=size, return_indices=True)


def test_adaptive_max_pool2d_reference_ties_and_nan():
    """Equal bins are max_pool2d; ties go to the first element, a NaN wins, as PyTorch."""
    check_f("adaptive_max_pool2d", (1, 2, 6, 4), output_size=(3, 2),
            ref=lambda x: x.reshape(1, 2, 3, 2, 2, 2).max(axis=(3, 5)))
    x = dtrain.zeros(1, 1, 2, 2, requires_grad=True)
    F.adaptive_max_pool2d(x, 1).sum().backward()
    assert x.grad.numpy().ravel().tolist() == [1.0, 0.0, 0.0, 0.0]
    v, i = F.adaptive_max_pool2d(dtrain.tensor([[[[1.0, float("nan")], [3.0, 2.0]]]]), 1, return_indices=True)
    assert np.isnan(v.item()) and i.item() == 1


@pytest.mark.parametrize("size", [1, 3, 4])
def test_adaptive_pool1d(size):
    """adaptive_max_pool1d (with indices) and adaptive_avg_pool1d equal PyTorch's."""
    check_f("adaptive_max_pool1d", (2, 3, 7), output_size=size, return_indices=True)
    check_f("adaptive_avg_pool1d", (2, 3, 7), output_size=size)
    check_f("adaptive_avg_pool1d", (3, 8), output_size=2, ref=lambda x: x.reshape(3, 2, 4).mean(axis=2))


def test_pool_1d_and_adaptive_errors():
    """Wrong rank names the op and shape; bad windows and sizes are quoted."""
    with pytest.raises(RuntimeError, match=r"max_pool1d: expected a 2-D \(C, L\) or 3-D \(N, C, L\) input, got shape "
                                           r"\[1, 2, 3, 4\]"):
        F.max_pool1d(dtrain.randn(1, 2, 3, 4), 2)
    with pytest.raises(ValueError, match=r"avg_pool1d: pad should be at most half of effective kernel size, but got "
                                         r"padding=2, kernel_size=2"):
        F.avg_pool1d(dtrain.randn(1, 2, 8), 2, padding=2)
    with pytest.raises(ValueError, match=r"max_pool1d: input of shape \[1, 2, 3\] \(spatial 3, .*kernel 5"):
        F.max_pool1d(dtrain.randn(1, 2, 3), 5)
    with pytest.raises(RuntimeError, match=r"adaptive_max_pool2d: expected a 3-D \(C, H, W\) or 4-D .* got shape "
                                           r"\[4, 5\]"):
        F.adaptive_max_pool2d(dtrain.randn(4, 5), 2)
    with pytest.raises(ValueError, match=r"adaptive_max_pool2d: output_size must be an int or a pair of ints >= 1, "
                                         r"got \(0, 2\)"):
        F.adaptive_max_pool2d(dtrain.randn(1, 4, 5), (0, 2))
    with pytest.raises(ValueError, match=r"adaptive_max_pool1d: input of shape \[1, 2, 0\] has an empty spatial"):
        F.adaptive_max_pool1d(dtrain.randn(1, 2, 0), 2)


# ---- interpolate ------------------------------------------------------------------------

INTERP_CASES = [
    ({"scale_factor": 2}, (2, 2, 3, 4)),
    ({"size": (7, 5)}, (1, 2, 3, 4)),
    ({"size": (2, 3)}, (1, 2, 5, 7)),
    ({"scale_factor": (1.7, 0.6)}, (1, 2, 5, 7)),
    ({"size": (4, 9), "mode": "nearest-exact"}, (1, 2, 5, 4)),
    ({"scale_factor": 2, "mode": "bilinear"}, (2, 2, 3, 4)),
    ({"size": (7, 5), "mode": "bilinear", "align_corners": True}, (1, 2, 3, 4)),
    ({"size": (2, 3), "mode": "bilinear", "align_corners": False}, (1, 2, 5, 7)),
    ({"size": (1, 1), "mode": "bilinear", "align_corners": True}, (1, 1, 3, 3)),
    ({"scale_factor": 2.3, "mode": "bilinear"}, (1, 2, 3, 4)),
    ({"scale_factor": 2.3, "mode": "bilinear", "recompute_scale_factor": True}, (1, 2, 3, 4)),
    ({"scale_factor": 3, "mode": "linear"}, (2, 3, 4)),
    ({"size": 9, "mode": "linear", "align_corners": True}, (2, 3, 4)),
    ({"size": 9}, (2, 3, 4)),
]


@pytest.mark.parametrize("opts,shape", INTERP_CASES)
def test_interpolate(opts, shape):
    """interpolate: nearest, nearest-exact, linear and bilinear, by size and by scale_factor,
    align_corners True/False, recompute_scale_factor: values and gradients equal PyTorch's."""
    check_f("interpolate", shape, **opts)


def test_interpolate_references():
    """Integer nearest upsampling repeats pixels; align_corners=True linear interpolation
    hits the corners and spaces the rest evenly (np.interp)."""
    x = rand(1, 2, 3, 4)
    check_f("interpolate", x, scale_factor=2, ref=lambda a: a.repeat(2, axis=2).repeat(2, axis=3))
    x1 = rand(2, 1, 5)
    ref = np.stack([np.interp(np.linspace(0, 4, 9), np.arange(5), r[0]) for r in x1])[:, None]
    check_f("interpolate", x1, size=9, mode="linear", align_corners=True, ref=lambda a: ref)


def test_interpolate_integer_input_nearest():
    """Nearest modes keep an integer dtype (they only gather)."""
    x = dtrain.arange(6).reshape(1, 1, 2, 3)
    y = F.interpolate(x, scale_factor=2)
    assert y.dtype == dtrain.int64 and y.numpy()[0, 0, 3].tolist() == [3, 3, 4, 4, 5, 5]


def test_interpolate_errors():
    """Size/scale_factor misuse, a mode that needs another rank, align_corners with nearest,
    and unknown modes name the values."""
    x = dtrain.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="only one of size or scale_factor should be defined"):
        F.interpolate(x, size=4, scale_factor=2)
    with pytest.raises(ValueError, match="either size or scale_factor should be defined"):
        F.interpolate(x)
    with pytest.raises(NotImplementedError, match=r"got a 3D input of shape \[1, 2, 3\], but bilinear mode needs a "
                                                  r"4D \(N, C, H, W\) input"):
        F.interpolate(dtrain.randn(1, 2, 3), scale_factor=2, mode="bilinear")
    with pytest.raises(NotImplementedError, match=r"got a 4D input of shape \[1, 2, 3, 4\], but linear mode needs a "
                                                  r"3D \(N, C, L\) input"):
        F.interpolate(x, scale_factor=2, mode="linear")
    with pytest.raises(NotImplementedError, match=r"got a 2D input of shape \[2, 3\], but nearest mode needs a 3D "
                                                  r"\(N, C, L\) or 4D \(N, C, H, W\) input"):
        F.interpolate(dtrain.randn(2, 3), scale_factor=2)
    with pytest.raises(ValueError, match="align_corners option can only be set with the interpolating modes"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(NotImplementedError, match=r"mode 'bicubic' is not supported"):
        F.interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match=r"input of shape \[1, 2, 3, 4\] has 2 spatial dims \[3, 4\], but "
                                         r"size=\(1, 2, 3\) has 3"):
        F.interpolate(x, size=(1, 2, 3))
    with pytest.raises(ValueError, match=r"scale_factor=0.1 gives an empty output \[0, 0\]"):
        F.interpolate(x, scale_factor=0.1)


# ---- pixel shuffle ----------------------------------------------------------------------

def _np_pixel_shuffle(x, r):
    n, c, h, w = x.shape
    out = np.empty((n, c // (r * r), h * r, w * r))
    for i in range(r):
        for j in range(r):
            out[:, :, i::r, j::r] = x[:, i * r + j::r * r]
    return out


def test_pixel_shuffle_and_unshuffle():
    """pixel_shuffle moves channel c*r^2 + i*r + j to pixel (h*r + i, w*r + j), as PyTorch;
    pixel_unshuffle inverts it; extra leading dims are kept."""
    check_f("pixel_shuffle", (2, 8, 3, 2), upscale_factor=2, ref=lambda x: _np_pixel_shuffle(x, 2))
    check_f("pixel_shuffle", (2, 1, 9, 2, 3), upscale_factor=3)
    check_f("pixel_unshuffle", (2, 2, 6, 4), downscale_factor=2)
    x = dtrain.randn(2, 3, 6, 9)
    np.testing.assert_array_equal(_np(F.pixel_shuffle(F.pixel_unshuffle(x, 3), 3)), _np(x))


def test_pixel_shuffle_errors():
    """Indivisible channels or sizes, too few dims and a bad factor name the values."""
    with pytest.raises(RuntimeError, match=r"pixel_shuffle: input of shape \[1, 5, 2, 2\] has 5 channels \(dim -3\), "
                                           r"not divisible by upscale_factor\^2 = 4"):
        F.pixel_shuffle(dtrain.randn(1, 5, 2, 2), 2)
    with pytest.raises(RuntimeError, match=r"pixel_unshuffle: input of shape \[1, 1, 5, 4\] has height 5 and width 4"):
        F.pixel_unshuffle(dtrain.randn(1, 1, 5, 4), 2)
    with pytest.raises(RuntimeError, match=r"pixel_shuffle: expected an input of at least 3 dims .* shape \[4, 4\]"):
        F.pixel_shuffle(dtrain.randn(4, 4), 2)
    with pytest.raises(ValueError, match=r"pixel_unshuffle: downscale_factor must be a positive int, got 0"):
        F.pixel_unshuffle(dtrain.randn(1, 4, 4), 0)


# ---- fold / unfold ----------------------------------------------------------------------

FOLD_CASES = [
    {"kernel_size": 2},
    {"kernel_size": (2, 3), "stride": 2, "padding": 1},
    {"kernel_size": 3, "dilation": (2, 1), "padding": (2, 1)},
    {"kernel_size": 2, "stride": 2},  # disjoint blocks
]


@pytest.mark.parametrize("opts", FOLD_CASES)
def test_unfold_and_fold(opts):
    """unfold (im2col) and fold (col2im) equal PyTorch's, values and gradients, batched and not."""
    torch = _torch()
    check_f("unfold", (2, 3, 5, 6), **opts)
    check_f("unfold", (3, 5, 6), **opts)
    cols = tuple(torch.nn.functional.unfold(torch.zeros(2, 3, 5, 6), **opts).shape)
    check_f("fold", cols, output_size=(5, 6), **opts)
    check_f("fold", cols[1:], output_size=(5, 6), **opts)


@pytest.mark.parametrize("opts", FOLD_CASES)
def test_fold_is_unfold_adjoint(opts):
    """<unfold(x), c> == <x, fold(c)>; unfold of a 1x1 kernel is a reshape; conv2d is a
    matmul of the weights with unfold (PyTorch's documented identity)."""
    x = rand(2, 3, 5, 6)
    cols = F.unfold(dtrain.tensor(x), **opts)
    c = rng.standard_normal(tuple(cols.shape))
    back = F.fold(dtrain.tensor(c), (5, 6), **opts)
    np.testing.assert_allclose((_np(cols) * c).sum(), (x * _np(back)).sum(), rtol=1e-10)
    np.testing.assert_array_equal(_np(F.unfold(dtrain.tensor(x), 1)), x.reshape(2, 3, 30))
    w = rand(4, 3, 2, 3)
    conv = F.conv2d(dtrain.tensor(x), dtrain.tensor(w), padding=1)
    via = w.reshape(4, -1) @ _np(F.unfold(dtrain.tensor(x), (2, 3), padding=1))
    np.testing.assert_allclose(via.reshape(conv.shape), _np(conv), rtol=1e-12, atol=1e-12)


def test_fold_errors():
    """fold names the block count and the divisibility it needs; both check the rank."""
    with pytest.raises(RuntimeError, match=r"fold: input of shape \[1, 12, 10\] has 10 blocks, but output_size=\(4, 5\)"
                                           r".* make 3 \* 4 = 12 blocks"):
        F.fold(dtrain.randn(1, 12, 10), (4, 5), 2)
    with pytest.raises(RuntimeError, match=r"fold: input of shape \[1, 5, 12\]: its dim 1 \(size 5\) must be divisible "
                                           r"by the product of kernel_size=\(2, 2\) \(4\)"):
        F.fold(dtrain.randn(1, 5, 12), (4, 5), 2)
    with pytest.raises(RuntimeError, match=r"fold: expected a 2-D .* or 3-D .* input, got shape \[1, 1, 4, 3\]"):
        F.fold(dtrain.randn(1, 1, 4, 3), (4, 5), 2)
    with pytest.raises(RuntimeError, match=r"unfold: expected a 3-D \(C, H, W\) or 4-D .* got shape \[5, 6\]"):
        F.unfold(dtrain.randn(5, 6), 2)


# ---- layers against PyTorch -------------------------------------------------------------

LAYERS = [  # name, constructor args, kwargs, input shape
    ("Conv1d", (3, 4, 3), {}, (2, 3, 9)),
    ("Conv1d", (4, 6, 3), dict(stride=2, padding=1, dilation=2, groups=2, bias=False), (2, 4, 11)),
    ("Conv1d", (3, 4, 4), dict(padding="same", padding_mode="reflect"), (2, 3, 9)),
    ("Conv1d", (3, 4, 3), dict(padding=2, padding_mode="circular"), (3, 9)),
    ("Conv1d", (3, 2, 3), dict(padding=1, padding_mode="replicate"), (2, 3, 5)),
    ("ConvTranspose2d", (3, 4, 3), {}, (2, 3, 4, 5)),
    ("ConvTranspose2d", (4, 6, (3, 2)), dict(stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2)),
     (2, 4, 3, 4)),
    ("ConvTranspose2d", (2, 3, 2), dict(stride=2, bias=False), (2, 3, 3)),
    ("MaxPool1d", (3,), dict(stride=2, padding=1, ceil_mode=True), (2, 3, 9)),
    ("AvgPool1d", (3,), dict(stride=2, padding=1, count_include_pad=False), (2, 3, 9)),
    ("AdaptiveMaxPool2d", ((3, 2),), {}, (2, 3, 7, 5)),
    ("AdaptiveMaxPool1d", (4,), {}, (2, 3, 7)),
    ("AdaptiveAvgPool1d", (3,), {}, (2, 3, 7)),
    ("Upsample", (), dict(scale_factor=2), (2, 3, 3, 4)),
    ("Upsample", (), dict(size=(5, 7), mode="bilinear"), (2, 3, 3, 4)),
    ("Upsample", (), dict(scale_factor=1.5, mode="bilinear", align_corners=True), (2, 3, 3, 4)),
    ("Upsample", (), dict(size=7, mode="linear"), (2, 3, 4)),
    ("UpsamplingNearest2d", (), dict(scale_factor=3), (1, 2, 2, 3)),
    ("UpsamplingBilinear2d", (), dict(size=(4, 5)), (1, 2, 2, 3)),
    ("PixelShuffle", (2,), {}, (2, 8, 3, 3)),
    ("PixelUnshuffle", (2,), {}, (2, 2, 4, 6)),
    ("ZeroPad2d", (1,), {}, (2, 3, 4, 5)),
    ("ZeroPad2d", ((1, 0, 2, 3),), {}, (3, 4, 5)),
    ("ConstantPad2d", ((1, 2, -1, 0), 3.5), {}, (2, 3, 4, 5)),
    ("ReflectionPad2d", ((1, 2, 3, 0),), {}, (2, 3, 4, 5)),
    ("ReplicationPad2d", (2,), {}, (2, 3, 4, 5)),
    ("CircularPad2d", (1,), {}, (2, 3, 4, 5)),
    ("ZeroPad1d", ((2, 1),), {}, (2, 3, 4)),
    ("ConstantPad1d", (2, -1.0), {}, (2, 3, 4)),
    ("ReflectionPad1d", (2,), {}, (2, 3, 4)),
    ("ReplicationPad1d", ((0, 3),), {}, (2, 3, 4)),
    ("CircularPad1d", (1,), {}, (2, 3, 4)),
    ("Unfold", (2,), dict(padding=1, stride=2), (2, 3, 4, 5)),
    ("Fold", ((4, 5), 2), dict(padding=1, stride=2), (2, 12, 9)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name,args,kwargs,shape", LAYERS)
def test_layer_matches_torch(name, args, kwargs, shape):
    """Each layer, from the same state_dict, gives PyTorch's output and input/parameter
    gradients in float64, and prints as PyTorch's does."""
    torch = _torch()
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    matches_torch(ours, theirs, rng.standard_normal(shape))


@pytest.mark.parametrize("name,args,kwargs", [
    ("Conv1d", (6, 4, 3), dict(groups=2)),
    ("ConvTranspose2d", (6, 4, (3, 2)), dict(groups=2)),
    ("ConvTranspose2d", (3, 5, 2), dict(bias=False)),
])
def test_conv_parameters_as_torch(name, args, kwargs):
    """Weight shapes and state_dict keys equal PyTorch's; the default init is PyTorch's
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in from the weight's dim 1 (for
    ConvTranspose2d: out_channels / groups * kH * kW)."""
    torch = _torch()
    dtrain.manual_seed(0)
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    ts = theirs.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in ts.items()}
    fan_in = ts["weight"][0].numel()
    for k, v in ours.state_dict().items():
        assert np.abs(v.numpy()).max() <= 1 / np.sqrt(fan_in), k
        assert np.abs(v.numpy()).max() > 0.5 / np.sqrt(fan_in), k


def test_conv_transpose2d_output_size():
    """forward(input, output_size) picks the output_padding that reaches output_size, as
    PyTorch; a size out of range quotes the valid range."""
    torch = _torch()
    ours, theirs = nn.ConvTranspose2d(3, 2, 3, stride=3, padding=1), torch.nn.ConvTranspose2d(3, 2, 3, stride=3,
                                                                                             padding=1)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    for size in [(10, 10), (11, 12), [1, 2, 12, 10]]:
        out = ours(dtrain.tensor(x), output_size=size)
        np.testing.assert_allclose(_np(out), theirs(torch.tensor(x), output_size=size).detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(ValueError, match=r"requested an output size of \[13, 10\], but valid sizes range from "
                                         r"\[10, 10\] to \[12, 12\] \(for an input of \[4, 4\]\)"):
        ours(dtrain.tensor(x), output_size=(13, 10))


def test_layer_constructor_and_input_errors():
    """Layers refuse bad arguments in the constructor, and inputs of the wrong rank, naming them."""
    with pytest.raises(ValueError, match=r'Only "zeros" padding mode is supported for ConvTranspose2d'):
        nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"ConvTranspose2d: padding must be an int or a pair of ints, got 'same'"):
        nn.ConvTranspose2d(2, 2, 3, padding="same")
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv1d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"Conv1d: kernel_size must be an int or 1 ints, got \(3, 3\)"):
        nn.Conv1d(3, 4, (3, 3))
    with pytest.raises(ValueError, match=r"MaxPool1d: pad should be at most half"):
        nn.MaxPool1d(2, padding=2)
    with pytest.raises(ValueError, match=r"PixelShuffle: upscale_factor must be an integer >= 1, got 0"):
        nn.PixelShuffle(0)
    with pytest.raises(ValueError, match=r"ReflectionPad2d: padding must be an int or 4 ints, got \(1, 2\)"):
        nn.ReflectionPad2d((1, 2))
    with pytest.raises(ValueError, match=r"ReplicationPad1d: padding must be an integer >= 0, got -1"):
        nn.ReplicationPad1d(-1)
    with pytest.raises(RuntimeError, match=r"ZeroPad2d: expected a 3-D or 4-D input \(C, H, W\) or \(N, C, H, W\), "
                                           r"got shape \[4, 5\]"):
        nn.ZeroPad2d(1)(dtrain.randn(4, 5))
    with pytest.raises(ValueError, match=r"reflect padding \(0, 4\) of dim 3 \(size 4\) must be non-negative and at "
                                         r"most 3"):
        nn.ReflectionPad2d((0, 4, 0, 0))(dtrain.randn(1, 1, 4, 4))
    with pytest.raises(RuntimeError, match=r"conv1d: input of shape \[2, 4, 9\] has 4 channels, but weight of shape "
                                           r"\[4, 3, 3\]"):
        nn.Conv1d(3, 4, 3)(dtrain.randn(2, 4, 9))


def test_upsampling_cnn_trains_like_torch():
    """A small encoder-decoder (Conv1d-free 2-D path: conv, pool, ConvTranspose2d, Upsample,
    PixelShuffle, padding) from the same weights gives PyTorch's outputs and gradients over
    two steps."""
    torch = _torch()

    def build(m):
        return m.Sequential(m.ReflectionPad2d(1), m.Conv2d(2, 8, 3), m.ReLU(), m.MaxPool2d(2),
                            m.ConvTranspose2d(8, 8, 2, stride=2), m.ReLU(), m.Conv2d(8, 8, 1), m.PixelShuffle(2),
                            m.Upsample(scale_factor=0.5, mode="bilinear"), m.AdaptiveMaxPool2d(3))
    matches_torch(build(nn), build(torch.nn), rng.standard_normal((2, 2, 8, 8)), steps=2)


def test_im2col_workspace_reused_only_when_free():
    """A conv applied twice before backward keeps two im2col buffers (each backward sees its
    own input: gradients equal PyTorch's); once backward has freed them, later steps reuse
    them instead of allocating."""
    torch = _torch()
    import importlib
    workspace = importlib.import_module("dtrain.tensor.ops.workspace")
    ours, theirs = nn.Conv2d(2, 3, 3), torch.nn.Conv2d(2, 3, 3)

    class Twice(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, a, b):
            return self.conv(a) * self.conv(b)
    class TwiceT(torch.nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv
        forward = Twice.forward
    matches_torch(Twice(ours), TwiceT(theirs), rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((2, 2, 6, 6)))
    x = dtrain.randn(2, 2, 6, 6, dtype=dtrain.float64)
    ours(x).sum().backward()
    held = [id(b) for b in workspace.pooled()]
    for _ in range(3):
        ours(x).sum().backward()
    assert [id(b) for b in workspace.pooled()] == held


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 4 * 9 * 15 * 8])
def test_conv_input_gradient_in_chunks(monkeypatch, chunk_bytes):
    """The input gradient, computed a few samples at a time on the CPU, equals PyTorch's with
    one sample per chunk and with an uneven last chunk (2 + 2 + 1)."""
    import importlib
    monkeypatch.setattr(importlib.import_module("dtrain.tensor.ops.conv"), "_CHUNK_BYTES", chunk_bytes)
    check_f("conv2d", (5, 4, 6, 5), (6, 2, 3, 3), (6,), groups=2, stride=(2, 1), padding=1,
            ref=lambda *a: _np_conv2d(*a, groups=2, stride=(2, 1), padding=1))
    check_f("conv_transpose2d", (5, 4, 3, 5), (4, 3, 3, 3), stride=(2, 1), padding=1,
            ref=lambda *a: _np_conv_transpose2d(*a, stride=(2, 1), padding=1))
