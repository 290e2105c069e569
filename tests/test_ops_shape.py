"""Shape ops, indexing, joining/splitting, gather-like ops: values against NumPy and
PyTorch and gradients by finite differences and against PyTorch (helpers.check_op)."""
import numpy as np
import pytest

import dtrain
from helpers import check_op, compare, lib, rand


X = (2, 3, 4)

SHAPE = [
    ("reshape", lambda a: a.reshape(4, 6), X, lambda a: a.reshape(4, 6)),
    ("reshape_infer", lambda a: a.reshape(-1, 2), X, lambda a: a.reshape(-1, 2)),
    ("reshape_tuple", lambda a: a.reshape((3, 8)), X, lambda a: a.reshape(3, 8)),
    ("view", lambda a: a.view(2, 12), X, lambda a: a.reshape(2, 12)),
    ("reshape_transposed", lambda a: a.reshape(-1), rand(4, 3).T, lambda a: a.reshape(-1)),
    ("flatten", lambda a: a.flatten(), X, lambda a: a.reshape(-1)),
    ("flatten_range", lambda a: a.flatten(1), X, lambda a: a.reshape(2, 12)),
    ("flatten_neg", lambda a: a.flatten(0, -2), X, lambda a: a.reshape(6, 4)),
    ("unflatten", lambda a: a.unflatten(2, (2, 2)), X, lambda a: a.reshape(2, 3, 2, 2)),
    ("squeeze_all", lambda a: a.squeeze(), (1, 3, 1, 2), lambda a: a.squeeze()),
    ("squeeze_dim", lambda a: a.squeeze(2), (1, 3, 1, 2), lambda a: a.squeeze(2)),
    ("squeeze_non_one", lambda a: a.squeeze(1), (1, 3, 1, 2), lambda a: a),
    ("squeeze_tuple", lambda a: a.squeeze((0, -2)), (1, 3, 1, 2), lambda a: a.reshape(3, 2)),
    ("unsqueeze", lambda a: a.unsqueeze(1), X, lambda a: a[:, None]),
    ("unsqueeze_neg", lambda a: a.unsqueeze(-1), X, lambda a: a[..., None]),
    ("transpose", lambda a: a.transpose(0, 2), X, lambda a: a.transpose(2, 1, 0)),
    ("transpose_neg", lambda a: a.transpose(-1, -2), X, lambda a: a.swapaxes(1, 2)),
    ("permute", lambda a: a.permute(1, 2, 0), X, lambda a: a.transpose(1, 2, 0)),
    ("permute_tuple", lambda a: a.permute((2, 0, 1)), X, lambda a: a.transpose(2, 0, 1)),
    ("t", lambda a: a.t(), (2, 3), lambda a: a.T),
    ("T", lambda a: a.T, (2, 3), lambda a: a.T),
    ("expand", lambda a: a.expand(2, -1, 4), (3, 1), lambda a: np.broadcast_to(a, (2, 3, 4))),
    ("expand_as", lambda a, b: a.expand_as(b), [(1, 4), np.zeros((3, 4), bool)],
     lambda a, b: np.broadcast_to(a, b.shape)),
    ("broadcast_to", lambda a: a.broadcast_to((2, 3)), (3,), lambda a: np.broadcast_to(a, (2, 3))),
    ("repeat", lambda a: a.repeat(2, 3), (2, 3), lambda a: np.tile(a, (2, 3))),
    ("repeat_new_dims", lambda a: a.repeat(2, 1, 3), (2, 3), lambda a: np.tile(a, (2, 1, 3))),
    ("flip", lambda a: a.flip(0), X, lambda a: a[::-1]),
    ("flip_dims", lambda a: a.flip((0, -1)), X, lambda a: a[::-1, :, ::-1]),
    ("clone", lambda a: a.clone(), X, lambda a: a),
    ("contiguous", lambda a: a.contiguous() * 2, rand(4, 3).T, lambda a: a * 2),
    ("used_twice", lambda a: a.t() @ a.reshape(3, 2) + a.sum(), (3, 2),
     lambda a: a.T @ a.reshape(3, 2) + a.sum()),
]


@pytest.mark.parametrize("fn, x, ref", [c[1:] for c in SHAPE], ids=[c[0] for c in SHAPE])
def test_shape_op(fn, x, ref):
    """Value, shape and gradient of one shape op."""
    check_op(fn, *(x if isinstance(x, list) else [x]), ref=ref)


I = np.array([2, 0, 2])
M = np.array([[True, False, True, False], [False, False, True, True], [True, True, True, False]])

