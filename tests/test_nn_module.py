"""Module, Parameter, containers, state_dict and nn.utils, against PyTorch's behaviour."""
import copy
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn


def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


class ConvNet(nn.Module):
    """The same architecture is built in torch by ``_torch_convnet``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.heads = nn.ModuleList([nn.Linear(16, 5), nn.Linear(16, 5)])
        self.norm = nn.LayerNorm(5)
        self.drop = nn.Dropout(0.25)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.drop(self.norm(self.heads[0](x) + self.heads[1](x)))


def _torch_convnet():
    tnn = pytest.importorskip("torch").nn

    class ConvNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(),
                                           tnn.MaxPool2d(2))
            self.heads = tnn.ModuleList([tnn.Linear(16, 5), tnn.Linear(16, 5)])
            self.norm = tnn.LayerNorm(5)
            self.drop = tnn.Dropout(0.25)
    return ConvNet()


# ---- Parameter ---------------------------------------------------------------------------

def test_parameter_is_a_leaf_tensor_sharing_storage():
    """A Parameter is a Tensor, a leaf requiring grad, and shares storage with its data."""
    t = dtrain.zeros(2, 3)
    p = nn.Parameter(t)
    assert isinstance(p, dtrain.Tensor) and p.is_leaf and p.requires_grad
    t.array[0, 0] = 5.0
    assert p.array[0, 0] == 5.0
    assert not nn.Parameter(dtrain.zeros(2), requires_grad=False).requires_grad
    assert tuple(nn.Parameter().shape) == (0,)


def test_ops_on_parameters_give_plain_tensors():
    """Results of ops, detach() and .data are plain Tensors, not Parameters."""
    p = nn.Parameter(dtrain.ones(3))
    for out in (p * 2, p + p, p.sum(), p.detach(), p.data, p[0]):
        assert type(out) is dtrain.Tensor


def test_parameter_repr_matches_torch_layout():
    """repr is "Parameter containing:" then the tensor's repr, as in PyTorch."""
    p = nn.Parameter(dtrain.tensor([1.0, 2.0]))
    assert repr(p) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"


def test_parameter_requires_tensor_data():
    """Parameter of a non-Tensor is a TypeError naming the type."""
    with pytest.raises(TypeError, match="must be a Tensor, got list"):
        nn.Parameter([1.0, 2.0])


def test_parameter_deepcopy_and_pickle():
    """deepcopy and pickle give an independent Parameter with the same values and flag."""
    p = nn.Parameter(dtrain.tensor([1.0, 2.0]), requires_grad=False)
    for q in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert isinstance(q, nn.Parameter) and not q.requires_grad
        np.testing.assert_array_equal(q.numpy(), [1.0, 2.0])
        q.array[0] = 9.0
        assert p.array[0] == 1.0


# ---- registration --------------------------------------------------------------------------

def test_attribute_assignment_registers_members():
    """Assigning a Parameter, a Module or (for a registered name) a buffer registers it."""
    m = nn.Module()
    m.w = nn.Parameter(dtrain.ones(2))
    m.child = nn.Linear(2, 2)
    m.register_buffer("stat", dtrain.zeros(2))
    m.plain = dtrain.ones(1)  # a Tensor that is not a Parameter is a plain attribute
    assert list(m._parameters) == ["w"] and list(m._modules) == ["child"] and list(m._buffers) == ["stat"]
    assert m.w is m._parameters["w"] and m.child is m._modules["child"]
    m.stat = dtrain.ones(2)
    assert m._buffers["stat"] is m.stat
    m.w = None
    assert m._parameters["w"] is None and [n for n, _ in m.named_parameters()] == ["child.weight", "child.bias"]


def test_reassigning_a_name_as_another_kind_moves_it():
    """A name first set as a plain attribute, then a Module, is a child module only."""
    m = nn.Module()
    m.x = 3
    m.x = nn.Linear(1, 1)
    assert "x" not in m.__dict__ and "x" in m._modules
    del m.x
    assert "x" not in m._modules and not hasattr(m, "x")


