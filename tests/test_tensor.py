"""The Tensor API: creation functions, dtype inference and promotion, devices, to() and
conversions, in-place ops, attributes and repr."""
import numpy as np
import pytest

import dtrain
from helpers import compare, rand

try:
    import torch
except ImportError:
    torch = None


# ---- creation and dtype inference ----------------------------------------------------

INFER = [
    ("python_float", [1.0, 2.0], dtrain.float32),
    ("python_int", [1, 2], dtrain.int64),
    ("python_bool", [True, False], dtrain.bool),
    ("mixed_int_float", [1, 2.5], dtrain.float32),
    ("scalar_float", 2.5, dtrain.float32),
    ("scalar_int", 3, dtrain.int64),
    ("empty_list", [], dtrain.float32),
    ("numpy_int32", np.arange(3, dtype=np.int32), dtrain.int32),
    ("numpy_float64", np.zeros(2), dtrain.float64),
    ("numpy_float16", np.zeros(2, np.float16), dtrain.float16),
    ("numpy_uint8", np.zeros(2, np.uint8), dtrain.uint8),
    ("numpy_scalar_float64", np.float64(1.5), dtrain.float64),
]


@pytest.mark.parametrize("data, dtype", [c[1:] for c in INFER], ids=[c[0] for c in INFER])
def test_tensor_dtype_inference(data, dtype):
    """dtrain.tensor infers dtypes as torch.tensor: Python floats float32, ints int64,
    NumPy arrays keep their dtype."""
    t = dtrain.tensor(data)
    assert t.dtype == dtype
    compare(t, np.asarray(data, dtype=dtype))
    if torch is not None:
        assert str(torch.tensor(data).dtype) == f"torch.{dtype.name}"


def test_tensor_copies_from_numpy_shares():
    """tensor() copies its data; from_numpy() and as_tensor() share memory with the array."""
    a = np.zeros(3, dtype=np.float32)
    copied, shared, as_t = dtrain.tensor(a), dtrain.from_numpy(a), dtrain.as_tensor(a)
    a[0] = 5
    assert copied[0].item() == 0 and shared[0].item() == 5 and as_t[0].item() == 5
    with pytest.raises(TypeError, match="expected a numpy.ndarray, got list"):
        dtrain.from_numpy([1.0])


def test_tensor_options():
    """dtype=, requires_grad= and nested lists of tensors are accepted."""
    t = dtrain.tensor([[1, 2], [3, 4]], dtype=dtrain.float64, requires_grad=True)
    assert t.dtype == dtrain.float64 and t.requires_grad and t.is_leaf and t.shape == (2, 2)
    compare(dtrain.tensor([dtrain.tensor(1.0), dtrain.tensor(2.0)]), [1.0, 2.0])
    with pytest.raises(TypeError, match="ragged"):
        dtrain.tensor([[1, 2], [3]])
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        dtrain.tensor([1, 2], requires_grad=True)


CREATE = [
    ("zeros", lambda m: m.zeros(2, 3), np.zeros((2, 3), np.float32)),
    ("zeros_tuple", lambda m: m.zeros((2, 3), dtype=m.int64), np.zeros((2, 3), np.int64)),
    ("ones", lambda m: m.ones([3]), np.ones(3, np.float32)),
    ("full_int", lambda m: m.full((2,), 3), np.full(2, 3, np.int64)),
    ("full_float", lambda m: m.full((2, 1), 1.5), np.full((2, 1), 1.5, np.float32)),
    ("full_bool", lambda m: m.full((2,), True), np.full(2, True)),
    ("eye", lambda m: m.eye(2, 3), np.eye(2, 3, dtype=np.float32)),
    ("arange_int", lambda m: m.arange(5), np.arange(5)),
    ("arange_start_step", lambda m: m.arange(1, 8, 3), np.arange(1, 8, 3)),
    ("arange_float", lambda m: m.arange(0, 1, 0.25), np.arange(0, 1, 0.25, dtype=np.float32)),
    ("arange_dtype", lambda m: m.arange(3, dtype=m.float64), np.arange(3.0)),
    ("linspace", lambda m: m.linspace(0, 1, 5), np.linspace(0, 1, 5, dtype=np.float32)),
    ("zeros_like", lambda m: m.zeros_like(m.ones(2, dtype=m.int64)), np.zeros(2, np.int64)),
    ("ones_like_dtype", lambda m: m.ones_like(m.ones(2), dtype=m.float64), np.ones(2)),
    ("full_like", lambda m: m.full_like(m.ones(2), 7.0), np.full(2, 7.0, np.float32)),
    ("empty_shape", lambda m: m.empty(2, 0).shape, (2, 0)),
]


