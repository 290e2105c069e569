"""Adamax: Adam with the infinity norm of past gradients in place of the second moment."""
from .optimizer import Optimizer, check_adam_hyperparameters, each_update, update_moments


class Adamax(Optimizer):
    """Adamax, as ``torch.optim.Adamax``.

    With ``g = grad + weight_decay * p`` (``-grad`` if ``maximize``), step t does
    ``m = b1 m + (1 - b1) g``, ``u = max(b2 u, |g| + eps)`` and
    ``p -= lr / (1 - b1^t) * m / u``.

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: learning rate (default 2e-3).
        betas: decay rates (b1, b2) of the moment and of the norm (default (0.9, 0.999)).
        eps: added to ``|g|`` (default 1e-8).
        weight_decay: L2 penalty (default 0).
        foreach, capturable: accepted for PyTorch compatibility; they change nothing here.
        maximize: maximize the objective instead of minimizing it.
        differentiable: must be False (autograd through the step is not supported).

    Example:
        >>> opt = dtrain.optim.Adamax(model.parameters(), lr=2e-3)
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        check_adam_hyperparameters(self, group)

    def _update_group(self, group):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for state, param, g, xp, t in each_update(self, group, ("exp_avg", "exp_inf")):
            m, u = state["exp_avg"].array, state["exp_inf"].array
            tmp = update_moments(xp, g, m, None, beta1, beta2)
            xp.abs(g, out=tmp)
            tmp += eps
            u *= beta2
            xp.maximum(u, tmp, out=u)
            step = xp.divide(m, u, out=tmp)
            step *= lr / (1 - beta1 ** t)
            param -= step
