"""The CuPy path is the NumPy path: array code is written once against ``xp``.

On the CPU: a static check that the NumPy-only spellings CuPy lacks (or spells differently)
appear nowhere outside dtrain/tensor/backend.py, and tests of the backend helpers that
stand in for them. On a GPU (``@pytest.mark.gpu``, skipped without one): the reference MLP
and CNN training steps, the optimizers, and a representative set of Functions forward and
backward on 'cuda' agree with the CPU.
"""
import ast
import pathlib

import numpy as np
import pytest

import dtrain
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.tensor import backend

ROOT = pathlib.Path(dtrain.__file__).parent
ARRAY_NAMES = {"numpy", "np", "cupy", "cp", "cupyx", "xp"}


def _audited_files():
    """The files that hold array code: the autograd core, nn, optim and collate."""
    files = [*(ROOT / "tensor").rglob("*.py"), *(ROOT / "nn").rglob("*.py"), *(ROOT / "optim").rglob("*.py"),
             ROOT / "data" / "collate.py"]
    return sorted(p for p in files if p.name != "backend.py")


def _is_array_module(node):
    return isinstance(node, ast.Name) and node.id in ARRAY_NAMES


def numpy_only_spellings(path, op_code):
    """(line, what) for each NumPy-only spelling in a source file. ``op_code``: the file
    handles only tensor data (never host-only NumPy input), so an isinstance check against
    numpy.ndarray there would wrongly exclude CuPy arrays."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "at" and isinstance(node.value, ast.Attribute):
            found.append((node.lineno, "ufunc.at (CuPy has none: use backend.scatter_add)"))
        if (isinstance(node, ast.Attribute) and node.attr == "stride_tricks") or \
                (isinstance(node, ast.ImportFrom) and "stride_tricks" in (node.module or "")):
            found.append((node.lineno, "lib.stride_tricks (use backend.sliding_window_view / as_strided)"))
        if isinstance(node, ast.Attribute) and node.attr == "random" and _is_array_module(node.value) \
                and path.name != "random.py":
            found.append((node.lineno, "module-level random (use dtrain.tensor.random's per-device generators)"))
        if op_code and isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            if any(isinstance(n, ast.Attribute) and n.attr == "ndarray" and _is_array_module(n.value)
                   for a in node.args[1:] for n in ast.walk(a)):
                found.append((node.lineno, "isinstance(..., numpy.ndarray) (excludes CuPy arrays)"))
    return sorted(found)


def test_no_numpy_only_spellings_outside_backend():
    """No file with array code (tensor/, nn/, optim/, data/collate.py) other than backend.py
    uses ufunc.at, lib.stride_tricks or a module-level RNG, and op/nn/optim code never
    tests for numpy.ndarray: CuPy lacks or spells these differently."""
    files = _audited_files()
    assert len(files) > 20, f"expected the array-code files under {ROOT}"
    bad = {}
    for p in files:
        rel = p.relative_to(ROOT)
        op_code = rel.parts[0] in ("nn", "optim") or rel.parts[:2] == ("tensor", "ops")
        for line, what in numpy_only_spellings(p, op_code):
            bad[f"{rel}:{line}"] = what
    assert not bad, f"NumPy-only spellings outside dtrain/tensor/backend.py: {bad}"


def test_spelling_check_flags_each_rule(tmp_path):
    """The check itself flags every rule (so the test above can fail), and not the
    backend helpers that replace them."""
    src = tmp_path / "ops_like.py"
    src.write_text("import numpy as np\n"
                   "np.add.at(a, i, v)\n"
                   "w = np.lib.stride_tricks.sliding_window_view(a, 3)\n"
                   "from numpy.lib.stride_tricks import as_strided\n"
                   "r = xp.random.standard_normal(3)\n"
                   "ok = isinstance(a, (int, np.ndarray))\n")
    assert [line for line, _ in numpy_only_spellings(src, op_code=True)] == [2, 3, 4, 5, 6]
    assert [line for line, _ in numpy_only_spellings(src, op_code=False)] == [2, 3, 4, 5]
    src.write_text("backend.scatter_add(a, i, v)\nw = sliding_window_view(a, (3,), (0,))\n"
                   "r = uniform_array((3,), 0.0, 1.0, d, dev)\nok = backend.is_cuda_array(a)\n")
    assert numpy_only_spellings(src, op_code=True) == []


# ---- the backend helpers, on NumPy ------------------------------------------------------

@pytest.mark.parametrize("shape,window,axis", [((2, 3, 7, 6), (3, 2), (2, 3)), ((5,), (5,), (0,)),
                                               ((4, 6), (1, 4), (0, 1)), ((3, 5, 4), (2,), (1,))])
def test_sliding_window_view_matches_numpy(shape, window, axis):
    """backend.sliding_window_view (built on as_strided, the one code path for NumPy and
    CuPy) gives NumPy's sliding_window_view, also on a non-contiguous input; it is a
    read-only view of the input's memory."""
    a = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    for x in (a, a[..., ::-1], np.asfortranarray(a)):
        got = backend.sliding_window_view(x, window, axis)
        np.testing.assert_array_equal(got, np.lib.stride_tricks.sliding_window_view(x, window, axis=axis))
        assert np.shares_memory(got, x) and not got.flags.writeable


