"""Adagrad: per-coordinate learning rates from the running sum of squared gradients."""
from .optimizer import Optimizer, check_nonnegative, check_step_flags, each_update, state_like, step_tensor


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    With ``g = grad + weight_decay * p`` (``-grad`` if ``maximize``), step t does
    ``s += g^2`` and ``p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)``, where the
    sum ``s`` starts at ``initial_accumulator_value``. As in PyTorch, the state of every
    parameter exists from the moment it is added.

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: learning rate (default 1e-2).
        lr_decay: learning rate decay per step (default 0).
        weight_decay: L2 penalty (default 0).
        initial_accumulator_value: starting value of the sum of squares (default 0).
        eps: added to the denominator (default 1e-10).
        foreach, fused: accepted for PyTorch compatibility; they change nothing here.
        maximize: maximize the objective instead of minimizing it.
        differentiable: must be False (autograd through the step is not supported).

    Example:
        >>> opt = dtrain.optim.Adagrad(model.parameters(), lr=0.1)
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        check_nonnegative(group, {"lr": "learning rate", "lr_decay": "lr_decay value",
                                  "weight_decay": "weight_decay value",
                                  "initial_accumulator_value": "initial_accumulator_value value",
                                  "eps": "epsilon value"})
        check_step_flags(self, group)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        for p in param_group["params"]:
            self.state[p]["step"] = step_tensor()
            self.state[p]["sum"] = state_like(p, param_group["initial_accumulator_value"])

    def _update_group(self, group):
        lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
        for state, param, g, xp, t in each_update(self, group):  # the state exists already (add_param_group)
            state_sum = state["sum"].array
            tmp = xp.multiply(g, g)  # the one temporary, reused below
            state_sum += tmp
            std = xp.sqrt(state_sum, out=tmp)
            std += eps
            step = xp.divide(g, std, out=tmp)
            step *= lr / (1 + (t - 1) * lr_decay)
            param -= step