@pytest.mark.parametrize("make, expected", [c[1:] for c in CREATE], ids=[c[0] for c in CREATE])
def test_creation(make, expected):
    """Creation functions give PyTorch's shapes, dtypes and values."""
    out = make(dtrain)
    if isinstance(expected, tuple):
        assert tuple(out) == expected
    else:
        compare(out, expected)
        assert out.dtype == expected.dtype
    if torch is not None:
        t = make(torch)
        if not isinstance(expected, tuple):
            assert str(t.dtype) == f"torch.{out.dtype.name}"
            np.testing.assert_allclose(out.numpy(), t.numpy(), rtol=1e-6)


def test_creation_errors():
    """Bad sizes and arguments give errors naming the problem."""
    with pytest.raises(RuntimeError, match="negative dimension -1"):
        dtrain.zeros(2, -1)
    with pytest.raises(TypeError, match="size must be a tuple of ints.*float"):
        dtrain.ones(2.5)
    with pytest.raises(RuntimeError, match="arange: step must be nonzero"):
        dtrain.arange(0, 3, 0)
    with pytest.raises(RuntimeError, match="randint: expected low < high, but got low=3, high=3"):
        dtrain.randint(3, 3, (2,))


def test_random_reproducible_and_in_range():
    """manual_seed makes randn/rand/randint/randperm repeat; values are in range; dtypes match PyTorch."""
    def draw():
        return dtrain.randn(4), dtrain.rand(4), dtrain.randint(2, 5, (50,)), dtrain.randperm(6)

    dtrain.manual_seed(123)
    first = draw()
    dtrain.manual_seed(123)
    second = draw()
    for a, b in zip(first, second):
        compare(a, b.numpy())
    n, u, i, p = first
    assert n.dtype == u.dtype == dtrain.float32 and i.dtype == p.dtype == dtrain.int64
    assert 0 <= u.min().item() and u.max().item() < 1
    assert set(i.tolist()) <= {2, 3, 4} and sorted(p.tolist()) == list(range(6))
    assert dtrain.rand(2, 3, dtype=dtrain.float64).dtype == dtrain.float64


def test_rng_state_and_generator():
    """get/set_rng_state replays the stream; a seeded Generator is independent of the global one."""
    state = dtrain.get_rng_state()
    a = dtrain.randn(3)
    dtrain.set_rng_state(state)
    compare(dtrain.randn(3), a.numpy())
    g1, g2 = dtrain.Generator().manual_seed(7), dtrain.Generator().manual_seed(7)
    compare(dtrain.rand(3, generator=g1), dtrain.rand(3, generator=g2).numpy())


def test_normal_uniform_inplace_statistics():
    """normal_(mean, std) and uniform_(a, b) fill with samples of the asked distribution."""
    x = dtrain.empty(20000, dtype=dtrain.float64)
    x.normal_(2.0, 0.5)
    assert abs(x.mean().item() - 2.0) < 0.02 and abs(x.std().item() - 0.5) < 0.02
    x.uniform_(-1.0, 3.0)
    assert -1.0 <= x.min().item() and x.max().item() < 3.0 and abs(x.mean().item() - 1.0) < 0.05


def test_default_dtype():
    """set_default_dtype(float64) makes Python floats and randn float64; ints stay int64."""
    dtrain.set_default_dtype(dtrain.float64)
    try:
        assert dtrain.tensor([1.5]).dtype == dtrain.float64 and dtrain.randn(2).dtype == dtrain.float64
        assert dtrain.tensor([1]).dtype == dtrain.int64
        assert (dtrain.tensor([1]) / 2).dtype == dtrain.float64
    finally:
        dtrain.set_default_dtype(dtrain.float32)
    assert dtrain.get_default_dtype() == dtrain.float32
    with pytest.raises(TypeError, match="only floating-point types"):
        dtrain.set_default_dtype(dtrain.int64)