INDEX = [
    ("int", lambda a: a[1], lambda a: a[1]),
    ("neg_int", lambda a: a[-1, -2], lambda a: a[-1, -2]),
    ("slice", lambda a: a[1:3], lambda a: a[1:3]),
    ("slice_step", lambda a: a[::2, 1::2], lambda a: a[::2, 1::2]),
    ("slice_past_end", lambda a: a[1:100, -100:2], lambda a: a[1:100, -100:2]),
    ("none", lambda a: a[None, :, None], lambda a: a[None, :, None]),
    ("ellipsis", lambda a: a[..., 1], lambda a: a[..., 1]),
    ("int_array", lambda a: a[I], lambda a: a[I]),
    ("int_list", lambda a: a[[0, 2]], lambda a: a[[0, 2]]),
    ("int_tensor", lambda a: a[lib(a).tensor([2, 2, 1])], lambda a: a[[2, 2, 1]]),
    ("int_arrays_pair", lambda a: a[I, np.array([0, 3, 0])], lambda a: a[I, np.array([0, 3, 0])]),
    ("int_array_2d", lambda a: a[np.array([[0, 1], [1, 1]])], lambda a: a[np.array([[0, 1], [1, 1]])]),
    ("bool_mask", lambda a: a[M], lambda a: a[M]),
    ("bool_rows", lambda a: a[np.array([True, False, True])], lambda a: a[[0, 2]]),
    ("value_mask", lambda a: a[a > 0], lambda a: a[a > 0]),
    ("mixed_array_slice", lambda a: a[I, 1:3], lambda a: a[I, 1:3]),
    ("mixed_slice_array", lambda a: a[:, np.array([3, 0, 3])], lambda a: a[:, [3, 0, 3]]),
    ("mixed_none_int_step", lambda a: a[None, 1, ::2], lambda a: a[None, 1, ::2]),
    ("mixed_ellipsis_array", lambda a: a[..., np.array([1, 1])], lambda a: a[..., [1, 1]]),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in INDEX], ids=[c[0] for c in INDEX])
def test_indexing(fn, ref):
    """Indexing a (3, 4) tensor: values as NumPy; the gradient scatters back, repeated
    indices accumulate."""
    check_op(fn, (3, 4), ref=ref)


def test_index_3d_mixed():
    """Integer arrays separated by a slice move the indexed dims to the front (NumPy rule)."""
    idx = np.array([1, 0])
    check_op(lambda a: a[idx, :, idx], X, ref=lambda a: a[idx, :, idx])
    check_op(lambda a: a[:, idx][..., None, 1:], X, ref=lambda a: a[:, idx][..., None, 1:])


def test_repeated_index_accumulates():
    """x[[0, 0, 0]].sum() gives 3 at x[0] (the gradient accumulates, not overwrites)."""
    x = dtrain.zeros(2, requires_grad=True)
    x[[0, 0, 0]].sum().backward()
    compare(x.grad, [3.0, 0.0])


G = np.array([[0, 0, 2, 1], [1, 0, 0, 2]])

GATHER = [
    ("gather", lambda a: a.gather(1, lib(a).tensor(G)), lambda a: a[[[0], [1]], G]),
    ("gather_dim0", lambda a: a.gather(0, lib(a).tensor(G[:, :3])), lambda a: a[G[:, :3], [0, 1, 2]]),
    ("take_along_dim", lambda a: lib(a).take_along_dim(a, lib(a).tensor([[1], [0], [2]]), 1),
     lambda a: np.take_along_axis(a, np.array([[1], [0], [2]]), 1)),
    ("index_select", lambda a: a.index_select(0, lib(a).tensor([2, 0, 2])), lambda a: a[[2, 0, 2]]),
    ("index_select_neg_dim", lambda a: a.index_select(-1, lib(a).tensor([3, 1])), lambda a: a[:, [3, 1]]),
    ("masked_fill", lambda a: a.masked_fill(a > 0, 0.5), lambda a: np.where(a > 0, 0.5, a)),
    ("masked_fill_broadcast", lambda a: a.masked_fill(lib(a).tensor([True, False, False, True]), -1.0),
     lambda a: np.where([True, False, False, True], -1.0, a)),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in GATHER], ids=[c[0] for c in GATHER])
def test_gather_like(fn, ref):
    """gather / take_along_dim / index_select / masked_fill values and gradients."""
    check_op(fn, (3, 4), ref=ref)


