"""The backward walk: accumulation, graph shapes, retain_graph, freeing, hooks, grad modes,
custom Functions, non-contiguous leaves, and gradcheck itself."""
import threading
import weakref

import numpy as np
import pytest

import dtrain
from helpers import compare, rand

linear = dtrain.nn.functional.linear


def leaf(*values):
    return dtrain.tensor(np.array(values, dtype=np.float64), requires_grad=True)


# ---- accumulation and graph shapes -----------------------------------------------------

def test_grads_accumulate_across_backward_calls():
    """A second backward adds to .grad; zeroing (grad = None) starts over."""
    x = leaf(1.0, 2.0)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    compare(x.grad, [2.0 + 3.0, 4.0 + 3.0])
    x.grad = None
    x.sum().backward()
    compare(x.grad, [1.0, 1.0])


def test_tensor_used_several_times():
    """y = x*x + x*3 + exp(x): every use of x contributes to x.grad."""
    x = leaf(0.5, -1.0)
    (x * x + x * 3 + x.exp()).sum().backward()
    a = np.array([0.5, -1.0])
    compare(x.grad, 2 * a + 3 + np.exp(a))


def test_diamond_graph():
    """x -> (a, b) -> a*b: the shared node gets the sum of both branches' gradients once."""
    x = leaf(2.0)
    h = x * x  # shared intermediate
    (h.exp() * h.sin()).sum().backward()
    hv = 4.0
    compare(x.grad, [(np.exp(hv) * np.sin(hv) + np.exp(hv) * np.cos(hv)) * 2 * 2.0])


def test_gradient_argument_and_leaf_root():
    """backward(gradient) seeds a non-scalar output; backward on a leaf gives the seed itself."""
    x = leaf(1.0, 2.0)
    (x * 3).backward(dtrain.tensor([1.0, 10.0], dtype=dtrain.float64))
    compare(x.grad, [3.0, 30.0])
    y = leaf(5.0)
    y.backward()
    compare(y.grad, [1.0])


def test_gradient_argument_takes_output_dtype():
    """A float64 `gradient` for a float32 output is cast to float32 (as PyTorch), so the
    backward pass stays float32."""
    x = dtrain.ones(2, requires_grad=True)
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(g.dtype))
    y.backward(dtrain.tensor([1.0, 3.0], dtype=dtrain.float64))
    assert seen == [dtrain.float32] and x.grad.dtype == dtrain.float32
    compare(x.grad, [2.0, 6.0])


def test_constant_branch_and_detach():
    """Branches through constants or detach() get no gradient."""
    x = leaf(1.0, 2.0)
    c = dtrain.tensor([3.0, 4.0], dtype=dtrain.float64)
    (x * c + x.detach() * x.detach()).sum().backward()
    compare(x.grad, [3.0, 4.0])
    assert c.grad is None


def test_non_leaf_grad_and_retain_grad():
    """Non-leaf .grad stays None unless retain_grad() was called."""
    x = leaf(1.0, 2.0)
    h = x * 2
    k = x * 3
    k.retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    compare(k.grad, [2.0, 4.0])


def test_retain_graph_allows_second_backward():
    """retain_graph=True keeps the saved arrays: a second backward gives the same grads again."""
    x = leaf(1.0, 2.0)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    compare(x.grad, 2 * first)


def test_backward_frees_the_graph():
    """After backward the graph no longer holds intermediate tensors (memory is released)."""
    x = leaf(1.0, 2.0)
    h = x * 2
    ref = weakref.ref(h)
    y = h.exp().sum()
    del h
    assert ref() is not None  # held by the graph
    y.backward()
    assert ref() is None


def test_free_graph_without_backward():
    """A graph that is never backwarded is freed with its output (no reference cycles)."""
    x = leaf(1.0, 2.0)
    h = x * 2
    ref = weakref.ref(h)
    y = h.exp().sum()
    del h, y
    assert ref() is None


# ---- hooks -----------------------------------------------------------------------------