# ---- dtype promotion -------------------------------------------------------------------

def _t(dtype, ndim=1):
    return dtrain.ones(*(2,) * ndim, dtype=dtype)


PROMOTE = [
    ("int_plus_float_scalar", lambda: _t(dtrain.int64) + 1.5, dtrain.float32),
    ("int_plus_int_scalar", lambda: _t(dtrain.int32) + 2, dtrain.int32),
    ("int_div_int", lambda: _t(dtrain.int64) / _t(dtrain.int64), dtrain.float32),
    ("int_div_int_scalar", lambda: _t(dtrain.int64) / 2, dtrain.float32),
    ("int_scalar_div_int", lambda: 2 / _t(dtrain.int32), dtrain.float32),
    ("int_floordiv_int", lambda: _t(dtrain.int64) // 2, dtrain.int64),
    ("float32_plus_float64_tensor", lambda: _t(dtrain.float32) + _t(dtrain.float64), dtrain.float64),
    ("float32_plus_float64_0d", lambda: _t(dtrain.float32) + _t(dtrain.float64, 0), dtrain.float32),
    ("int32_plus_int64_0d", lambda: _t(dtrain.int32) + _t(dtrain.int64, 0), dtrain.int32),
    ("int_plus_float_0d", lambda: _t(dtrain.int64) + _t(dtrain.float64, 0), dtrain.float64),
    ("int64_times_float32", lambda: _t(dtrain.int64) * _t(dtrain.float32), dtrain.float32),
    ("int32_plus_int64", lambda: _t(dtrain.int32) + _t(dtrain.int64), dtrain.int64),
    ("uint8_plus_int8", lambda: _t(dtrain.uint8) + _t(dtrain.int8), dtrain.int16),
    ("bool_plus_int_scalar", lambda: _t(dtrain.bool) + 1, dtrain.int64),
    ("bool_plus_float_scalar", lambda: _t(dtrain.bool) * 1.5, dtrain.float32),
    ("float16_plus_float_scalar", lambda: _t(dtrain.float16) + 1.5, dtrain.float16),
    ("float32_numpy_scalar", lambda: _t(dtrain.float32) * np.float64(2.0), dtrain.float32),
    ("int_pow_float", lambda: _t(dtrain.int64) ** 0.5, dtrain.float32),
    ("float_scalar_pow_int", lambda: 2.0 ** _t(dtrain.int64), dtrain.float32),
    ("int_sum", lambda: _t(dtrain.int32).sum(), dtrain.int64),
    ("compare_int_float", lambda: _t(dtrain.int64) < 1.5, dtrain.bool),
    ("where_int_float", lambda: dtrain.where(_t(dtrain.bool), _t(dtrain.int64), 0.5), dtrain.float32),
]


@pytest.mark.parametrize("make, dtype", [c[1:] for c in PROMOTE], ids=[c[0] for c in PROMOTE])
def test_promotion(make, dtype):
    """Binary ops promote dtypes as PyTorch does (not as NumPy does)."""
    assert make().dtype == dtype


def _op_cases():
    """(id, fn, inputs) for every row of the op test tables."""
    import test_ops_elementwise as ew
    import test_ops_linalg as la
    import test_ops_reduce as rd
    import test_ops_shape as sh
    as_list = lambda x: x if isinstance(x, list) else [x]  # noqa: E731
    return ([(c[0], c[1], c[2]) for c in ew.CASES]
            + [(c[0], c[1], as_list(c[2])) for c in rd.CASES + sh.SHAPE]
            + [(c[0], c[1], [(3, 4)]) for c in sh.INDEX + sh.GATHER]
            + [(c[0], c[1], [(2, 3), (2, 3)]) for c in sh.JOIN]
            + [(c[0], c[1], [(2, 3)]) for c in sh.SPLIT]
            + [(c[0], lambda a, b: a @ b, [c[1], c[2]]) for c in la.MATMUL]
            + [(c[0], c[1], [c[2], c[3]]) for c in la.NAMED])


@pytest.mark.parametrize("case", _op_cases(), ids=lambda c: c[0])
def test_float32_stays_float32_forward_and_backward(case):
    """Every op on float32 inputs gives float32 outputs, and the gradient that reaches each
    input (a non-leaf, so nothing casts it on the way) is float32 too."""
    _, fn, inputs = case
    arrays = [rand(*i) if isinstance(i, tuple) else i for i in inputs]
    grad_dtypes = []
    xs = []
    for a in arrays:
        if a.dtype.kind == "f":
            x = dtrain.tensor(a.astype(np.float32), requires_grad=True) * 1
            x.register_hook(lambda g: grad_dtypes.append(g.dtype))
        else:
            x = dtrain.tensor(a)
        xs.append(x)
    out = fn(*xs)
    outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o.dtype.kind == "f"]
    assert all(o.dtype == dtrain.float32 for o in outs), [o.dtype for o in outs]
    sum(o.sum() for o in outs if o.requires_grad).backward()
    assert grad_dtypes and all(d == dtrain.float32 for d in grad_dtypes), grad_dtypes


