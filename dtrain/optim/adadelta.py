"""Adadelta: step sizes from running averages of squared gradients and squared updates."""
from .optimizer import Optimizer, average_square, check_nonnegative, check_step_flags, each_update


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

    def _update_group(self, group):
        lr, rho, eps = group["lr"], group["rho"], group["eps"]
        for state, param, g, xp, _ in each_update(self, group, ("square_avg", "acc_delta")):
            square_avg, acc_delta = state["square_avg"].array, state["acc_delta"].array
            tmp = average_square(xp, g, square_avg, rho)  # tmp: a free temporary
            std = xp.add(square_avg, eps, out=tmp)
            xp.sqrt(std, out=std)
            delta = xp.add(acc_delta, eps)
            xp.sqrt(delta, out=delta)
            delta /= std
            delta *= g
            average_square(xp, delta, acc_delta, rho, out=tmp)
            delta *= lr
            param -= delta