def test_assignment_type_errors():
    """A non-Parameter in a parameter slot, or a non-Module in a module slot, is a TypeError."""
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'weight'"):
        m.weight = dtrain.ones(2, 2)
    s = nn.Sequential(nn.ReLU())
    with pytest.raises(TypeError, match="as child module '0'"):
        setattr(s, "0", 5)
    with pytest.raises(TypeError, match="cannot assign 'int' object to buffer 'b'"):
        m.register_buffer("b", 3)
    with pytest.raises(KeyError, match="attribute 'weight' already exists"):
        m.register_buffer("weight", dtrain.zeros(1))
    with pytest.raises(KeyError, match="module name can.*contain"):
        m.add_module("a.b", nn.ReLU())
    with pytest.raises(TypeError, match="int is not a Module subclass"):
        m.add_module("c", 3)


def test_non_leaf_parameter_rejected():
    """register_parameter refuses a non-leaf (a Parameter built from a graph node)."""
    m = nn.Module()
    p = nn.Parameter(dtrain.ones(2))
    p.grad_fn = (p * 2).grad_fn  # simulate a non-leaf
    with pytest.raises(ValueError, match="Cannot assign non-leaf Tensor to parameter 'w'"):
        m.register_parameter("w", p)


def test_assign_before_init_is_a_clear_error():
    """Assigning a Parameter before super().__init__() says so."""
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(dtrain.ones(1))
    with pytest.raises(AttributeError, match="before Module.__init__"):
        Bad()


def test_missing_attribute_error_names_the_class():
    """A missing attribute is an AttributeError naming the class, as in PyTorch."""
    with pytest.raises(AttributeError, match="'Linear' object has no attribute 'wieght'"):
        nn.Linear(1, 1).wieght


def test_missing_forward():
    """A Module without forward says it is missing."""
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(1)


# ---- walking the tree ------------------------------------------------------------------------

def test_named_parameters_and_buffers_match_torch():
    """named_parameters / named_buffers / named_modules names and order equal PyTorch's."""
    ours, theirs = ConvNet(), _torch_convnet()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]


def test_shared_parameters_and_modules_listed_once():
    """A parameter (or module) reachable twice is yielded once; recurse=False stays local."""
    lin = nn.Linear(3, 3)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(net.parameters())) == 2
    assert len(list(net.modules())) == 3
    assert list(net.parameters(recurse=False)) == []
    tied = nn.Module()
    tied.a = nn.Linear(2, 2)
    tied.b = nn.Linear(2, 2)
    tied.b.weight = tied.a.weight
    assert [n for n, _ in tied.named_parameters()] == ["a.weight", "a.bias", "b.bias"]


def test_prefix_and_get_submodule_parameter_buffer():
    """Dotted names resolve both ways; a wrong path names the missing attribute."""
    net = ConvNet()
    assert [n for n, _ in net.features.named_parameters(prefix="f")][:2] == ["f.0.weight", "f.0.bias"]
    assert net.get_submodule("features.1") is net.features[1]
    assert net.get_parameter("heads.1.bias") is net.heads[1].bias
    assert net.get_buffer("features.1.running_var") is net.features[1].running_var
    with pytest.raises(AttributeError, match="Sequential has no attribute `9`"):
        net.get_submodule("features.9")
    with pytest.raises(AttributeError, match="`eps` is not an nn.Module"):
        net.get_submodule("norm.eps")
    with pytest.raises(AttributeError, match="`eps` is not an nn.Parameter"):
        net.get_parameter("norm.eps")


def test_dir_lists_members():
    """dir(module) includes parameters, buffers and children."""
    names = dir(ConvNet())
    assert {"features", "heads", "forward"} <= set(names)
    assert {"weight", "running_mean"} <= set(dir(nn.BatchNorm1d(2)))


def test_train_eval_recurse():
    """train()/eval() set ``training`` on every submodule; a non-bool mode is refused."""
    net = ConvNet().eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="boolean"):
        net.train("no")


def test_apply_visits_children_first():
    """apply(fn) calls fn on every submodule, children before parents, and returns self."""
    seen = []
    net = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.ReLU()))
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Linear", "ReLU", "Sequential", "Sequential"]