def test_float32_graph_stays_float32():
    """A float32 graph mixing Python scalars, int tensors and float32 leaves keeps float32
    values and float32 gradients."""
    x = dtrain.randn(3, 4, requires_grad=True)
    i = dtrain.arange(4)
    y = ((x * 2.5 + i) / 3 - 1) ** 2
    assert y.dtype == dtrain.float32
    (y.mean() + (x @ x.t()).sum()).backward()
    assert x.grad.dtype == dtrain.float32


# ---- devices ---------------------------------------------------------------------------

def test_device_parsing():
    """Device accepts 'cpu', 'cuda', 'cuda:N', (type, index); compares with strings."""
    assert dtrain.device("cuda").index is None and dtrain.device("cuda:2").index == 2  # "cuda": the current one
    assert dtrain.device("cuda", 1) == "cuda:1" and dtrain.device("cpu") == "cpu"
    assert str(dtrain.device("cuda:1")) == "cuda:1" and repr(dtrain.device("cpu")) == "device(type='cpu')"
    assert dtrain.device(dtrain.device("cuda:3")).index == 3
    assert len({dtrain.device("cpu"), dtrain.device("cpu")}) == 1
    with pytest.raises(ValueError, match="unknown device type 'gpu'"):
        dtrain.device("gpu")
    with pytest.raises(ValueError, match="invalid device index 'x'"):
        dtrain.device("cuda:x")
    with pytest.raises(ValueError, match="the CPU has no device index 1"):
        dtrain.device("cpu", 1)


def test_cpu_tensors_and_missing_cuda():
    """Tensors live on the CPU by default; asking for CUDA without one says why."""
    x = dtrain.zeros(2, device="cpu")
    assert x.device == "cpu" and not x.is_cuda and x.cpu() is x and x.to("cpu") is x
    if dtrain.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="cuda:0 requested but"):
        x.to("cuda")
    with pytest.raises(RuntimeError, match="cuda:0 requested but"):
        dtrain.zeros(2, device="cuda")


# ---- to() and conversions --------------------------------------------------------------

def test_to_dtype_is_differentiable():
    """to(float64) records the cast: the gradient flows back and arrives as float32."""
    x = dtrain.tensor([1.0, 2.0], requires_grad=True)
    y = x.to(dtrain.float64)
    assert y.dtype == dtrain.float64 and y.grad_fn is not None
    (y * y).sum().backward()
    assert x.grad.dtype == dtrain.float32
    compare(x.grad, [2.0, 4.0])
    assert x.to(dtrain.float32) is x and x.to(x) is x


