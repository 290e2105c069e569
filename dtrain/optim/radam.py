"""RAdam: Adam whose adaptive step is rectified while the second moment's variance is high."""
from .optimizer import Optimizer, check_adam_hyperparameters, each_update, update_moments


class RAdam(Optimizer):
    """RAdam, as ``torch.optim.RAdam``.

    With ``g = grad + weight_decay * p`` (``-grad`` if ``maximize``; with
    ``decoupled_weight_decay`` the decay is instead ``p *= 1 - lr * weight_decay``), step t
    does ``m = b1 m + (1 - b1) g`` and ``v = b2 v + (1 - b2) g^2``; with
    ``rho_inf = 2 / (1 - b2) - 1`` and ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``, it does
    ``p -= lr m / (1 - b1^t)`` while ``rho_t <= 5``, and afterwards
    ``p -= lr m / (1 - b1^t) * r_t sqrt(1 - b2^t) / (sqrt(v) + eps)`` with the rectification
    ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``.

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: learning rate (default 1e-3).
        betas: decay rates (b1, b2) of the moment averages (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: weight decay (default 0).
        decoupled_weight_decay: decay the weights directly, as AdamW (RAdamW).
        foreach, capturable: accepted for PyTorch compatibility; they change nothing here.
        maximize: maximize the objective instead of minimizing it.
        differentiable: must be False (autograd through the step is not supported).

    Example:
        >>> opt = dtrain.optim.RAdam(model.parameters(), lr=1e-3)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, decoupled_weight_decay=decoupled_weight_decay,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        check_adam_hyperparameters(self, group)

    def _update_group(self, group):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        rho_inf = 2 / (1 - beta2) - 1
        for state, param, g, xp, t in each_update(self, group, ("exp_avg", "exp_avg_sq")):
            m, v = state["exp_avg"].array, state["exp_avg_sq"].array
            tmp = update_moments(xp, g, m, v, beta1, beta2)  # tmp: a free temporary
            bias_correction2 = 1 - beta2 ** t
            rho_t = rho_inf - 2 * t * beta2 ** t / bias_correction2
            step = xp.multiply(m, lr / (1 - beta1 ** t), out=tmp)
            if rho_t > 5.0:
                rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                denom = xp.sqrt(v)
                denom += eps
                step /= denom
                step *= bias_correction2 ** 0.5 * rect
            param -= step