def test_sliding_window_view_rejects_a_window_larger_than_the_axis():
    """A window longer than its axis is a ValueError naming the window and the shape."""
    with pytest.raises(ValueError, match=r"window \(4,\) does not fit axis 0 of an array of shape \(3, 2\)"):
        backend.sliding_window_view(np.zeros((3, 2)), (4,), (0,))


@pytest.fixture
def numpy_as_wrapping(monkeypatch):
    """Make check_index_bounds treat NumPy integer index arrays the way it treats CuPy's
    (which wrap out-of-range indices instead of raising), so its axis bookkeeping runs here."""
    monkeypatch.setattr(backend, "_is_int_cuda_array", lambda i: isinstance(i, np.ndarray) and i.dtype.kind in "iu")


@pytest.mark.parametrize("shape,index,message", [
    ((3, 4), (np.array([0, 3]),), "index 3 is out of bounds for axis 0 with size 3"),
    ((3, 4), (slice(None), np.array([-5, 1])), "index -5 is out of bounds for axis 1 with size 4"),
    ((2, 3, 4), (Ellipsis, np.array([[4]])), "index 4 is out of bounds for axis 2 with size 4"),
    ((2, 3, 4), (None, np.array([True, False]), np.array([3])), "index 3 is out of bounds for axis 1 with size 3"),
    ((2, 3, 4), (0, np.array([1]), None, np.array([9])), "index 9 is out of bounds for axis 2 with size 4"),
])
def test_check_index_bounds_finds_the_axis(numpy_as_wrapping, shape, index, message):
    """An out-of-range integer-array index is reported with NumPy's message and the right
    axis, past ints, slices, None, Ellipsis and boolean masks."""
    with pytest.raises(IndexError, match=message):
        backend.check_index_bounds(shape, index)


def test_check_index_bounds_accepts_in_range_indices(numpy_as_wrapping):
    """In-range indices, negative ones included, and empty index arrays pass."""
    backend.check_index_bounds((3, 4), (np.array([-3, 2]), np.array([[-4], [3]])))
    backend.check_index_bounds((3, 4), (Ellipsis, np.array([], dtype=np.int64)))


def test_indexing_reports_out_of_range_through_the_bounds_check(numpy_as_wrapping):
    """x[idx] and x[idx] = v go through the bounds check (the one that fires on CuPy) and
    name the tensor's shape."""
    x = dtrain.zeros(3, 4)
    with pytest.raises(IndexError, match=r"index 4 is out of bounds for axis 1 with size 4"):
        x[:, dtrain.tensor([0, 4])]
    with pytest.raises(IndexError, match=r"index 3 is out of bounds for axis 0 with size 3"):
        x[[1, 3]] = 1.0


def test_inplace_ops_take_host_data():
    """copy_, item assignment and in-place arithmetic take a Tensor, a NumPy array or a list
    and broadcast it (on CUDA the host data is moved to the device first: CuPy refuses it)."""
    x = dtrain.zeros(2, 3)
    x.copy_(np.arange(3.0))
    x[1, :2] = [5.0, 6.0]
    x.add_(np.ones(3))
    np.testing.assert_array_equal(x.numpy(), [[1, 2, 3], [6, 7, 3]])
    x.copy_(dtrain.ones(3))
    np.testing.assert_array_equal(x.numpy(), np.ones((2, 3)))


# ---- on a GPU: the CuPy path agrees with the CPU ---------------------------------------

def _mlp():
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def _cnn():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4096, 10))


