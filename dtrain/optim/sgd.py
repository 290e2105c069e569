"""SGD: stochastic gradient descent, with optional (Nesterov) momentum and weight decay."""
from ..tensor import Tensor
from .optimizer import Optimizer, check_nonnegative, check_step_flags, effective_grad, on_param_device


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``.

    With ``g = grad + weight_decay * p`` (``-grad`` if ``maximize``), each step does
    ``b = g`` on the first step, else ``b = momentum * b + (1 - dampening) * g``; then
    ``p -= lr * (g + momentum * b if nesterov else b)`` (``p -= lr * g`` without momentum).

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: learning rate (default 1e-3).
        momentum: momentum factor (default 0).
        dampening: dampening of the momentum (default 0).
        weight_decay: L2 penalty (default 0).
        nesterov: use Nesterov momentum; needs momentum > 0 and dampening 0.
        maximize: maximize the objective instead of minimizing it.
        foreach, fused: accepted for PyTorch compatibility; they change nothing here.
        differentiable: must be False (autograd through the step is not supported).

    Example:
        >>> opt = dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        check_nonnegative(group, {"lr": "learning rate", "momentum": "momentum value",
                                  "weight_decay": "weight_decay value"})
        check_step_flags(self, group)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"Nesterov momentum requires a momentum and zero dampening, but got "
                             f"momentum={group['momentum']} and dampening={group['dampening']}")

    def _update_group(self, group):
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
        for p in on_param_device(group["params"]):
            if p.grad is None:
                continue
            param = p.array
            g = effective_grad(param, p.grad.array, weight_decay, maximize)
            update = g
            if momentum != 0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = _own(g, p.grad.array)
                else:
                    b = buf.array
                    b *= momentum
                    b += g if dampening == 0 else (1 - dampening) * g
                update = buf.array
                if nesterov:
                    update = update * momentum
                    update += g
            param -= lr * update


def _own(g, grad):
    """``g`` as a Tensor that owns its storage (``g`` may be the gradient itself)."""
    return Tensor._wrap(g.copy() if g is grad else g)
