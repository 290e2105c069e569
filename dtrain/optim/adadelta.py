"""Adadelta: step sizes from running averages of squared gradients and squared updates."""
from ..tensor.backend import get_array_module
from .optimizer import (Optimizer, check_nonnegative, check_step_flags, effective_grad, on_param_device, state_like,
                        step_tensor)


class Adadelta(Optimizer):
    """Adadelta, as ``torch.optim.Adadelta``.

    With ``g = grad + weight_decay * p`` (``-grad`` if ``maximize``), each step does
    ``v = rho v + (1 - rho) g^2``, ``delta = sqrt(u + eps) / sqrt(v + eps) * g``,
    ``u = rho u + (1 - rho) delta^2`` and ``p -= lr * delta``.

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: scale of the update (default 1.0).
        rho: decay rate of the running averages, in [0, 1] (default 0.9).
        eps: added inside both square roots (default 1e-6).
        weight_decay: L2 penalty (default 0).
        foreach, capturable: accepted for PyTorch compatibility; they change nothing here.
        maximize: maximize the objective instead of minimizing it.
        differentiable: must be False (autograd through the step is not supported).

    Example:
        >>> opt = dtrain.optim.Adadelta(model.parameters(), rho=0.95)
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        check_nonnegative(group, {"lr": "learning rate", "eps": "epsilon value",
                                  "weight_decay": "weight_decay value"})
        if not 0.0 <= group["rho"] <= 1.0:
            raise ValueError(f"Invalid rho value: {group['rho']} (expected 0 <= rho <= 1)")
        check_step_flags(self, group)

    def step(self, closure=None):
        """Perform one update; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            for p in on_param_device(group["params"]):
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = step_tensor()
                    state["square_avg"] = state_like(p)
                    state["acc_delta"] = state_like(p)
                param = p.array
                xp = get_array_module(param)
                g = effective_grad(param, p.grad.array, group["weight_decay"], group["maximize"])
                state["step"].array += 1
                square_avg, acc_delta = state["square_avg"].array, state["acc_delta"].array

                tmp = xp.multiply(g, g)
                tmp *= 1 - rho
                square_avg *= rho
                square_avg += tmp
                std = xp.add(square_avg, eps, out=tmp)
                xp.sqrt(std, out=std)
                delta = xp.add(acc_delta, eps)
                xp.sqrt(delta, out=delta)
                delta /= std
                delta *= g
                xp.multiply(delta, delta, out=tmp)
                tmp *= 1 - rho
                acc_delta *= rho
                acc_delta += tmp
                delta *= lr
                param -= delta
        return loss
