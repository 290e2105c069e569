"""Each error path is fed its bad input; the message names the op, the bad value and what
was expected, and no error surfaces as a raw NumPy exception."""
import numpy as np
import pytest

import dtrain
from dtrain.tensor import backend
from dtrain.tensor.function import check_same_device

A, B = (2, 3), (4, 5)

BROADCAST = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
    ("pow", lambda a, b: a ** b),
    ("maximum", dtrain.maximum),
    ("minimum", dtrain.minimum),
    ("eq", lambda a, b: a == b),
    ("lt", lambda a, b: a < b),
    ("remainder", lambda a, b: a % b),
    ("floor_divide", lambda a, b: a // b),
    ("logical_and", dtrain.logical_and),
    ("where", lambda a, b: dtrain.where(a > 0, a, b)),
]


@pytest.mark.parametrize("op, fn", BROADCAST, ids=[c[0] for c in BROADCAST])
def test_broadcast_error_names_op_and_shapes(op, fn):
    """Operands that do not broadcast raise a RuntimeError naming the op and both shapes."""
    a, b = dtrain.ones(*A, requires_grad=True), dtrain.ones(*B)
    with pytest.raises(RuntimeError, match=rf"^{op}: shapes .*\[4, 5\].* cannot be broadcast together$") as e:
        fn(a, b)
    assert "[2, 3]" in str(e.value)


def test_binary_shape_error_message():
    """add of (2, 3) and (4, 5): the full message."""
    with pytest.raises(RuntimeError, match=r"^add: shapes \[2, 3\] and \[4, 5\] cannot be broadcast together$"):
        dtrain.zeros(2, 3) + dtrain.zeros(4, 5)


def test_matmul_shape_error():
    """matmul of (2, 3) and (4, 5) names the op, both shapes and the inner sizes."""
    with pytest.raises(RuntimeError, match=r"matmul: shapes \[2, 3\] and \[4, 5\] cannot be multiplied \(3 != 4\)"):
        dtrain.zeros(2, 3) @ dtrain.zeros(4, 5)


def test_inplace_shape_errors():
    """In-place ops whose operand does not broadcast to the tensor name the op and both shapes."""
    x = dtrain.zeros(3)
    with pytest.raises(RuntimeError, match=r"__setitem__: a value of shape \[4\] cannot be written into a tensor "
                                           r"of shape \[2, 3\] at index 0"):
        dtrain.zeros(2, 3)[0] = dtrain.ones(4)
    with pytest.raises(RuntimeError, match=r"add_: .*shape \[3\].*shape \[4\]"):
        x.add_(dtrain.zeros(4))
    with pytest.raises(RuntimeError, match=r"copy_: output with shape \(3,\) doesn't match the broadcast "
                                           r"shape \(2, 3\)"):
        x.copy_(dtrain.zeros(2, 3))


def test_backward_non_scalar_needs_gradient():
    """backward() on a non-scalar output without `gradient` says what to pass."""
    y = dtrain.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"grad can be implicitly created only for scalar outputs.*"
                                           r"\(2, 3\).*gradient="):
        y.backward()
    with pytest.raises(RuntimeError, match=r"backward: gradient has shape \(3,\) but the output has shape \(2, 3\)"):
        y.backward(dtrain.ones(3))


def test_backward_without_requires_grad():
    """backward() on a tensor outside any graph says the inputs need requires_grad."""
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        (dtrain.ones(2) * 2).sum().backward()
    x = dtrain.ones(2, requires_grad=True)
    with dtrain.no_grad():
        y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="no_grad"):
        y.backward()


def test_second_backward_through_freed_graph():
    """A second backward without retain_graph=True says the graph was freed and how to keep it."""
    x = dtrain.ones(2, requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()


def test_inplace_on_leaf_requiring_grad():
    """An in-place op on a leaf that requires grad names the op and the no_grad fix."""
    w = dtrain.ones(3, requires_grad=True)
    ops = {"add_": lambda: w.add_(1), "mul_": lambda: w.mul_(2), "zero_": w.zero_,
           "copy_": lambda: w.copy_(dtrain.zeros(3)), "__setitem__": lambda: w.__setitem__(0, 2.0)}
    for name, op in ops.items():
        with pytest.raises(RuntimeError, match=rf"{name}: a leaf Tensor that requires grad is being used in an "
                                               rf"in-place operation; wrap it in `with dtrain.no_grad\(\):`"):
            op()
    assert w._version == 0  # refused before anything was written
    np.testing.assert_array_equal(w.detach().numpy(), 1.0)


def test_setitem_with_value_requiring_grad():
    """Writing a value that requires grad into a tensor is refused (it would drop the
    gradient silently); under no_grad it is a plain write."""
    buf, w = dtrain.zeros(3), dtrain.ones(1, requires_grad=True)
    with pytest.raises(RuntimeError, match="__setitem__: the value requires grad.*would drop its gradient"):
        buf[0] = w * 2
    assert buf._version == 0
    with dtrain.no_grad():
        buf[0] = w * 2
    np.testing.assert_array_equal(buf.numpy(), [2.0, 0.0, 0.0])


def test_inplace_on_graph_tensor():
    """An in-place op on a non-leaf tensor of a graph is refused."""
    y = dtrain.ones(2, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="add_: in-place operations on tensors that are part of a graph"):
        y.add_(1)


def test_inplace_modification_of_saved_tensor_detected():
    """Changing a tensor in place after an op saved it for backward is detected at backward,
    naming the op and the versions."""
    x = dtrain.ones(2, requires_grad=True)
    c = dtrain.full((2,), 3.0)
    y = (x * c).sum()
    c.mul_(2)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: an input of Mul of shape \(2,\) "
                                           r"is at version 1; expected version 0"):
        y.backward()
    x.grad = None
    y = (x * c).sum()  # a graph built after the change is fine
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 6.0)