def test_conversion_methods():
    """float/double/half/long/int/bool/type/type_as convert dtypes; integer casts leave the graph."""
    x = dtrain.tensor([1.7, -0.2], requires_grad=True)
    assert x.double().dtype == dtrain.float64 and x.half().dtype == dtrain.float16
    assert x.long().dtype == dtrain.int64 and not x.long().requires_grad
    compare(x.int(), np.array([1, 0], np.int32))
    compare(x.bool(), [True, True])
    assert x.type() == "dtrain.float32" and x.type(dtrain.float64).dtype == dtrain.float64
    assert x.type_as(dtrain.tensor([1])).dtype == dtrain.int64
    assert x.to(device="cpu", dtype=dtrain.float64).dtype == dtrain.float64
    with pytest.raises(TypeError, match=r"to\(\) got unexpected keyword arguments \['foo'\]"):
        x.to(foo=1)


def test_python_conversions():
    """item/float/int/bool/tolist/numpy/len/index and np.asarray behave as in PyTorch."""
    assert dtrain.tensor([2.5]).item() == 2.5 and isinstance(dtrain.tensor(3).item(), int)
    assert float(dtrain.tensor(1.5)) == 1.5 and int(dtrain.tensor(7)) == 7 and bool(dtrain.tensor([1]))
    assert dtrain.tensor([[1, 2]]).tolist() == [[1, 2]] and len(dtrain.zeros(4, 2)) == 4
    assert list(range(dtrain.tensor(3))) == [0, 1, 2]
    assert f"{dtrain.tensor(1.25):.1f}" == "1.2" and f"{dtrain.tensor(7)}" == "7"
    with pytest.raises(TypeError, match="unsupported format string"):
        f"{dtrain.zeros(2):.1f}"
    x = dtrain.tensor([1.0, -2.0])
    assert +x is x and [r.item() for r in x] == [1.0, -2.0]
    np.testing.assert_array_equal(np.asarray(dtrain.tensor([1.0, 2.0])), [1.0, 2.0])
    x = dtrain.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Can't call numpy\(\) on a Tensor that requires grad"):
        x.numpy()
    assert x.detach().numpy().tolist() == [1.0]
    with pytest.raises(ValueError, match="a Tensor with 2 elements cannot be converted to a Python scalar"):
        dtrain.zeros(2).item()
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with 2 elements is ambiguous"):
        bool(dtrain.zeros(2))
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(dtrain.tensor(1.0))


# ---- attributes ------------------------------------------------------------------------

def test_attributes():
    """shape/size/ndim/numel/is_contiguous/is_leaf/data/detach/clone behave as in PyTorch."""
    x = dtrain.zeros(2, 3, requires_grad=True)
    assert isinstance(x.shape, dtrain.Size) and x.shape == (2, 3) and x.size() == (2, 3)
    assert x.size(-1) == 3 and x.ndim == x.dim() == 2 and x.numel() == 6 and x.shape.numel() == 6
    assert x.is_contiguous() and not x.t().is_contiguous() and x.t().contiguous().is_contiguous()
    assert x.is_leaf and not (x * 2).is_leaf and x.is_floating_point()
    assert x.element_size() == 4
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    d[0, 0] = 5.0  # detach shares storage
    assert x[0, 0].item() == 5.0
    assert x.data.array is x.array and not x.data.requires_grad
    c = x.clone()
    c_arr = c.detach()
    with dtrain.no_grad():
        c_arr[0, 0] = 9.0
    assert x[0, 0].item() == 5.0 and c.grad_fn is not None
    with pytest.raises(IndexError, match="size: dimension out of range"):
        x.size(2)


def test_requires_grad_flags():
    """requires_grad_ toggles leaves; non-leaves cannot be switched off."""
    x = dtrain.zeros(2)
    assert x.requires_grad_() is x and x.requires_grad
    y = x * 2
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        y.requires_grad_(False)
    x.requires_grad_(False)
    assert not (x * 2).requires_grad


# ---- in-place ops ----------------------------------------------------------------------

