"""Finite-difference gradient check in float64, as torch.autograd.gradcheck."""
import numpy

from .backend import asnumpy, get_array_module
from .grad_mode import no_grad
from .tensor import Tensor


class GradcheckError(RuntimeError):
    pass


def _outputs(fn, inputs):
    out = fn(*inputs)
    return out if isinstance(out, (tuple, list)) else (out,)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """Compare backward's gradients with central differences of ``fn``.

    Every output of ``fn`` (a Tensor or a tuple of Tensors) is checked against every input
    that requires grad, one output element at a time (the full Jacobian, as PyTorch does).

    Args:
        fn: a function of ``inputs`` returning a Tensor or a tuple of Tensors.
        inputs: a Tensor or tuple of Tensors; those with ``requires_grad`` are checked and
            must be float64.
        eps: the finite-difference step.
        atol, rtol: allowed |analytic - numeric| <= atol + rtol * |numeric|.
        raise_exception: raise GradcheckError on a mismatch (else return False).

    Returns:
        True if all gradients match.

    Example:
        >>> x = dtrain.randn(3, dtype=dtrain.float64, requires_grad=True)
        >>> dtrain.autograd.gradcheck(lambda t: (t * t).sum(), (x,))
        True
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: at least one input tensor must require grad")
    for i in checked:
        if inputs[i].dtype != numpy.float64:
            raise ValueError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64 inputs")
    with no_grad():
        outs = [o.detach() for o in _outputs(fn, inputs)]
    for k, out in enumerate(outs):
        if not out.requires_grad and out.dtype.kind != "f":
            continue
        numeric = {i: _numeric(fn, inputs, i, k, out, eps) for i in checked}
        analytic = _analytic(fn, inputs, checked, k, out)
        for i in checked:
            a, n = analytic[i], numeric[i]
            bad = numpy.abs(a - n) > atol + rtol * numpy.abs(n)
            if bad.any():
                j = tuple(int(v) for v in numpy.unravel_index(numpy.argmax(numpy.abs(a - n) * bad), a.shape))
                msg = (f"gradcheck: Jacobian mismatch for output {k} with respect to input {i}: "
                       f"at (out elem, in elem) {j} analytic {float(a[j])} vs numeric {float(n[j])}\n"
                       f"analytic:\n{a}\nnumeric:\n{n}")
                if raise_exception:
                    raise GradcheckError(msg)
                return False
    return True


def _numeric(fn, inputs, i, k, out, eps):
    x = inputs[i].array
    jac = numpy.zeros((out.numel(), x.size))
    with no_grad():
        for j in range(x.size):
            at = numpy.unravel_index(j, x.shape)  # x is perturbed in place (any layout) and restored
            orig = x[at].item()
            x[at] = orig + eps
            plus = asnumpy(_outputs(fn, inputs)[k].array).astype(numpy.float64).reshape(-1)
            x[at] = orig - eps
            minus = asnumpy(_outputs(fn, inputs)[k].array).astype(numpy.float64).reshape(-1)
            x[at] = orig
            jac[:, j] = (plus - minus) / (2 * eps)
    return jac


def _analytic(fn, inputs, checked, k, out):
    jac = {i: numpy.zeros((out.numel(), inputs[i].numel())) for i in checked}
    for r in range(out.numel()):
        for i in checked:
            inputs[i].grad = None
        o = _outputs(fn, inputs)[k]
        if not o.requires_grad:
            continue  # the output does not depend on the inputs: zero Jacobian row
        seed = get_array_module(o.array).zeros(o.numel(), dtype=o.dtype)  # on o's device
        seed[r] = 1
        o.backward(Tensor._wrap(seed.reshape(o.shape)))
        for i in checked:
            g = inputs[i].grad
            if g is not None:
                jac[i][r] = asnumpy(g.array).reshape(-1)
            inputs[i].grad = None
    return jac