def _train(make, x, y, device, steps=3):
    """Losses and final parameters of ``steps`` SGD-momentum steps of the reference model."""
    dtrain.manual_seed(0)
    model = make().to(device)
    opt = dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xb, yb = dtrain.tensor(x, device=device), dtrain.tensor(y, device=device)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        assert loss.device == device and all(p.grad.device == device for p in model.parameters())
        losses.append(loss.item())
    return losses, [p.detach().cpu().numpy() for p in model.parameters()]


@pytest.mark.gpu
@pytest.mark.parametrize("make,shape", [(_mlp, (256, 784)), (_cnn, (64, 3, 32, 32))], ids=["mlp", "cnn"])
def test_gpu_training_step_matches_cpu(make, shape):
    """The reference MLP and CNN (DESIGN.md), three SGD-momentum steps on 'cuda': the same
    losses and parameters as on the CPU, to 1e-4."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, shape[0])
    cpu_losses, cpu_params = _train(make, x, y, "cpu")
    gpu_losses, gpu_params = _train(make, x, y, "cuda")
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4, atol=1e-4)
    for g, c in zip(gpu_params, cpu_params):
        np.testing.assert_allclose(g, c, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("make_opt", [
    lambda ps: dtrain.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: dtrain.optim.Adam(ps, lr=0.1, amsgrad=True),
    lambda ps: dtrain.optim.AdamW(ps, lr=0.1),
    lambda ps: dtrain.optim.RMSprop(ps, lr=0.01, centered=True, momentum=0.5),
    lambda ps: dtrain.optim.Adagrad(ps, lr=0.1),
], ids=["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_gpu_optimizer_steps_match_cpu(make_opt):
    """Every optimizer's update (state buffers, out= ufuncs, the CPU step counter) gives
    the same parameters on 'cuda' as on the CPU; clip_grad_norm_ too."""
    rng = np.random.default_rng(1)
    w0, grads = rng.standard_normal((4, 3)), [rng.standard_normal((4, 3)) for _ in range(3)]
    result = {}
    for dev in ("cpu", "cuda"):
        w = nn.Parameter(dtrain.tensor(w0, device=dev))
        opt = make_opt([w])
        for g in grads:
            w.grad = dtrain.tensor(g, device=dev)
            norm = nn.utils.clip_grad_norm_([w], max_norm=1.0)
            opt.step()
        assert w.device == dev and norm.device == dev
        result[dev] = w.detach().cpu().numpy()
    np.testing.assert_allclose(result["cuda"], result["cpu"], rtol=1e-10, atol=1e-12)


def _ints(*shape, high=3):
    return np.random.default_rng(2).integers(0, high, shape)


def _const(values, like):
    """A float64 constant on like's device (weights, running statistics: no gradient)."""
    return dtrain.tensor(values, dtype=dtrain.float64, device=like.device)


def _floats(*shape):
    a = np.random.default_rng(3).standard_normal(shape)
    return a + np.arange(a.size).reshape(shape) * 1e-3  # no ties: max/min gradients are unique