INPLACE = [
    ("add_", lambda t: t.add_(2), lambda a: a + 2),
    ("add_alpha", lambda t: t.add_(dtrain.tensor([1.0, 2.0, 3.0]), alpha=0.5), lambda a: a + [0.5, 1.0, 1.5]),
    ("sub_", lambda t: t.sub_(1, alpha=2), lambda a: a - 2),
    ("mul_", lambda t: t.mul_(dtrain.tensor([2.0])), lambda a: a * 2),
    ("div_", lambda t: t.div_(4), lambda a: a / 4),
    ("addcmul_", lambda t: t.addcmul_(dtrain.ones(3), dtrain.full((3,), 2.0), value=3), lambda a: a + 6),
    ("addcdiv_", lambda t: t.addcdiv_(dtrain.ones(3), dtrain.full((3,), 2.0), value=3), lambda a: a + 1.5),
    ("lerp_", lambda t: t.lerp_(dtrain.zeros(3), 0.25), lambda a: a * 0.75),
    ("clamp_", lambda t: t.clamp_(1.5, 2.5), lambda a: np.clip(a, 1.5, 2.5)),
    ("sqrt_", lambda t: t.sqrt_(), np.sqrt),
    ("neg_", lambda t: t.neg_(), np.negative),
    ("pow_", lambda t: t.pow_(2), np.square),
    ("zero_", lambda t: t.zero_(), np.zeros_like),
    ("fill_", lambda t: t.fill_(7), lambda a: np.full_like(a, 7)),
    ("copy_", lambda t: t.copy_(dtrain.tensor([4, 5, 6])), lambda a: np.array([4.0, 5.0, 6.0])),
    ("copy_broadcast", lambda t: t.copy_(dtrain.tensor([4.0])), lambda a: np.full_like(a, 4.0)),
    ("iadd", lambda t: t.__iadd__(1), lambda a: a + 1),
    ("isub", lambda t: t.__isub__(1), lambda a: a - 1),
    ("imul", lambda t: t.__imul__(3), lambda a: a * 3),
    ("itruediv", lambda t: t.__itruediv__(2), lambda a: a / 2),
    ("setitem_slice", lambda t: t.__setitem__(slice(1, None), dtrain.tensor([8.0, 9.0])) or t,
     lambda a: np.array([a[0], 8.0, 9.0])),
    ("setitem_leading_one", lambda t: t.__setitem__(0, dtrain.tensor([5.0])) or t, lambda a: np.array([5.0, 2, 3])),
    ("setitem_array_index", lambda t: t.__setitem__(dtrain.tensor([2, 0]), dtrain.tensor([[7.0, 8.0]])) or t,
     lambda a: np.array([8.0, 2.0, 7.0])),
    ("setitem_mask", lambda t: t.__setitem__(t > 1.5, 0.0) or t, lambda a: np.where(a > 1.5, 0.0, a)),
]


@pytest.mark.parametrize("op, ref", [c[1:] for c in INPLACE], ids=[c[0] for c in INPLACE])
def test_inplace(op, ref):
    """An in-place op writes the result into the same storage, keeps the dtype, returns self
    and bumps the version counter."""
    a = np.array([1.0, 2.0, 3.0], np.float32)
    t = dtrain.from_numpy(a.copy())
    storage, version = t.array, t._version
    out = op(t)
    assert out is t and t.array is storage and t.dtype == dtrain.float32 and t._version > version
    np.testing.assert_allclose(t.numpy(), ref(a), rtol=1e-6)


def test_inplace_on_leaf_under_no_grad():
    """In-place ops on a leaf that requires grad work under no_grad (as optimizers do) and
    leave it a leaf that requires grad (the refusal outside no_grad is in test_errors)."""
    w = dtrain.ones(3, requires_grad=True)
    with dtrain.no_grad():
        w.mul_(2)
        w[0] = 5.0
    compare(w.detach(), [5.0, 2.0, 2.0])
    assert w.requires_grad and w.is_leaf


# ---- repr ------------------------------------------------------------------------------