def test_requires_grad_and_zero_grad():
    """requires_grad_(False) freezes every parameter; zero_grad resets grads to None or zeros."""
    net = _mlp()
    net(dtrain.randn(2, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(float(abs(p.grad).sum()) == 0 for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


# ---- hooks -------------------------------------------------------------------------------------

def test_forward_hooks_modify_and_remove():
    """A pre hook may replace the input, a forward hook the output; removed hooks stop."""
    lin = nn.Linear(2, 2)
    calls = []
    h1 = lin.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    h2 = lin.register_forward_hook(lambda m, args, out: calls.append(m) or out + 1)
    out = lin(dtrain.ones(1, 2))
    np.testing.assert_allclose(out.detach().numpy(), lin.bias.detach().numpy()[None] + 1, rtol=1e-6)
    assert calls == [lin]
    h1.remove()
    h2.remove()
    np.testing.assert_allclose(lin(dtrain.zeros(1, 2)).detach().numpy(), lin.bias.detach().numpy()[None])
    assert calls == [lin]


def test_prepended_hook_runs_first():
    """prepend=True puts a hook before those already registered."""
    order = []
    m = nn.Identity()
    m.register_forward_hook(lambda *a: order.append("a"))
    m.register_forward_hook(lambda *a: order.append("b"), prepend=True)
    m(1)
    assert order == ["b", "a"]


# ---- devices and dtypes --------------------------------------------------------------------------

def test_to_dtype_is_in_place_and_skips_integer_buffers():
    """to(float64) converts parameters in place (same objects), grads and float buffers,
    not integer buffers; an integer dtype is refused."""
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    params = list(net.parameters())
    net[0](dtrain.randn(3, 2)).sum().backward()
    assert net.double() is net
    assert all(p is q for p, q in zip(params, net.parameters()))
    assert all(p.dtype == dtrain.float64 for p in params)
    assert net[0].weight.grad.dtype == dtrain.float64
    assert net[1].running_mean.dtype == dtrain.float64
    assert net[1].num_batches_tracked.dtype == dtrain.int64
    assert net.float()[0].weight.dtype == dtrain.float32
    with pytest.raises(TypeError, match="only accepts floating point"):
        net.to(dtrain.int64)


def test_to_cpu_and_missing_cuda():
    """to('cpu') is a no-op on CPU; cuda() without a GPU is a clear error."""
    net = _mlp()
    assert net.to("cpu") is net and net.cpu() is net
    if not dtrain.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            net.cuda()


# ---- state dict ------------------------------------------------------------------------------------

def test_state_dict_keys_match_torch():
    """state_dict keys (incl. BatchNorm buffers and num_batches_tracked) and shapes equal PyTorch's."""
    ours, theirs = ConvNet(), _torch_convnet()
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == list(tsd)
    assert [tuple(v.shape) for v in sd.values()] == [tuple(v.shape) for v in tsd.values()]
    assert sd["features.1.num_batches_tracked"].dtype == dtrain.int64


def test_state_dict_values_are_detached_and_shared():
    """Values are detached (no grad) and share storage; keep_vars returns the Parameters."""
    lin = nn.Linear(2, 2)
    sd = lin.state_dict()
    assert not sd["weight"].requires_grad and type(sd["weight"]) is dtrain.Tensor
    assert np.shares_memory(sd["weight"].array, lin.weight.array)
    assert lin.state_dict(keep_vars=True)["weight"] is lin.weight


def test_non_persistent_buffer_not_in_state_dict():
    """register_buffer(persistent=False) keeps the buffer out of state_dict but in buffers()."""
    m = nn.Module()
    m.register_buffer("a", dtrain.zeros(1))
    m.register_buffer("b", dtrain.zeros(1), persistent=False)
    assert list(m.state_dict()) == ["a"] and len(list(m.buffers())) == 2


def test_state_dict_round_trip_in_place():
    """load_state_dict copies values into the existing parameters (same objects), so an
    optimizer holding them sees the loaded values; the outputs then agree."""
    a, b = _mlp(), _mlp()
    params = list(b.parameters())
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    assert all(p is q for p, q in zip(params, b.parameters()))
    x = dtrain.randn(5, 4)
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())
    b(x).sum().backward()  # still trainable leaves
    assert all(p.grad is not None for p in params)


def test_load_converts_dtype_and_accepts_arrays():
    """Values are cast to the parameter's dtype; numpy arrays are accepted as values."""
    lin = nn.Linear(2, 1)
    lin.load_state_dict({"weight": np.array([[1.0, 2.0]]), "bias": dtrain.tensor([3.0], dtype=dtrain.float64)})
    assert lin.weight.dtype == dtrain.float32
    np.testing.assert_array_equal(lin(dtrain.ones(1, 2)).detach().numpy(), [[6.0]])


def test_load_state_dict_lists_every_problem_in_one_error():
    """Missing, unexpected and mis-shaped keys all appear in one RuntimeError, in
    PyTorch's format; strict=False reports missing/unexpected keys without raising."""
    net = _mlp()
    sd = net.state_dict()
    del sd["2.bias"]
    sd["extra.weight"] = dtrain.zeros(1)
    sd["0.weight"] = dtrain.zeros(7, 4)
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    assert msg.startswith("Error(s) in loading state_dict for Sequential:\n\t")
    assert 'Missing key(s) in state_dict: "2.bias". ' in msg
    assert 'Unexpected key(s) in state_dict: "extra.weight". ' in msg
    assert ("size mismatch for 0.weight: copying a param with shape dtrain.Size([7, 4]) from checkpoint, "
            "the shape in current model is dtrain.Size([8, 4]).") in msg
    del sd["0.weight"]
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["0.weight", "2.bias"] and result.unexpected_keys == ["extra.weight"]


def test_load_state_dict_error_format_matches_torch():
    """The same bad state dict gives the same message as PyTorch (up to torch.Size/dtrain.Size)."""
    torch = pytest.importorskip("torch")
    ours, theirs = _mlp(), torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    tsd = theirs.state_dict()
    del tsd["0.bias"]
    tsd["0.weight"] = torch.zeros(2, 2)
    tsd["zzz"] = torch.zeros(1)
    sd = {k: dtrain.tensor(v.numpy()) for k, v in tsd.items()}
    with pytest.raises(RuntimeError) as ours_e:
        ours.load_state_dict(sd)
    with pytest.raises(RuntimeError) as theirs_e:
        theirs.load_state_dict(tsd)
    assert str(ours_e.value).replace("dtrain.Size", "torch.Size") == str(theirs_e.value)


def test_load_torch_state_dict_gives_same_outputs():
    """An MLP loaded from a torch state dict (numpy arrays wrapped in dtrain tensors)
    computes the same outputs as the torch model."""
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    ours = _mlp().double()
    ours.load_state_dict({k: dtrain.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((6, 4))
    np.testing.assert_allclose(ours(dtrain.tensor(x)).detach().numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)


def test_batchnorm_num_batches_tracked_may_be_absent():
    """As PyTorch for a state dict without version metadata, a missing
    num_batches_tracked is not an error."""
    bn = nn.BatchNorm1d(3)
    sd = bn.state_dict()
    del sd["num_batches_tracked"]
    assert bn.load_state_dict(sd).missing_keys == []


def test_deepcopy_module_is_independent():
    """copy.deepcopy of a model gives equal but independent parameters."""
    a = _mlp()
    b = copy.deepcopy(a)
    with dtrain.no_grad():
        b[0].weight.fill_(0.0)
    assert float(abs(a[0].weight).sum()) > 0
    assert isinstance(b[0].weight, nn.Parameter)


# ---- repr ----------------------------------------------------------------------------------------

def test_repr_matches_torch():
    """The printed tree of a model equals PyTorch's string, incl. ModuleList's run-length form."""
    torch = pytest.importorskip("torch")
    assert repr(ConvNet()) == repr(_torch_convnet())
    ours = nn.Sequential(OrderedDict(fc=nn.Linear(3, 4, bias=False), act=nn.GELU(), emb=nn.Embedding(10, 3, 0),
                                     blocks=nn.ModuleList([nn.Linear(2, 2) for _ in range(3)] + [nn.Tanh()]),
                                     d=nn.ModuleDict({"a": nn.LeakyReLU(0.2), "b": nn.Softmax(dim=1)})))
    tnn = torch.nn
    theirs = tnn.Sequential(OrderedDict(fc=tnn.Linear(3, 4, bias=False), act=tnn.GELU(), emb=tnn.Embedding(10, 3, 0),
                                        blocks=tnn.ModuleList([tnn.Linear(2, 2) for _ in range(3)] + [tnn.Tanh()]),
                                        d=tnn.ModuleDict({"a": tnn.LeakyReLU(0.2), "b": tnn.Softmax(dim=1)})))
    assert repr(ours) == repr(theirs)


# ---- containers ----------------------------------------------------------------------------------

def test_sequential_indexing_slicing_and_growth():
    """Sequential: int (incl. negative) indexing, slices are Sequentials of the same modules,
    len, iteration, append, insert, delete (renumbering), OrderedDict names."""
    a, b, c = nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)
    s = nn.Sequential(a, b)
    s.append(c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c] and list(sub._modules) == ["1", "2"]
    s.insert(1, nn.Identity())
    assert isinstance(s[1], nn.Identity) and s[3] is c
    del s[1]
    assert list(s._modules) == ["0", "1", "2"] and s[2] is c
    with pytest.raises(IndexError, match="index 3 is out of range"):
        s[3]
    named = nn.Sequential(OrderedDict(first=a, second=b))
    assert named.first is a and list(named.state_dict()) == ["first.weight", "first.bias"]
    assert tuple(s(dtrain.randn(4, 2)).shape) == (4, 1)


def test_module_list_operations():
    """ModuleList: append/extend/insert, indexing, slicing, len, iteration, registration."""
    layers = nn.ModuleList([nn.Linear(2, 2)])
    layers.append(nn.Linear(2, 3))
    layers.extend([nn.ReLU(), nn.Tanh()])
    layers.insert(0, nn.Identity())
    assert len(layers) == 5 and isinstance(layers[0], nn.Identity) and isinstance(layers[-1], nn.Tanh)
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    assert [type(m).__name__ for m in layers] == ["Identity", "Linear", "Linear", "ReLU", "Tanh"]
    assert len(list(layers.parameters())) == 4
    with pytest.raises(TypeError, match="should be called with an iterable"):
        layers.extend(5)
    del layers[0]
    assert list(layers._modules) == ["0", "1", "2", "3"]


def test_module_dict_operations():
    """ModuleDict: mapping access in insertion order, update, pop, membership."""
    d = nn.ModuleDict({"a": nn.Linear(1, 1)})
    d["b"] = nn.ReLU()
    d.update([("c", nn.Tanh())])
    assert list(d) == ["a", "b", "c"] and "b" in d and len(d) == 3
    assert isinstance(d.pop("b"), nn.ReLU) and list(d.keys()) == ["a", "c"]
    assert [n for n, _ in d.named_parameters()] == ["a.weight", "a.bias"]


# ---- nn.utils --------------------------------------------------------------------------------------

def _grads_model():
    rng = np.random.default_rng(1)
    shapes = [(4, 3), (3,), (2, 2)]
    values = [rng.standard_normal(s) * 3 for s in shapes]
    grads = [rng.standard_normal(s) * 2 for s in shapes]
    ours = []
    for v, g in zip(values, grads):
        p = nn.Parameter(dtrain.tensor(v))
        p.grad = dtrain.tensor(g)
        ours.append(p)
    return ours, grads


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_against_numpy_and_torch(norm_type):
    """clip_grad_norm_ returns the total norm of all grads and scales them to max_norm, as PyTorch."""
    ours, grads = _grads_model()
    flat = np.concatenate([g.ravel() for g in grads])
    expected = np.abs(flat).max() if norm_type == math.inf else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    total = nn.utils.clip_grad_norm_(ours, max_norm=1.5, norm_type=norm_type)
    assert isinstance(total, dtrain.Tensor)
    np.testing.assert_allclose(float(total), expected, rtol=1e-12)
    for p, g in zip(ours, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * 1.5 / (expected + 1e-6), rtol=1e-12)
    torch = pytest.importorskip("torch")
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(tparams, grads):
        t.grad = torch.tensor(g)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm=1.5, norm_type=norm_type)
    np.testing.assert_allclose(float(total), float(ttotal), rtol=1e-12)
    for p, t in zip(ours, tparams):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_leaves_small_grads_and_checks_finite():
    """Grads already within max_norm are unchanged; a non-finite norm raises on request."""
    ours, grads = _grads_model()
    nn.utils.clip_grad_norm_(ours, max_norm=1e6)
    for p, g in zip(ours, grads):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-12)
    ours[0].grad.array[0, 0] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    assert float(nn.utils.clip_grad_norm_([nn.Parameter(dtrain.ones(1))], 1.0)) == 0.0  # no grads


def test_clip_grad_value():
    """clip_grad_value_ clamps every gradient into [-v, v] in place."""
    ours, grads = _grads_model()
    nn.utils.clip_grad_value_(ours, 0.5)
    for p, g in zip(ours, grads):
        np.testing.assert_array_equal(p.grad.numpy(), np.clip(g, -0.5, 0.5))


def test_parameters_to_vector_round_trip():
    """parameters_to_vector concatenates in order; vector_to_parameters writes back (and
    the parameters then view the vector); a wrong length is refused naming both sizes."""
    net = _mlp()
    vec = nn.utils.parameters_to_vector(net.parameters())
    expected = np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])
    np.testing.assert_array_equal(vec.detach().numpy(), expected)
    new = dtrain.arange(vec.numel(), dtype=dtrain.float32)
    nn.utils.vector_to_parameters(new, net.parameters())
    np.testing.assert_array_equal(nn.utils.parameters_to_vector(net.parameters()).detach().numpy(), new.numpy())
    np.testing.assert_array_equal(net[0].bias.detach().numpy(), np.arange(32, 40))
    with pytest.raises(ValueError, match=f"hold {vec.numel()} elements"):
        nn.utils.vector_to_parameters(dtrain.zeros(3), net.parameters())
    with pytest.raises(TypeError, match="expected dtrain.Tensor"):
        nn.utils.vector_to_parameters(np.zeros(3), net.parameters())