# (name, fn, inputs): float inputs require grad; integer inputs are indices
FUNCTIONS = [
    ("arith", lambda a, b: (a + b) * a / (b.abs() + 1) - a ** 2 + (a.abs() + 0.5) ** b, [_floats(3, 4), _floats(4)]),
    ("unary", lambda a: a.exp() + (a.abs() + 1).log() + (a.abs() + 1).sqrt() + a.tanh() + a.sigmoid() + a.sin()
     + a.cos() + (a.abs() + 1).rsqrt() + a.abs().log1p(), [_floats(3, 4)]),
    ("clamp_max_where", lambda a, b: a.clamp(-0.5, 0.5) + dtrain.maximum(a, b) + dtrain.minimum(a, b)
     + dtrain.where(a > b, a, 2 * b), [_floats(3, 4), _floats(3, 4) * 0.5]),
    ("reductions", lambda a: a.sum(1) + a.mean(0).sum() + a.var(1) + a.std(0).sum() + a.prod(1) + a.amax(1)
     + a.amin(0).sum() + a.logsumexp(1) + a.max(1).values + a.min(1)[0] + a.cumsum(1).sum(1), [_floats(3, 4)]),
    ("shape", lambda a: dtrain.cat([a.reshape(4, 3).permute(1, 0), a.flip(1), a.expand(2, 3, 4)[1],
                                    a.repeat(1, 2)[:, :4]], 0).t().split(2, 1)[1].unsqueeze(0).squeeze(), [_floats(3, 4)]),
    ("stack_chunk", lambda a: dtrain.stack(a.chunk(3, 1), 2).sum(2) * a.unbind(0)[1][:2], [_floats(3, 6)]),
    ("index", lambda a, i: a[i] + a[1:, None, ::2].sum() + a[a > 0].sum() + a[[0, 0, 2]].sum(0)
     + a[:, i[:3]].sum(), [_floats(3, 4), _ints(4)]),
    ("gather_select", lambda a, i: a.gather(1, i) + a.index_select(1, i[0]) + a.take_along_dim(i, 1)
     + a.masked_fill(a < 0, 0.5), [_floats(3, 4), _ints(3, 4)]),
    ("matmul_linear", lambda a, w, b: (a @ w.t()).sum(0) + F.linear(a, w, b).sum(0) + (a[0] @ w.t())
     + dtrain.bmm(a[None], w.t()[None])[0, 0], [_floats(5, 3), _floats(4, 3), _floats(4)]),
    ("conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2))
     + F.conv2d(x, w, padding="same")[:, :, ::2, 1:5],
     [_floats(2, 1, 7, 6), _floats(4, 1, 3, 3), _floats(4)]),
    ("conv2d_groups", lambda x, w: F.conv2d(x, w, groups=2, stride=2), [_floats(2, 4, 7, 7), _floats(6, 2, 3, 3)]),
    ("pools", lambda x: F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True).sum((2, 3))
     + F.avg_pool2d(x, 2, padding=1, count_include_pad=False).sum((2, 3))
     + F.adaptive_avg_pool2d(x, (3, 2)).sum((2, 3)) + F.max_pool2d(x, 2, dilation=2)[0].sum(), [_floats(2, 3, 7, 6)]),
    ("activations", lambda a: F.relu(a) + F.gelu(a) + F.gelu(a, approximate="tanh") + F.silu(a)
     + F.softplus(a * 30, beta=0.5) + F.leaky_relu(a, 0.2) + F.softmax(a, 1) + F.log_softmax(a, 0), [_floats(3, 4)]),
    ("cross_entropy", lambda a, t: F.cross_entropy(a, t, weight=_const([0.5, 1.0, 2.0, 1.5], a), ignore_index=2,
                                                   label_smoothing=0.1)
     + F.cross_entropy(a, t, reduction="sum") + F.nll_loss(F.log_softmax(a, 1), t, reduction="none").sum(),
     [_floats(5, 4), _ints(5)]),
    ("pointwise_losses", lambda a, b: F.mse_loss(a, b) + F.l1_loss(a, b, reduction="sum")
     + F.binary_cross_entropy_with_logits(a, b.sigmoid(), pos_weight=_const([1.0, 2.0, 0.5, 3.0], a)),
     [_floats(3, 4), _floats(3, 4)]),
    ("norms", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True).sum((0, 2))
     + F.batch_norm(x, _const([0.1, 0.0, -0.2], x), _const([1.0, 2.0, 0.5], x), w, b).sum((0, 2))
     + F.layer_norm(x, (3, 5), None, None).sum((0, 2)), [_floats(4, 3, 5), _floats(3), _floats(3)]),
    ("embedding_pad", lambda w, i: F.embedding(i, w, padding_idx=1).sum(0)
     + F.pad(w[None], (1, 2), mode="reflect").sum((0, 1))[:3] + F.pad(w[None], (2, 1), mode="replicate")[0, 0, :3]
     + F.pad(w[None], (1, 1), mode="circular")[0, 1, 1:4] + F.pad(w, (1, -1), value=2.0)[0, :3],
     [_floats(5, 3), _ints(7, high=5)]),
]


def _forward_backward(fn, arrays, device):
    """fn's output and the gradients of sum(output * fixed weights) w.r.t. its float inputs."""
    xs = [dtrain.tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in arrays]
    out = fn(*xs)
    weights = np.random.default_rng(4).standard_normal(tuple(out.shape))
    (out * dtrain.tensor(weights, device=device)).sum().backward()
    assert out.device == device and all(x.grad.device == device for x in xs if x.requires_grad)
    return [out.detach().cpu().numpy()] + [x.grad.cpu().numpy() for x in xs if x.requires_grad]


