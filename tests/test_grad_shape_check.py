"""The backward walk checks what each Function's backward returns against that Function's
inputs, as PyTorch's engine does (validate_outputs): one gradient per input; a gradient of
another shape is an error naming the op, the input and both shapes, unless the input
broadcasts to it (then it is summed down); a gradient of another dtype is cast to the input's."""
import numpy
import pytest

import dtrain
from dtrain.autograd import Function


def op(backward, forward=lambda self, *xs: xs[0] * 2, name="Op"):
    """A custom Function class whose backward is ``backward(self, grad)``."""
    return type(name, (Function,), {"forward": forward, "backward": backward})


def test_wrong_shape_names_op_input_and_both_shapes():
    """A backward returning shape (1,) for an input of shape (3,) fails with that message,
    and no leaf gets a gradient."""
    Mul = op(lambda self, g: g.sum(keepdims=True), name="Mul")
    x = dtrain.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"^MulBackward returned a gradient of shape \(1,\) for input 0 of "
                                           r"shape \(3,\)"):
        Mul.apply(x).sum().backward()
    assert x.grad is None


def test_wrong_shape_is_reported_at_its_input_index():
    """The input index in the message is the position of the bad gradient (here 1), also
    when the same tensor is passed twice."""
    Two = op(lambda self, g: (g, g[:1]), forward=lambda self, a, b: a * b, name="Two")
    x = dtrain.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"TwoBackward returned a gradient of shape \(1,\) for input 1 of "
                                           r"shape \(2,\)"):
        Two.apply(x, x).sum().backward()


def test_wrong_shape_inside_the_graph_is_caught_at_its_node():
    """A bad gradient for a non-leaf input stops the walk at that node, before later ops
    would broadcast it into a plausible-looking .grad."""
    Squash = op(lambda self, g: g[:, :1], name="Squash")
    x = dtrain.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"SquashBackward returned a gradient of shape \(2, 1\) for input 0 "
                                           r"of shape \(2, 3\)"):
        (Squash.apply(x * 3) + 1).sum().backward()
    assert x.grad is None


def test_wrong_number_of_gradients():
    """One gradient for two inputs is an error quoting both counts."""
    One = op(lambda self, g: g, forward=lambda self, a, b: a * b, name="One")
    a, b = dtrain.ones(2, requires_grad=True), dtrain.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="OneBackward returned 1 gradients for 2 inputs"):
        One.apply(a, b).sum().backward()


def test_gradient_of_a_broadcast_shape_is_summed_down():
    """As in PyTorch, an input of shape (3,) given a (2, 3) gradient gets the sum over the
    broadcast dimension (ones from sum(), twice: 2 per element), and (1, 3) keeps its size-1
    dimension."""
    Wide = op(lambda self, g: numpy.broadcast_to(g, (2,) + g.shape))
    x = dtrain.ones(3, requires_grad=True)
    Wide.apply(x).sum().backward()
    assert x.grad.shape == (3,) and x.grad.tolist() == [2.0, 2.0, 2.0]
    Keep = op(lambda self, g: numpy.broadcast_to(g, (2, 3)))
    y = dtrain.ones(1, 3, requires_grad=True)
    Keep.apply(y).sum().backward()
    assert y.grad.shape == (1, 3) and y.grad.tolist() == [[2.0, 2.0, 2.0]]


def test_gradient_dtype_is_cast_to_the_input_dtype():
    """A float64 gradient for a float32 input is cast before it flows on: the leaf's .grad
    and the gradient the next node receives are float32."""
    seen = []
    Wider = op(lambda self, g: (g * 2).astype(numpy.float64))
    Spy = op(lambda self, g: seen.append(g.dtype) or g, forward=lambda self, x: x * 1)
    x = dtrain.ones(3, requires_grad=True)
    Wider.apply(Spy.apply(x)).sum().backward()
    assert seen == [numpy.float32]
    assert x.grad.dtype == dtrain.float32 and x.grad.tolist() == [2.0, 2.0, 2.0]


def test_complex_gradient_for_a_real_input_is_an_error():
    """PyTorch refuses a complex gradient for a real input; so does dtrain, naming both dtypes."""
    Cplx = op(lambda self, g: g.astype(numpy.complex64), name="Cplx")
    x = dtrain.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="CplxBackward returned a gradient of dtype complex64 for input 0 of "
                                           "dtype float32"):
        Cplx.apply(x).sum().backward()