# ---- reassignment keeps the order; int devices ------------------------------------------------

class _Three(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Linear(2, 2)


def _orders(m):
    return ([n for n, _ in m.named_children()], list(m.state_dict()), [n for n, _ in m.named_parameters()])


def test_reassigned_submodule_and_parameter_keep_their_place():
    """Reassigning a child module (m.conv1 = Conv2d(...)) or a parameter (lin.weight =
    Parameter(...)) replaces it in place: children(), state_dict() and parameters() keep
    PyTorch's order, with the new object in the old slot."""
    m = _Three()
    before = _orders(m)
    new_conv = nn.Conv2d(1, 2, 5)
    m.conv1 = new_conv
    new_weight = nn.Parameter(dtrain.zeros(2, 2))
    m.fc.weight = new_weight
    assert _orders(m) == before == (["conv1", "conv2", "fc"],
                                    ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight",
                                     "fc.bias"],
                                    ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight",
                                     "fc.bias"])
    assert next(m.children()) is new_conv and list(m.fc.parameters())[0] is new_weight
    torch = pytest.importorskip("torch")
    t = torch.nn.Module()
    t.conv1, t.conv2, t.fc = torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 2, 3), torch.nn.Linear(2, 2)
    t.conv1 = torch.nn.Conv2d(1, 2, 5)
    t.fc.weight = torch.nn.Parameter(torch.zeros(2, 2))
    assert _orders(t) == before


@pytest.mark.parametrize("move", [lambda m: m.to(0), lambda m: m.to(device=0), lambda m: m.cuda(0),
                                  lambda m: m.to("cuda:0"), lambda m: m.to(0, dtrain.float64)],
                         ids=["to(0)", "to(device=0)", "cuda(0)", "to('cuda:0')", "to(0, float64)"])
def test_int_device_is_a_cuda_index(move):
    """An int passed to Module.to / cuda is CUDA device index, as in PyTorch: it moves the
    module to cuda:N, or, without a GPU, fails saying no CUDA device is there (not that 0 is
    no dtype)."""
    net = _mlp()
    if dtrain.cuda.is_available():
        assert move(net) is net
        assert all(p.device == dtrain.device("cuda:0") for p in net.parameters())
    else:
        with pytest.raises(RuntimeError, match=r"cuda:0 requested but (CuPy is not installed|only 0 CUDA device)"):
            move(net)


def test_negative_device_index_is_refused():
    """A negative int device is an error naming the index."""
    with pytest.raises(ValueError, match="device index must not be negative, got -1"):
        _mlp().to(-1)