JOIN = [
    ("cat", lambda a, b: lib(a).cat([a, b]), lambda a, b: np.concatenate([a, b])),
    ("cat_neg_dim", lambda a, b: lib(a).cat([a, b.reshape(2, 3)[:, :2], a], -1),
     lambda a, b: np.concatenate([a, b.reshape(2, 3)[:, :2], a], -1)),
    ("concat", lambda a, b: lib(a).concat((b, a), 0), lambda a, b: np.concatenate([b, a])),
    ("stack", lambda a, b: lib(a).stack([a, b, a]), lambda a, b: np.stack([a, b, a])),
    ("stack_last", lambda a, b: lib(a).stack([a, b], -1), lambda a, b: np.stack([a, b], -1)),
    ("split_uneven", lambda a, b: lib(a).cat([a, b], 1).split(2, 1),
     lambda a, b: tuple(np.split(np.concatenate([a, b], 1), [2, 4], 1))),
    ("chunk", lambda a, b: lib(a).cat([a, b], 1).chunk(3, 1),
     lambda a, b: tuple(np.split(np.concatenate([a, b], 1), [2, 4], 1))),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in JOIN], ids=[c[0] for c in JOIN])
def test_join(fn, ref):
    """cat/stack (and splitting what they joined) on two (2, 3) tensors: pieces and gradients."""
    check_op(fn, (2, 3), (2, 3), ref=ref)


SPLIT = [
    ("split", lambda a: a.split(1), lambda a: (a[:1], a[1:])),
    ("split_sizes", lambda a: a.split([1, 2], dim=1), lambda a: (a[:, :1], a[:, 1:])),
    ("chunk_fewer", lambda a: a.chunk(4, -1), lambda a: (a[:, :1], a[:, 1:2], a[:, 2:])),
    ("unbind", lambda a: a.unbind(1), lambda a: tuple(a.T)),
]


@pytest.mark.parametrize("fn, ref", [c[1:] for c in SPLIT], ids=[c[0] for c in SPLIT])
def test_split(fn, ref):
    """split/chunk/unbind of a (2, 3) tensor: pieces and the gradient through all of them."""
    check_op(fn, (2, 3), ref=ref)


def test_cat_promotes_dtype():
    """cat of int64 and float32 tensors gives float32 (PyTorch's promotion)."""
    out = dtrain.cat([dtrain.tensor([1, 2]), dtrain.tensor([0.5])])
    assert out.dtype == dtrain.float32
    compare(out, [1.0, 2.0, 0.5])


def test_nonzero_one_hot():
    """nonzero gives the int64 coordinates of non-zero elements; one_hot the int64 encoding."""
    x = dtrain.tensor([[0.0, 1.0], [2.0, 0.0]])
    compare(x.nonzero(), [[0, 1], [1, 0]])
    rows, cols = x.nonzero(as_tuple=True)
    compare(rows, [0, 1])
    compare(cols, [1, 0])
    oh = dtrain.one_hot(dtrain.tensor([2, 0]), 3)
    assert oh.dtype == dtrain.int64
    compare(oh, [[0, 0, 1], [1, 0, 0]])


def test_shape_op_errors():
    """Bad sizes or dims name the op and the bad value."""
    x = dtrain.zeros(2, 3)
    with pytest.raises(RuntimeError, match=r"reshape: shape \[4, 2\] is invalid for input of size 6"):
        x.reshape(4, 2)
    with pytest.raises(RuntimeError, match=r"expand: the expanded size of the tensor \(4\) must match .*size \(3\)"):
        x.expand(2, 4)
    with pytest.raises(RuntimeError, match="permute: number of dims 3"):
        x.permute(0, 1, 2)
    with pytest.raises(IndexError, match="transpose: dimension out of range"):
        x.transpose(0, 2)
    with pytest.raises(RuntimeError, match=r"cat: sizes of tensors must match except in dimension 0: "
                                           r"expected \[2, 3\] but got \[2, 4\]"):
        dtrain.cat([x, dtrain.zeros(2, 4)])
    with pytest.raises(RuntimeError, match=r"stack expects each tensor to be equal size.*\[2, 3\].*\[3, 2\]"):
        dtrain.stack([x, x.t()])
    with pytest.raises(RuntimeError, match=r"split_with_sizes expects split_sizes to sum exactly to 3"):
        x.split([1, 1], 1)
    with pytest.raises(IndexError, match=r"index \[5\] is invalid for a tensor of shape \[2, 3\]"):
        x[5]
    with pytest.raises(ValueError, match="step must be greater than zero"):
        x[::-1]
    with pytest.raises(IndexError, match="gather.*index out of range for dimension 1 with size 3"):
        x.gather(1, dtrain.tensor([[3], [0]]))