def test_post_accumulate_grad_hook_fires_last_layer_first():
    """In a 3-layer MLP the last layer's post-accumulate hook fires during backward, with its
    .grad final, while the first layer's weight has no gradient yet (what DDP overlaps on)."""
    dtrain.manual_seed(0)
    ws = [dtrain.randn(4, 3, requires_grad=True), dtrain.randn(4, 4, requires_grad=True),
          dtrain.randn(2, 4, requires_grad=True)]
    bs = [dtrain.zeros(w.shape[0], requires_grad=True) for w in ws]
    seen = []

    def hook(p):
        seen.append((p is ws[2], p.grad is not None, ws[0].grad is None))

    ws[2].register_post_accumulate_grad_hook(hook)
    ws[0].register_post_accumulate_grad_hook(lambda p: seen.append(("first", p.grad is not None)))
    h = dtrain.randn(5, 3)
    for w, b in zip(ws, bs):
        h = linear(h, w, b).tanh()
    h.sum().backward()
    assert seen == [(True, True, True), ("first", True)]


def test_post_accumulate_hook_once_per_backward_and_remove():
    """The hook fires once per backward even when the leaf is used twice; remove() stops it."""
    w = leaf(1.0, 2.0)
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda p: calls.append(p.grad.numpy().copy()))
    (w * w + w).sum().backward()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], [3.0, 5.0])
    handle.remove()
    w.sum().backward()
    assert len(calls) == 1
    with pytest.raises(RuntimeError, match="post accumulate grad hooks cannot be registered on non-leaf tensors"):
        (w * 2).register_post_accumulate_grad_hook(lambda p: None)


def test_register_hook_replaces_gradient():
    """A tensor hook's return value replaces the gradient, on a leaf and on an intermediate;
    a hook returning None only observes; remove() detaches it."""
    x = leaf(1.0, 2.0)
    handle = x.register_hook(lambda g: g * 10)
    (x * 2).sum().backward()
    compare(x.grad, [20.0, 20.0])
    handle.remove()
    x.grad = None
    (x * 2).sum().backward()
    compare(x.grad, [2.0, 2.0])

    x.grad = None
    h = x * 3
    observed = []
    h.register_hook(lambda g: observed.append(g.numpy().copy()))
    h.register_hook(lambda g: g * 0 + 1)  # d(loss)/dh replaced by ones
    (h * h).sum().backward()
    np.testing.assert_allclose(observed[0], [6.0, 12.0])
    compare(x.grad, [3.0, 3.0])
    with pytest.raises(RuntimeError, match="cannot register a hook on a tensor that doesn't require gradient"):
        dtrain.zeros(2).register_hook(lambda g: g)


def test_hook_result_is_not_adopted_as_grad():
    """A tensor a hook returns (or keeps) is copied, not adopted as .grad: later accumulation
    into .grad must not write into the hook's tensor."""
    x = leaf(1.0, 2.0)
    replacement = dtrain.tensor([5.0, 5.0], dtype=dtrain.float64)
    kept = []
    for _ in range(2):
        h = x.clone()
        h.register_hook(lambda g: replacement)
        h2 = x * 1
        h2.register_hook(kept.append)
        (h * 1 + h2).sum().backward()
    compare(replacement, [5.0, 5.0])
    compare(x.grad, [12.0, 12.0])
    compare(kept[0], [1.0, 1.0])


def test_fresh_leaf_gradients_are_adopted_not_copied(monkeypatch):
    """Every weight and bias gradient of an MLP is a fresh array its backward made, held by one
    edge: the walk adopts each as .grad without a copy. (The walk used to record routed arrays
    by id and keep records of dead arrays, so a new gradient that reused a dead one's id looked
    routed twice and was copied: 3.2 MB per step for this first layer.)"""
    import importlib
    engine = importlib.import_module("dtrain.tensor.engine")
    adopted, accumulate = [], engine._accumulate

    def recording(leaf_tensor, g, owned):
        adopted.append((tuple(leaf_tensor.shape), owned))
        return accumulate(leaf_tensor, g, owned)

    monkeypatch.setattr(engine, "_accumulate", recording)
    dtrain.manual_seed(0)
    nn = dtrain.nn
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 10))
    x, y = dtrain.randn(64, 784), dtrain.zeros(64, dtype=dtrain.int64)
    for _ in range(3):  # later backwards accumulate into the adopted arrays (and reuse ids)
        dtrain.nn.functional.cross_entropy(model(x), y).backward()
    shapes = [(10, 1024), (10,), (1024, 784), (1024,)]
    assert adopted == [(shape, True) for shape in shapes] * 3
    for p in model.parameters():
        assert p.grad.array.base is None and p.grad.array is not p.array


