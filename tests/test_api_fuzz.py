"""Bad input across the public API: random shapes, dims, dtypes and arguments.

Every call either works (when NumPy or PyTorch's documented rules say the input is valid)
or raises a dtrain error: a RuntimeError / ValueError / TypeError / IndexError (or a
subclass) with a non-empty message, raised by dtrain's own code (the traceback's last
frame is inside the dtrain package, not NumPy's) and within a time limit (never a hang).
"""
import io
import math
import os
import signal
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dtrain
import dtrain.nn as nn
import dtrain.nn.functional as F
import dtrain.optim as optim
from dtrain.data import DataLoader, DistributedSampler, TensorDataset

DTRAIN_DIR = os.path.dirname(os.path.abspath(dtrain.__file__)) + os.sep
ERRORS = (RuntimeError, ValueError, TypeError, IndexError)
LIMIT_S = 5  # one call; anything slower counts as a hang
# DTRAIN_FUZZ_EXAMPLES=1000 fuzzes longer (the default keeps the file at a few seconds)
FUZZ = settings(max_examples=int(os.environ.get("DTRAIN_FUZZ_EXAMPLES", 40)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
dims = st.integers(-6, 6)


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so dtrain cannot swallow it."""


def _alarm(signum, frame):
    raise Hang()


def call(what, fn, *args, **kwargs):
    """Run ``fn``; return None if it worked, or the dtrain error it raised. Fails the test
    on a hang, a non-dtrain exception type, an empty message or an error raised outside dtrain."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, LIMIT_S)
    try:
        fn(*args, **kwargs)
    except Hang:
        pytest.fail(f"{what}: no result after {LIMIT_S} s (a hang)")
    except ERRORS as e:
        frames = traceback.extract_tb(e.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}"
        assert frames[-1].filename.startswith(DTRAIN_DIR), \
            f"{what}: {type(e).__name__}: {e} raised outside dtrain, at {where}"
        assert str(e).strip(), f"{what}: {type(e).__name__} with an empty message, at {where}"
        return e
    except Exception as e:  # noqa: BLE001 - the point: anything else is a bug
        pytest.fail(f"{what}: raised {type(e).__name__}: {e} (not a dtrain error type)\n{traceback.format_exc()}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return None


def expect(what, valid, fn, *args, **kwargs):
    """``fn`` works if ``valid``, else raises a dtrain error."""
    error = call(what, fn, *args, **kwargs)
    if valid:
        assert error is None, f"{what}: valid input refused: {type(error).__name__}: {error}"
    else:
        assert error is not None, f"{what}: invalid input accepted"


def numpy_ok(fn):
    """Whether NumPy accepts the same call (the oracle for shape rules)."""
    try:
        fn()
    except (ValueError, IndexError, TypeError, np.exceptions.AxisError):
        return False
    return True


def t(shape, dtype=np.float64):
    return dtrain.tensor(np.ones(shape, dtype))


@FUZZ
@given(op=st.sampled_from(["add", "sub", "mul", "div", "maximum", "minimum", "pow", "eq", "lt"]), a=shapes, b=shapes)
def test_binary_ops_broadcast(op, a, b):
    """Elementwise binary ops work on broadcastable shapes and raise a dtrain error otherwise."""
    expect(f"dtrain.{op}({a}, {b})", numpy_ok(lambda: np.broadcast_shapes(a, b)), getattr(dtrain, op), t(a), t(b))


@FUZZ
@given(op=st.sampled_from(["matmul", "mm", "bmm", "dot", "outer"]), a=shapes, b=shapes)
def test_matrix_products(op, a, b):
    """matmul and friends raise a dtrain error on shapes their rules reject."""
    rank_ok = {"matmul": len(a) >= 1 and len(b) >= 1, "mm": len(a) == len(b) == 2,
               "bmm": len(a) == len(b) == 3 and a[0] == b[0], "dot": len(a) == len(b) == 1,
               "outer": len(a) == len(b) == 1}[op]
    np_fn = np.outer if op == "outer" else np.matmul
    valid = rank_ok and numpy_ok(lambda: np_fn(np.ones(a), np.ones(b)))
    expect(f"dtrain.{op}({a}, {b})", valid, getattr(dtrain, op), t(a), t(b))


@FUZZ
@given(a=shapes, target=st.lists(st.integers(-2, 5), max_size=4).map(tuple),
       method=st.sampled_from(["reshape", "view"]))
def test_reshape(a, target, method):
    """reshape/view to a shape of another size, or with bad -1s, raises a dtrain error."""
    valid = all(d >= -1 for d in target) and numpy_ok(lambda: np.ones(a).reshape(target))
    expect(f"Tensor.{method}({a} -> {target})", valid, getattr(t(a), method), target)


@FUZZ
@given(a=shapes, dim=dims, op=st.sampled_from(["sum", "mean", "amax", "argmax", "softmax", "logsumexp", "cumsum",
                                               "var", "unsqueeze", "squeeze", "flip", "transpose"]))
def test_dim_arguments(a, dim, op):
    """A dim outside [-ndim, ndim) (or [-ndim-1, ndim] for unsqueeze) raises a dtrain error."""
    n = len(a) + 1 if op == "unsqueeze" else max(len(a), 1)  # a 0-d tensor takes dim 0 and -1
    valid = -n <= dim < n
    if op in ("amax", "argmax") and valid and 0 in a:
        valid = numpy_ok(lambda: np.argmax(np.ones(a), axis=dim if a else None))
    fns = {"flip": lambda x: x.flip([dim]), "transpose": lambda x: x.transpose(dim, 0),
           "softmax": lambda x: F.softmax(x, dim)}
    expect(f"{op}({a}, dim={dim})", valid, fns.get(op, lambda x: getattr(dtrain, op)(x, dim)), t(a))


@FUZZ
@given(parts=st.lists(shapes, max_size=3), dim=dims, op=st.sampled_from(["cat", "stack"]))
def test_cat_stack(parts, dim, op):
    """cat/stack of tensors whose shapes do not fit together raises a dtrain error."""
    arrays = [np.ones(s) for s in parts]
    if op == "stack":
        valid = numpy_ok(lambda: np.stack(arrays, axis=dim))
    else:  # torch.cat, unlike NumPy, needs >= 1-d tensors (legacy: skips 1-d empty ones)
        valid = numpy_ok(lambda: np.concatenate(arrays, axis=dim)) and all(len(s) >= 1 for s in parts)
    if op == "cat" and not valid and parts and any(s == (0,) for s in parts):
        return  # torch's legacy rule for empty (0,) tensors differs from NumPy's
    expect(f"dtrain.{op}({parts}, dim={dim})", valid, getattr(dtrain, op), [t(s) for s in parts], dim)


@FUZZ
@given(a=shapes, index=st.integers(-6, 6))
def test_integer_index(a, index):
    """x[i] out of range (or on a 0-d tensor) raises IndexError from dtrain."""
    valid = len(a) >= 1 and -a[0] <= index < a[0]
    error = call(f"Tensor{a}[{index}]", lambda: t(a)[index])
    assert (error is None) == valid, f"Tensor{a}[{index}]: {error!r}"
    if error is not None:
        assert isinstance(error, IndexError), f"Tensor{a}[{index}]: {type(error).__name__}, expected IndexError"


@FUZZ
@given(shape=st.lists(st.integers(-2, 4), max_size=3).map(tuple),
       fn=st.sampled_from(["zeros", "ones", "randn", "rand", "empty"]))
def test_creation_shapes(shape, fn):
    """Creating a tensor with a negative dimension raises a dtrain error."""
    expect(f"dtrain.{fn}{shape}", all(d >= 0 for d in shape), getattr(dtrain, fn), *shape)


@FUZZ
@given(data=st.recursive(st.floats(allow_nan=False) | st.integers(-5, 5), lambda c: st.lists(c, max_size=3),
                         max_leaves=8))
def test_tensor_from_nested_lists(data):
    """dtrain.tensor of a ragged nested list raises a dtrain error; a regular one works."""
    expect(f"dtrain.tensor({data!r})", numpy_ok(lambda: np.array(data, dtype=float)), dtrain.tensor, data)


@FUZZ
@given(in_f=st.integers(-1, 4), out_f=st.integers(-1, 4), x=shapes)
def test_linear(in_f, out_f, x):
    """nn.Linear refuses negative sizes, and its forward refuses an input whose last dim
    is not in_features."""
    error = call(f"nn.Linear({in_f}, {out_f})", nn.Linear, in_f, out_f)
    assert (error is None) == (in_f >= 0 and out_f >= 0), f"nn.Linear({in_f}, {out_f}): {error!r}"
    if error is None:
        layer = nn.Linear(in_f, out_f)
        expect(f"Linear({in_f}, {out_f})(x of {x})", len(x) >= 1 and x[-1] == in_f, layer, t(x, np.float32))


@FUZZ
@given(c_in=st.integers(1, 3), x=st.lists(st.integers(0, 5), min_size=2, max_size=5).map(tuple),
       k=st.integers(-1, 4), stride=st.integers(-1, 2), padding=st.integers(-1, 2))
def test_conv2d(c_in, x, k, stride, padding):
    """nn.Conv2d refuses bad sizes; its forward refuses inputs of the wrong rank or channels,
    or smaller than the kernel."""
    ok_args = k >= 1 and stride >= 1 and padding >= 0
    error = call(f"nn.Conv2d({c_in}, 2, {k}, stride={stride}, padding={padding})", nn.Conv2d, c_in, 2, k,
                 stride=stride, padding=padding)
    assert (error is None) == ok_args, f"Conv2d(k={k}, stride={stride}, padding={padding}): {error!r}"
    if error is None:
        conv = nn.Conv2d(c_in, 2, k, stride=stride, padding=padding)
        valid = len(x) in (3, 4) and x[-3] == c_in and x[-1] + 2 * padding >= k and x[-2] + 2 * padding >= k
        expect(f"Conv2d({c_in}, 2, {k}, padding={padding})(x of {x})", valid, conv, t(x, np.float32))


@FUZZ
@given(n=st.integers(0, 3), c=st.integers(1, 4), target=st.lists(st.integers(-2, 5), max_size=4))
def test_cross_entropy_targets(n, c, target):
    """cross_entropy with a target of the wrong length or a class outside [0, C) raises."""
    valid = len(target) == n and all(0 <= y < c for y in target)
    expect(f"cross_entropy(input ({n}, {c}), target {target})", valid, F.cross_entropy,
           t((n, c)), dtrain.tensor(np.array(target, dtype=np.int64)))


@FUZZ
@given(num=st.integers(0, 4), dim=st.integers(-1, 3), idx=st.lists(st.integers(-5, 5), max_size=3))
def test_embedding_indices(num, dim, idx):
    """nn.Embedding refuses negative sizes and indices outside [0, num_embeddings)."""
    error = call(f"nn.Embedding({num}, {dim})", nn.Embedding, num, dim)
    assert (error is None) == (dim >= 0), f"nn.Embedding({num}, {dim}): {error!r}"
    if error is None:
        emb = nn.Embedding(num, dim)
        expect(f"Embedding({num}, {dim})({idx})", all(0 <= i < num for i in idx), emb,
               dtrain.tensor(np.array(idx, dtype=np.int64)))


numbers = st.sampled_from([-1.0, -1e-3, 0.0, 0.5, 0.9, 1.0, 2.0, math.nan, math.inf])


@FUZZ
@given(lr=numbers, momentum=numbers, weight_decay=numbers, nesterov=st.booleans(), dampening=numbers)
def test_sgd_arguments(lr, momentum, weight_decay, nesterov, dampening):
    """optim.SGD rejects what torch.optim.SGD rejects: lr, momentum or weight_decay < 0,
    nesterov without momentum or with dampening."""
    invalid = (lr < 0 or momentum < 0 or weight_decay < 0 or (nesterov and (momentum <= 0 or dampening != 0)))
    params = [nn.Parameter(dtrain.ones(2))]
    error = call(f"SGD(lr={lr}, momentum={momentum}, wd={weight_decay}, nesterov={nesterov}, dampening={dampening})",
                 optim.SGD, params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                 dampening=dampening)
    if invalid:
        assert error is not None, "invalid SGD arguments accepted"


@FUZZ
@given(lr=numbers, b1=numbers, b2=numbers, eps=numbers, cls=st.sampled_from(["Adam", "AdamW"]))
def test_adam_arguments(lr, b1, b2, eps, cls):
    """Adam/AdamW reject what PyTorch rejects: lr < 0, eps < 0, betas outside [0, 1)."""
    invalid = lr < 0 or eps < 0 or not 0 <= b1 < 1 or not 0 <= b2 < 1
    error = call(f"{cls}(lr={lr}, betas=({b1}, {b2}), eps={eps})", getattr(optim, cls),
                 [nn.Parameter(dtrain.ones(2))], lr=lr, betas=(b1, b2), eps=eps)
    if invalid:
        assert error is not None, "invalid Adam arguments accepted"


@FUZZ
@given(params=st.sampled_from(["empty", "none", "int", "str", "floats", "tensor", "parameter"]),
       cls=st.sampled_from(["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]))
def test_optimizer_params(params, cls):
    """An optimizer given no parameters, or things that are not tensors, raises a dtrain error."""
    p = {"empty": [], "none": None, "int": 3, "str": "abc", "floats": [1.0], "tensor": [dtrain.ones(2)],
         "parameter": [nn.Parameter(dtrain.ones(2))]}[params]
    expect(f"{cls}({params})", params in ("tensor", "parameter"), getattr(optim, cls), p, lr=0.1)


@FUZZ
@given(batch_size=st.sampled_from([-1, 0, 1, 3, 2.5, "4", None]), lengths=st.lists(st.integers(0, 3), min_size=1,
                                                                                     max_size=3))
def test_data_arguments(batch_size, lengths):
    """TensorDataset of tensors of different lengths, and DataLoader with a batch_size that
    is not a positive int (or None), raise dtrain errors."""
    error = call(f"TensorDataset(lengths {lengths})", TensorDataset, *[dtrain.zeros(n) for n in lengths])
    assert (error is None) == (len(set(lengths)) == 1), f"TensorDataset {lengths}: {error!r}"
    ds = TensorDataset(dtrain.zeros(3))
    valid = batch_size is None or (isinstance(batch_size, int) and batch_size >= 1)
    expect(f"DataLoader(batch_size={batch_size!r})", valid, lambda: list(DataLoader(ds, batch_size=batch_size)))


@FUZZ
@given(num_replicas=st.integers(-1, 3), rank=st.integers(-2, 4))
def test_distributed_sampler_arguments(num_replicas, rank):
    """DistributedSampler refuses num_replicas < 1 and a rank outside [0, num_replicas)."""
    expect(f"DistributedSampler(num_replicas={num_replicas}, rank={rank})",
           num_replicas >= 1 and 0 <= rank < num_replicas, DistributedSampler, range(5), num_replicas, rank)


@FUZZ
@given(blob=st.binary(max_size=200) | st.sampled_from([b"PK\x03\x04" + bytes(40), b"PK\x05\x06" + bytes(18)]))
def test_load_garbage(blob):
    """dtrain.load of arbitrary bytes raises CheckpointError (never a raw zip/NumPy error)."""
    error = call(f"dtrain.load({blob[:20]!r}...)", dtrain.load, io.BytesIO(blob))
    assert isinstance(error, dtrain.serialization.CheckpointError), repr(error)


@FUZZ
@given(obj=st.sampled_from([{1.5: 1}, {(1, 2): 1}, {"a": {1, 2}}, [object()], {"f": len}, b"bytes",
                            np.array(["a", "b"]), np.array([1, None], dtype=object)]))
def test_save_unsupported(obj):
    """The safe format (save_state, what checkpoints use) refuses an object it cannot store with a
    TypeError; dtrain.save pickles it instead (PyTorch's torch.save), and that file then loads only
    with weights_only=False."""
    from dtrain.serialization import save_state
    error = call(f"save_state({obj!r})", save_state, obj, io.BytesIO())
    assert isinstance(error, TypeError), repr(error)
    f = io.BytesIO()
    dtrain.save(obj, f)
    f.seek(0)
    assert isinstance(call("dtrain.load(pickled)", dtrain.load, f), dtrain.serialization.WeightsOnlyError)


@FUZZ
@given(a=shapes, dtype=st.sampled_from([np.int64, np.bool_, np.float32]),
       op=st.sampled_from(["exp", "log", "sqrt", "sigmoid", "tanh", "softmax", "mean"]))
def test_float_ops_on_other_dtypes(a, dtype, op):
    """Float-only ops on int/bool tensors either promote (as PyTorch) or raise a dtrain error."""
    fns = {"softmax": lambda x: F.softmax(x, -1), "mean": dtrain.mean}
    call(f"{op}({a}, {np.dtype(dtype).name})", fns.get(op, getattr(dtrain, op, None) or getattr(F, op)),
         t(a, dtype))


@FUZZ
@given(a=shapes, requires_grad=st.booleans())
def test_backward_on_non_scalar(a, requires_grad):
    """backward() on a non-scalar output without a gradient, or on a tensor that does not
    require grad, raises a dtrain error."""
    x = dtrain.ones(*a, requires_grad=requires_grad) if a else dtrain.tensor(1.0, requires_grad=requires_grad)
    y = x * 2
    expect(f"backward on {a}, requires_grad={requires_grad}", requires_grad and y.numel() == 1, y.backward)

@FUZZ
@given(out_f=st.integers(1, 3), in_f=st.integers(1, 3), drop=st.booleans(), extra=st.booleans(),
       strict=st.booleans())
def test_load_state_dict_mismatch(out_f, in_f, drop, extra, strict):
    """Module.load_state_dict of a state with other shapes, missing or unexpected keys raises
    a dtrain error naming them (missing/unexpected keys only when strict)."""
    layer = nn.Linear(2, 2)
    state = dict(nn.Linear(in_f, out_f).state_dict())
    if drop:
        del state["bias"]
    if extra:
        state["scale"] = dtrain.ones(1)
    valid = (out_f, in_f) == (2, 2) and (not strict or not (drop or extra))
    error = call(f"load_state_dict(weight {(out_f, in_f)}, drop={drop}, extra={extra}, strict={strict})",
                 layer.load_state_dict, state, strict=strict)
    if valid:
        assert error is None, repr(error)
    elif (out_f, in_f) != (2, 2):
        assert error is not None and "weight" in str(error), repr(error)


@FUZZ
@given(index=st.sampled_from(["float", "float_tensor", "str", "none_list", "bool_mismatch", "int_tensor_oob",
                              "too_many"]))
def test_bad_index_types(index):
    """Indexing with a float, a float tensor, a string, a mask of the wrong shape, an
    out-of-range index tensor or too many indices raises a dtrain error."""
    x = dtrain.ones(3, 2)
    idx = {"float": 1.5, "float_tensor": dtrain.ones(2), "str": "a", "none_list": [None, "x"],
           "bool_mismatch": dtrain.tensor(np.array([True, False])), "int_tensor_oob":
           dtrain.tensor(np.array([0, 3])), "too_many": (0, 0, 0)}[index]
    expect(f"x[{index}]", False, lambda: x[idx])


@FUZZ
@given(fn=st.sampled_from(["arange_step0", "randint_empty", "randperm_neg", "full_shape", "linspace_neg",
                           "to_bad_device", "bad_dtype", "ones_float", "tensor_str",
                           "one_hot_neg"]))
def test_bad_creation_arguments(fn):
    """Creation functions refuse a zero step, an empty range, negative counts, a bad shape,
    an unknown device or dtype, strings and negative classes with a dtrain error (eye: see
    test_eye_with_negative_size)."""
    calls = {"arange_step0": lambda: dtrain.arange(0, 5, 0), "randint_empty": lambda: dtrain.randint(3, 3, (2,)),
             "randperm_neg": lambda: dtrain.randperm(-1),
             "full_shape": lambda: dtrain.full((2, -1), 1.0), "linspace_neg": lambda: dtrain.linspace(0, 1, -1),
             "to_bad_device": lambda: dtrain.ones(2).to("tpu:0"), "bad_dtype": lambda: dtrain.zeros(2, dtype="cat"),
             "ones_float": lambda: dtrain.ones(2.5), "tensor_str": lambda: dtrain.tensor("abc"),
             "one_hot_neg": lambda: dtrain.one_hot(dtrain.tensor([-1]), 3)}
    expect(fn, False, calls[fn])


# ---- bugs the fuzzing found (now fixed): each stays as a regression test ----

def test_outer_refuses_non_vectors():
    """dtrain.outer, as torch.outer, raises on inputs that are not 1-D (torch: 'outer:
    Expected 1-D argument self, but got 0-D'); dtrain returned shape (1, 3) and (4, 4)."""
    for a, b in (((), (3,)), ((2, 2), (2, 2))):
        x = dtrain.ones(*a) if a else dtrain.tensor(1.0)
        assert isinstance(call(f"outer({a}, {b})", dtrain.outer, x, dtrain.ones(*b)), RuntimeError)


def test_argmax_of_empty_tensor_over_a_nonempty_dim():
    """argmax(dim=0) of a (1, 0) tensor reduces a dim of size 1: torch returns an empty
    result of shape (0,); dtrain raised 'argmax(): expected a non-empty tensor'."""
    assert dtrain.argmax(dtrain.ones(1, 0), dim=0).shape == (0,)


def test_flip_of_0d_tensor():
    """flip([0]) of a 0-d tensor returns it, as torch.flip does (dims 0 and -1 are valid
    for 0-d tensors); dtrain let NumPy's AxisError through."""
    assert call("tensor(1.).flip([0])", lambda: dtrain.tensor(1.0).flip([0])) is None


def test_squeeze_of_0d_tensor():
    """squeeze(dim=1) of a 0-d tensor raises IndexError, as torch does ('Dimension out of
    range (expected to be in range of [-1, 0], but got 1)'); dtrain returned the tensor."""
    assert isinstance(call("squeeze(tensor(1.), 1)", dtrain.squeeze, dtrain.tensor(1.0), 1), IndexError)


def test_softmax_of_empty_tensor():
    """softmax and log_softmax of a (0,) tensor give a (0,) tensor, as in torch; dtrain let
    NumPy's 'zero-size array to reduction operation maximum' through."""
    for fn in (F.softmax, F.log_softmax):
        assert call(f"{fn.__name__}(ones(0), 0)", fn, dtrain.ones(0), 0) is None


def test_eye_with_negative_size():
    """dtrain.eye(-2) and eye(2, -1) raise a dtrain error (torch: 'n must be greater or equal
    to 0, got -2'); dtrain let NumPy's 'negative dimensions are not allowed' through."""
    for args in ((-2,), (2, -1)):
        assert call(f"eye{args}", dtrain.eye, *args) is not None