MORE_SHAPE = [
    ("narrow", lambda a: a.narrow(1, 1, 2), X, lambda a: a[:, 1:3]),
    ("narrow_negative_start", lambda a: lib(a).narrow(a, -1, -3, 2), X, lambda a: a[..., 1:3]),
    ("narrow_empty", lambda a: a.narrow(0, 2, 0), X, lambda a: a[2:2]),
    ("roll", lambda a: a.roll(1, 2), X, lambda a: np.roll(a, 1, 2)),
    ("roll_negative", lambda a: lib(a).roll(a, -2, dims=0), (5, 2), lambda a: np.roll(a, -2, 0)),
    ("roll_many_dims", lambda a: a.roll((1, -1), (0, 2)), X, lambda a: np.roll(a, (1, -1), (0, 2))),
    ("roll_flat", lambda a: a.roll(3), X, lambda a: np.roll(a.reshape(-1), 3).reshape(a.shape)),
    ("roll_longer_than_dim", lambda a: a.roll(7, 1), X, lambda a: np.roll(a, 7, 1)),
    ("repeat_interleave_flat", lambda a: a.repeat_interleave(2), (2, 3), lambda a: np.repeat(a, 2)),
    ("repeat_interleave_dim", lambda a: lib(a).repeat_interleave(a, 3, dim=1), (2, 3), lambda a: np.repeat(a, 3, 1)),
    ("repeat_interleave_tensor", lambda a: a.repeat_interleave(lib(a).tensor([1, 0, 2]), dim=-1), (2, 3),
     lambda a: np.repeat(a, [1, 0, 2], 1)),
    ("repeat_interleave_one_count", lambda a: a.repeat_interleave(lib(a).tensor([2]), dim=0), (2, 3),
     lambda a: np.repeat(a, 2, 0)),
    ("view_as", lambda a, b: a.view_as(b), [(2, 6), np.zeros((3, 4), bool)], lambda a, b: a.reshape(3, 4)),
]


@pytest.mark.parametrize("fn, x, ref", [c[1:] for c in MORE_SHAPE], ids=[c[0] for c in MORE_SHAPE])
def test_more_shape_ops(fn, x, ref):
    """narrow, roll, repeat_interleave, view_as: values and gradients."""
    check_op(fn, *(x if isinstance(x, list) else [x]), ref=ref)


def test_repeat_interleave_of_counts():
    """repeat_interleave(counts) alone repeats arange(len(counts)), as PyTorch."""
    assert dtrain.repeat_interleave(dtrain.tensor([2, 0, 1])).tolist() == [0, 0, 2]


@pytest.mark.parametrize("call, error, message", [
    (lambda x: x.narrow(0, 1, 2), RuntimeError, r"narrow\(\): start \(1\) \+ length \(2\) exceeds dimension size \(2\)"),
    (lambda x: x.narrow(1, -4, 1), IndexError, r"narrow\(\): start out of range \(expected to be in range of \[-3, 3\], but got -4\)"),
    (lambda x: x.narrow(3, 0, 1), IndexError, r"narrow: dimension out of range"),
    (lambda x: x.narrow(1, 0, -1), RuntimeError, r"narrow\(\): length must be non-negative, got -1"),
    (lambda x: x.roll((1, 2)), RuntimeError, r"roll: shifts \[1, 2\] given without dims must be one int"),
    (lambda x: x.repeat_interleave(dtrain.tensor([[1]])), RuntimeError,
     r"repeat_interleave: repeats must be 0-dim or 1-dim tensor, got shape \[1, 1\]"),
    (lambda x: x.repeat_interleave(dtrain.tensor([1, -1, 1]), dim=1), RuntimeError,
     r"repeat_interleave: repeats can not be negative"),
    (lambda x: x.repeat_interleave(1.5), TypeError, r"repeat_interleave: repeats must be an int or an int Tensor, got float"),
    (lambda x: x.sum().narrow(0, 0, 1), RuntimeError, r"narrow\(\) cannot be applied to a 0-dim tensor"),
    (lambda x: x.roll((1, 2), 0), RuntimeError, r"roll: shifts and dimensions must align. shifts: 2, dims: 1"),
    (lambda x: x.roll(1, 5), IndexError, r"roll: dimension out of range"),
    (lambda x: x.repeat_interleave(-1), RuntimeError, r"repeat_interleave: repeats can not be negative, got -1"),
    (lambda x: x.repeat_interleave(dtrain.tensor([1, 2]), dim=1), RuntimeError,
     r"repeats must have the same size as input along dim 1: got 2 repeats for size 3"),
    (lambda x: x.repeat_interleave(dtrain.tensor([1.0]), dim=1), RuntimeError,
     r"repeat_interleave: repeats must be an int tensor, got dtype float32"),
    (lambda x: x.repeat_interleave(2, dim=0, output_size=3), RuntimeError,
     r"repeat_interleave: output_size 3 does not match the 4 elements"),
    (lambda x: x.view_as(dtrain.zeros(4)), RuntimeError, r"reshape: shape \[4\] is invalid for input of size 6"),
])
def test_more_shape_errors(call, error, message):
    """Out-of-range starts and dims, misaligned shifts, bad repeats name the op and value."""
    with pytest.raises(error, match=message):
        call(dtrain.zeros(2, 3))