def test_one_array_on_two_edges_is_copied_before_it_is_kept():
    """add's backward routes the same array to both inputs: neither leaf may adopt it, or the
    later accumulation into one .grad would write into the other's."""
    a, b = leaf(1.0, 2.0), leaf(3.0, 4.0)
    for _ in range(2):
        (a + b).sum().backward()
    assert a.grad.array is not b.grad.array
    a.grad.array[...] += 10
    compare(b.grad, [2.0, 2.0])
    compare(a.grad, [12.0, 12.0])


# A pass-through backward (Add: (g, g)) routes one array to two leaves: neither may adopt it
# (the walk counts a node's edges before routing any of them)

def test_two_leaves_never_adopt_one_array():
    a = dtrain.ones(3, requires_grad=True)
    b = dtrain.ones(3, requires_grad=True)
    ((a + b) * 2).sum().backward()  # Mul's backward makes a fresh array; Add passes it to both leaves
    assert a.grad.array is not b.grad.array
    (a * 3 + b * 5).sum().backward()  # accumulates in place into each .grad
    np.testing.assert_array_equal(a.grad.numpy(), [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(b.grad.numpy(), [7.0, 7.0, 7.0])


def test_scalar_leaves_added_at_the_root():
    a = dtrain.tensor(1.0, requires_grad=True)
    b = dtrain.tensor(2.0, requires_grad=True)
    (a + b).backward()  # the seed itself is passed to both leaves
    (a * 3 + b * 5).backward()
    assert (float(a.grad), float(b.grad)) == (4.0, 6.0)


def test_a_gradient_a_retained_node_keeps_is_copied_not_adopted():
    """Under retain_graph a node lives on with what it holds: a backward that returns an array it
    kept must not have that array adopted as .grad (the next backward's accumulation into .grad
    would change what the node returns)."""
    from dtrain.autograd import Function

    class Loss(Function):
        def forward(self, w, target):
            diff = w - target
            self.grad = diff * 2  # kept, and returned as the gradient
            return (diff * diff).sum()

        def backward(self, g):
            return self.grad, None

    w = dtrain.tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = Loss.apply(w, np.zeros(2))
    for k in range(1, 4):
        loss.backward(retain_graph=True)
        compare(w.grad, [2.0 * k, 4.0 * k])


# ---- grad modes ------------------------------------------------------------------------

def test_no_grad_enable_grad_set_grad_enabled():
    """no_grad stops recording; enable_grad turns it back on inside; set_grad_enabled works as
    a call, a context manager and a decorator; modes restore on exit."""
    x = leaf(1.0)
    with dtrain.no_grad():
        assert not (x * 2).requires_grad and not dtrain.is_grad_enabled()
        with dtrain.enable_grad():
            assert (x * 2).requires_grad
    assert dtrain.is_grad_enabled()
    with dtrain.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad

    @dtrain.no_grad()
    def f():
        return x * 2

    @dtrain.no_grad
    def g():
        return x * 2

    @dtrain.set_grad_enabled(False)
    def h():
        return x * 2

    assert dtrain.is_grad_enabled()  # decorating switched nothing
    assert not f().requires_grad and not g().requires_grad and not h().requires_grad
    assert dtrain.is_grad_enabled()
    dtrain.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        dtrain.set_grad_enabled(True)


def test_grad_mode_is_per_thread():
    """no_grad in one thread does not switch recording off in another."""
    inside = threading.Event()
    release = threading.Event()

    def worker():
        with dtrain.no_grad():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    try:
        assert dtrain.is_grad_enabled() and (leaf(1.0) * 2).requires_grad
    finally:
        release.set()
        t.join()


# ---- custom Functions ------------------------------------------------------------------

class Cube(dtrain.autograd.Function):
    def forward(self, a, scale=1.0):
        self.a, self.scale = a, scale
        return scale * a ** 3

    def backward(self, g):
        return g * self.scale * 3 * self.a ** 2


class WrongCube(Cube):
    def backward(self, g):
        return g * 2 * self.a ** 2  # deliberately wrong


def test_custom_function_and_gradcheck():
    """A user Function works with apply(); gradcheck accepts its correct backward."""
    x = leaf(0.5, -1.5)
    assert dtrain.autograd.gradcheck(lambda t: Cube.apply(t, scale=2.0), (x,))
    Cube.apply(x, scale=2.0).sum().backward()
    compare(x.grad, 6 * np.array([0.5, -1.5]) ** 2)


def test_gradcheck_catches_wrong_backward():
    """gradcheck raises (or returns False) when backward disagrees with finite differences."""
    x = leaf(0.5, -1.5)
    with pytest.raises(dtrain.autograd.GradcheckError, match="Jacobian mismatch for output 0 with respect to input 0"):
        dtrain.autograd.gradcheck(WrongCube.apply, (x,))
    assert dtrain.autograd.gradcheck(WrongCube.apply, (x,), raise_exception=False) is False


def test_gradcheck_catches_missing_gradient():
    """A backward that returns None for an input the output depends on is caught."""
    class DropsB(dtrain.autograd.Function):
        def forward(self, a, b):
            self.b = b
            return a * b

        def backward(self, g):
            return g * self.b, None

    a, b = leaf(1.0, 2.0), leaf(3.0, 4.0)
    with pytest.raises(dtrain.autograd.GradcheckError, match="with respect to input 1"):
        dtrain.autograd.gradcheck(DropsB.apply, (a, b))


def test_gradcheck_checks_every_output_and_input():
    """Tuple outputs: each output is checked against each input."""
    a, b = leaf(1.0, 2.0), leaf(0.5, 3.0)
    assert dtrain.autograd.gradcheck(lambda x, y: (x * y, (x - y).exp()), (a, b))


def test_gradcheck_argument_errors():
    """gradcheck needs float64 inputs and at least one that requires grad."""
    with pytest.raises(ValueError, match="input 0 is float32; finite differences need float64"):
        dtrain.autograd.gradcheck(lambda t: t * 2, (dtrain.zeros(2, requires_grad=True),))
    with pytest.raises(ValueError, match="at least one input tensor must require grad"):
        dtrain.autograd.gradcheck(lambda t: t * 2, (dtrain.zeros(2, dtype=dtrain.float64),))


# ---- non-contiguous leaves -------------------------------------------------------------

STRIDED = [
    ("unary", lambda a: (a.exp() * a.sin()).sum()),
    ("binary_broadcast", lambda a: (a * a[:1] - 2 / (a * a + 1)).sum()),
    ("reduce", lambda a: a.sum(0).prod() + a.amax(1).sum() + a.var(1).sum()),
    ("matmul", lambda a: (a @ a.t()).tanh().sum()),
    ("shape", lambda a: a.t().reshape(-1)[::2].sum() + a.permute(1, 0).flatten()[1]),
    ("index", lambda a: a[[0, 0, 1], 1:].sum() + a[a > 0].sum()),
    ("cat", lambda a: dtrain.cat([a, a * 2], 1).logsumexp(1).sum()),
]
VIEWS = [
    ("transposed", lambda big: big[:3, :2].T),
    ("sliced_step", lambda big: big[::2, 1::2]),
]


@pytest.mark.parametrize("fn", [c[1] for c in STRIDED], ids=[c[0] for c in STRIDED])
@pytest.mark.parametrize("view", [c[1] for c in VIEWS], ids=[c[0] for c in VIEWS])
def test_non_contiguous_leaf(fn, view):
    """A leaf made from a transposed or strided NumPy view gives the same value and gradient
    as a contiguous copy, and passes gradcheck."""
    arr = view(rand(5, 6))
    assert not arr.flags.c_contiguous
    x = dtrain.from_numpy(arr).requires_grad_()
    y = dtrain.from_numpy(np.ascontiguousarray(arr)).requires_grad_()
    out_x, out_y = fn(x), fn(y)
    compare(out_x, out_y.detach().numpy())
    out_x.backward()
    out_y.backward()
    compare(x.grad, y.grad.numpy())
    assert x.grad.shape == x.shape
    x.grad = None
    assert dtrain.autograd.gradcheck(fn, (x,))