@pytest.mark.gpu
@pytest.mark.parametrize("name,fn,arrays", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_gpu_functions_match_cpu(name, fn, arrays):
    """Each group of Functions, forward and backward in float64 on 'cuda', gives the CPU's
    values and gradients (results and gradients staying on the GPU)."""
    cpu, gpu = _forward_backward(fn, arrays, "cpu"), _forward_backward(fn, arrays, "cuda")
    for c, g in zip(cpu, gpu):
        np.testing.assert_allclose(g, c, rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.gpu
def test_gpu_indexing_out_of_range_raises(monkeypatch):
    """An out-of-range index tensor raises IndexError on 'cuda' as on the CPU (CuPy alone
    would wrap it around), for reads, writes, gather and embedding: checked on the device,
    raised at the next host read (tests/test_host_syncs.py)."""
    monkeypatch.delenv("CUDA_LAUNCH_BLOCKING", raising=False)
    x = dtrain.zeros(3, 4, device="cuda")

    def write():
        x[dtrain.tensor([-4], device="cuda")] = 1.0
    for op, message in [(lambda: x[:, dtrain.tensor([0, 4], device="cuda")], "out of bounds for axis 1 with size 4"),
                        (write, "out of bounds for axis 0 with size 3"),
                        (lambda: x.gather(1, dtrain.tensor([[5]] * 3, device="cuda")), "out of range"),
                        (lambda: F.embedding(dtrain.tensor([3], device="cuda"), x), r"indices must be in \[0, 2\]")]:
        op()
        with pytest.raises(IndexError, match=message):
            x.sum().item()


@pytest.mark.gpu
def test_gpu_copies_across_devices():
    """copy_ from a CPU tensor into a CUDA tensor works (as in PyTorch); host data (NumPy
    arrays, lists) written or added into a CUDA tensor is moved there first; to('cuda:1')
    really moves data to the second GPU when there is one."""
    x = dtrain.zeros(2, 3, device="cuda")
    x.copy_(dtrain.ones(3))
    x[0] = np.full(3, 2.0)
    x[1, :2] = [5.0, 6.0]
    x.add_(np.ones(3))
    np.testing.assert_array_equal(x.cpu().numpy(), [[3, 3, 3], [6, 7, 2]])
    if dtrain.cuda.device_count() > 1:
        y = x.to("cuda:1")
        assert y.device == "cuda:1" and y.array.device.id == 1
        np.testing.assert_array_equal(y.cpu().numpy(), x.cpu().numpy())


@pytest.mark.gpu
def test_gpu_random_collate_and_save():
    """Seeded randn/rand/randint/randperm/dropout on 'cuda' repeat, stay on the GPU and have
    the requested dtypes; collate keeps CUDA tensors there; save/load map them back."""
    def draw():
        dtrain.manual_seed(7)
        return [dtrain.randn(3, 4, device="cuda"), dtrain.rand(5, dtype=dtrain.float16, device="cuda"),
                dtrain.randint(0, 9, (6,), device="cuda"), dtrain.randperm(8, device="cuda"),
                F.dropout(dtrain.ones(100, device="cuda"), 0.5)]
    first, again = draw(), draw()
    for a, b in zip(first, again):
        assert a.device == "cuda:0"
        np.testing.assert_array_equal(a.cpu().numpy(), b.cpu().numpy())
    assert [t.dtype for t in first[:4]] == [dtrain.float32, dtrain.float16, dtrain.int64, dtrain.int64]
    assert sorted(first[3].tolist()) == list(range(8)) and set(first[4].tolist()) <= {0.0, 2.0}
    batch = dtrain.data.default_collate([(first[0][0], 1), (first[0][1], 2)])
    assert batch[0].device == "cuda:0" and batch[0].shape == (2, 4)


@pytest.mark.gpu
def test_gpu_save_load_map_location(tmp_path):
    """A CUDA tensor saves through the host and loads onto the CPU, or back onto 'cuda'."""
    x = dtrain.randn(3, device="cuda")
    dtrain.save({"x": x}, tmp_path / "x.pt")
    on_cpu = dtrain.load(tmp_path / "x.pt")["x"]
    on_gpu = dtrain.load(tmp_path / "x.pt", map_location="cuda")["x"]
    assert on_cpu.device == "cpu" and on_gpu.device == "cuda:0"
    np.testing.assert_array_equal(on_gpu.cpu().numpy(), x.cpu().numpy())
    np.testing.assert_array_equal(on_cpu.numpy(), x.cpu().numpy())