def test_repr():
    """repr shows values, a non-default dtype, requires_grad / grad_fn, as PyTorch does."""
    assert repr(dtrain.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(dtrain.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(dtrain.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"
    assert repr(dtrain.tensor([1.0], dtype=dtrain.float64)) == "tensor([1.], dtype=dtrain.float64)"
    y = dtrain.tensor([1.0], requires_grad=True) * 2
    assert repr(y) == "tensor([2.], grad_fn=<MulBackward>)"
    assert repr(dtrain.zeros(2, 3).shape) == "dtrain.Size([2, 3])"
    assert "\n" in repr(dtrain.zeros(2, 2))


# ---- ints as CUDA device indices; new_* tensors; small top-level helpers ------------------

def test_int_device_is_a_cuda_index():
    """dtrain.device(0) is cuda:0, as torch.device(0); a negative index is refused."""
    assert dtrain.device(0) == "cuda:0" and dtrain.device(2).index == 2
    assert repr(dtrain.device(1)) == "device(type='cuda', index=1)"
    with pytest.raises(ValueError, match=r"device index must be a non-negative int \(a CUDA device\), got -1"):
        dtrain.device(-1)


@pytest.mark.parametrize("move", [lambda x: x.to(0), lambda x: x.to(device=0), lambda x: x.cuda(0),
                                  lambda x: x.to(0, dtrain.float64), lambda x: x.cuda()],
                         ids=["to_int", "to_device_int", "cuda_int", "to_int_dtype", "cuda"])
def test_to_int_without_cuda_says_no_cuda_device(move):
    """to(0), to(device=0), cuda(0): an int is a CUDA index (never a dtype); without a GPU
    the error says no CUDA device is available."""
    if dtrain.cuda.is_available():
        x = dtrain.zeros(2)
        assert move(x).device == "cuda:0"
        return
    with pytest.raises(RuntimeError, match=r"cuda:0 requested but .*no CUDA device is available"):
        move(dtrain.zeros(2))


def test_new_tensor_methods_follow_self():
    """new_zeros/ones/full/empty/tensor take self's dtype and device unless given."""
    x = dtrain.ones(2, dtype=dtrain.float64)
    z = x.new_zeros(2, 3)
    assert z.shape == (2, 3) and z.dtype == dtrain.float64 and z.device == x.device and z.sum().item() == 0
    assert x.new_zeros((4,)).shape == (4,) and x.new_ones(3, dtype=dtrain.int64).tolist() == [1, 1, 1]
    f = x.new_full((2,), 7)
    assert f.dtype == dtrain.float64 and f.tolist() == [7.0, 7.0]
    assert x.new_empty(5).shape == (5,) and x.new_empty(5).dtype == dtrain.float64
    t = x.new_tensor([1, 2])
    assert t.dtype == dtrain.float64 and t.tolist() == [1.0, 2.0] and not t.requires_grad
    src = dtrain.tensor([3.0], requires_grad=True)
    copy = x.new_tensor(src, requires_grad=True)
    assert copy.requires_grad and copy.is_leaf and copy.dtype == dtrain.float64
    copy.data.fill_(0.0)
    assert src.item() == 3.0


def test_inference_mode():
    """inference_mode records no graph, as context manager and as decorator (bare or called);
    inference_mode(False) leaves the mode alone; is_inference_mode_enabled reports it."""
    w = dtrain.ones(2, requires_grad=True)
    with dtrain.inference_mode():
        assert not (w * 2).requires_grad and dtrain.is_inference_mode_enabled()
    assert (w * 2).requires_grad and not dtrain.is_inference_mode_enabled()

    @dtrain.inference_mode
    def bare():
        return w * 2

    @dtrain.inference_mode()
    def called():
        return w * 2

    assert not bare().requires_grad and not called().requires_grad
    with dtrain.inference_mode(False):
        assert (w * 2).requires_grad
    with dtrain.no_grad(), dtrain.inference_mode(False):
        assert not (w * 2).requires_grad


def test_is_tensor_and_numel():
    """is_tensor is true for tensors (and Parameters) only; numel counts elements."""
    assert dtrain.is_tensor(dtrain.zeros(1)) and dtrain.is_tensor(dtrain.nn.Parameter(dtrain.zeros(1)))
    assert not dtrain.is_tensor([1.0]) and not dtrain.is_tensor(np.zeros(1))
    assert dtrain.numel(dtrain.zeros(2, 3)) == 6 == dtrain.zeros(2, 3).numel()
    with pytest.raises(TypeError, match=r"numel\(\): argument 'input' must be Tensor, not list"):
        dtrain.numel([1, 2])


def test_top_level_nn_functions():
    """dtrain.softmax / log_softmax / relu / dropout exist at the top level with torch's
    signatures (dtype third, dropout's ``train``) and compute nn.functional's."""
    x = dtrain.tensor([[1.0, -2.0, 0.5]])
    F = dtrain.nn.functional
    assert dtrain.allclose(dtrain.softmax(x, dim=-1), F.softmax(x, dim=-1))
    assert dtrain.allclose(dtrain.log_softmax(x, 1), F.log_softmax(x, 1))
    assert dtrain.relu(x).tolist() == [[1.0, 0.0, 0.5]]
    assert dtrain.dropout(x, 0.5, False) is x and dtrain.dropout(x, p=0.5, train=False) is x
    assert dtrain.softmax(x, 1, dtrain.float64).dtype == dtrain.float64
    if torch is not None:
        t = torch.tensor([[1.0, -2.0, 0.5]])
        compare(dtrain.softmax(x, -1), torch.softmax(t, -1).numpy())


NEW_FUNCTIONS = ("tril triu masked_fill einsum bmm baddbmm addmm topk sort argsort cumsum cumprod gather scatter "
                 "scatter_add index_select roll repeat_interleave erf multinomial diag diagonal trace outer kron "
                 "unique cosh sinh square lerp softmax log_softmax relu dropout numel is_tensor inference_mode "
                 "norm narrow").split()
NEW_METHODS = ("tril triu masked_fill masked_fill_ bmm baddbmm addmm topk sort argsort cumsum cumprod gather "
               "scatter scatter_ scatter_add scatter_add_ index_select roll repeat_interleave erf multinomial diag "
               "diagonal trace outer kron unique cosh sinh square lerp softmax log_softmax relu numel norm narrow "
               "view_as new_zeros new_ones new_full new_empty new_tensor").split()


def test_torch_names_exist():
    """The ops PyTorch has as torch.X and as Tensor.X exist under the same names here, and
    dtrain.linalg has vector_norm, matrix_norm and norm."""
    assert [n for n in NEW_FUNCTIONS if not callable(getattr(dtrain, n, None))] == []
    assert [n for n in NEW_METHODS if not callable(getattr(dtrain.Tensor, n, None))] == []
    assert all(callable(getattr(dtrain.linalg, n)) for n in ("vector_norm", "matrix_norm", "norm"))
    if torch is not None:
        assert [n for n in NEW_FUNCTIONS if not hasattr(torch, n)] == []
        assert [n for n in NEW_METHODS if not hasattr(torch.Tensor, n)] == []


@pytest.mark.parametrize("values", [[0.0, 0.8427], [0.25, 0.25], [1.0, 2.0], [1e-5, 1.0], [float("inf"), 0.5],
                                    [[-1.5, 0.0], [2.0, 3.0]], 0.5, []])
def test_repr_digits_match_pytorch(values):
    """Float values print as PyTorch prints them: whole numbers as "1.", otherwise every
    element with 4 decimals (scientific where the range asks for it)."""
    if torch is None:
        pytest.skip("needs torch")
    assert repr(dtrain.tensor(values)) == repr(torch.tensor(values))


def test_cuda_with_cupy_but_no_driver_says_no_device(monkeypatch):
    """CuPy installed on a machine without a GPU or driver (its runtime calls raise raw
    cudaErrors): "cuda" still gets dtrain's message that no CUDA device is available."""
    import types

    from dtrain.tensor import backend

    def no_driver(*args):
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")
    runtime = types.SimpleNamespace(getDeviceCount=no_driver, getDevice=no_driver)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime), ndarray=type("ndarray", (), {}))
    monkeypatch.setattr(backend, "cupy", fake)
    assert not dtrain.cuda.is_available()
    x = dtrain.zeros(2)
    for make in (lambda: x.to("cuda"), lambda: dtrain.zeros(2, device="cuda")):
        with pytest.raises(RuntimeError, match=r"cuda:0 requested but only 0 CUDA device\(s\) are visible \(no CUDA "
                                               r"device is available\)"):
            make()