def _fake_cuda(monkeypatch, tensor):
    """Make ``tensor``'s array report cuda:0 (no GPU is needed to test the device checks)."""
    real = backend.device_of
    monkeypatch.setattr(backend, "device_of",
                        lambda a: backend.Device("cuda:0") if a is tensor.array else real(a))


def test_mixing_devices_in_one_op(monkeypatch):
    """An op on tensors of two devices raises naming the op and both devices."""
    a, b = dtrain.ones(2, requires_grad=True), dtrain.ones(2)
    _fake_cuda(monkeypatch, b)
    assert b.device == "cuda:0" and a.device == "cpu"
    for fn, op in ((lambda: a + b, "Add"), (lambda: a * b, "Mul"), (lambda: dtrain.cat([a, b]), "Cat"),
                   (lambda: a @ b, "MatMul")):
        with pytest.raises(RuntimeError, match=rf"{op}: expected all tensors to be on the same device, but found "
                                               rf"at least two devices, cpu and cuda:0"):
            fn()
    with pytest.raises(RuntimeError, match="expected all tensors to be on the same device, but found cpu and cuda:0"):
        a.detach().add_(b)


def test_check_same_device(monkeypatch):
    """check_same_device passes one device (numbers ignored) and names both devices otherwise."""
    a, b = np.zeros(2), np.ones(2)
    check_same_device("op", [a, b, 2.0])
    monkeypatch.setattr(backend, "device_of", lambda x: backend.Device("cuda:0") if x is b else backend.CPU)
    with pytest.raises(RuntimeError, match="myop: .*two devices, cpu and cuda:0"):
        check_same_device("myop", [a, 3, b])


BAD_ARGS = [
    ("clamp_none", lambda: dtrain.zeros(2).clamp(), ValueError, "clamp: at least one of 'min' or 'max'"),
    ("where_not_bool", lambda: dtrain.where(dtrain.ones(2), dtrain.ones(2), 0.0), TypeError,
     "where: condition must be a bool Tensor, got dtype float32"),
    ("add_string", lambda: dtrain.ones(2) + "a", TypeError, "add: unsupported operand type str"),
    ("div_rounding", lambda: dtrain.ones(2).div(2, rounding_mode="round"), ValueError,
     "div: rounding_mode must be None, 'trunc' or 'floor', got 'round'"),
    ("sum_dim", lambda: dtrain.ones(2, 3).sum(3), IndexError, r"sum: dimension out of range \(expected to be in range"),
    ("mean_int", lambda: dtrain.arange(3).mean(), RuntimeError, "mean.*Input dtype must be floating point"),
    ("var_both", lambda: dtrain.ones(3).var(unbiased=True, correction=1), TypeError,
     "var: give either unbiased or correction"),
    ("index_float", lambda: dtrain.ones(3)[dtrain.tensor([0.5])], IndexError,
     "tensors used as indices must be long, int or bool tensors, got float32"),
    ("index_type", lambda: dtrain.ones(3)["a"], IndexError, "only integers, slices.*got str"),
    ("index_oob", lambda: dtrain.ones(3)[[0, 3]], IndexError, r"index \[array of shape \[2\]\] is invalid for a "
                                                             r"tensor of shape \[3\]"),
    ("gather_float_index", lambda: dtrain.ones(2, 2).gather(1, dtrain.ones(2, 2)), RuntimeError,
     "gather.*expected an int64 index tensor, got float32"),
    ("masked_fill_float_mask", lambda: dtrain.ones(2).masked_fill(dtrain.ones(2), 0.0), RuntimeError,
     "masked_fill only supports boolean masks"),
    ("amax_empty", lambda: dtrain.ones(0, 2).amax(0), RuntimeError, "cannot reduce over an empty dimension"),
    ("argmax_empty", lambda: dtrain.ones(0).argmax(), RuntimeError, r"argmax\(\): cannot reduce over an empty dimension"),
    ("chunk_zero", lambda: dtrain.ones(3).chunk(0), RuntimeError, "chunk expects `chunks` to be greater than 0"),
    ("repeat_short", lambda: dtrain.ones(2, 2).repeat(2), RuntimeError, "repeat: number of repeat dims"),
    ("squeeze_dim", lambda: dtrain.ones(2).squeeze(3), IndexError, "squeeze: dimension out of range"),
    ("device", lambda: dtrain.zeros(2, device="tpu"), ValueError, "unknown device type 'tpu'"),
    ("dtype", lambda: dtrain.zeros(2, dtype="nonsense"), TypeError, "not a dtype: 'nonsense'"),
]


@pytest.mark.parametrize("fn, exc, match", [c[1:] for c in BAD_ARGS], ids=[c[0] for c in BAD_ARGS])
def test_bad_arguments(fn, exc, match):
    """A bad argument raises a clear error naming the op and the bad value."""
    with pytest.raises(exc, match=match):
        fn()
