"""NAdam: Adam with Nesterov momentum and a momentum schedule."""
from .optimizer import Optimizer, check_adam_hyperparameters, each_update, update_moments


class NAdam(Optimizer):
    """NAdam, as ``torch.optim.NAdam``.

    With ``g = grad + weight_decay * p`` (``-grad`` if ``maximize``; with
    ``decoupled_weight_decay`` the decay is instead ``p *= 1 - lr * weight_decay``), step t
    uses the momentum schedule ``mu_t = b1 (1 - 0.96^(t momentum_decay) / 2)`` and its running
    product ``P_t = mu_1 ... mu_t``; it does ``m = b1 m + (1 - b1) g``,
    ``v = b2 v + (1 - b2) g^2``, ``d = sqrt(v / (1 - b2^t)) + eps`` and
    ``p -= lr ((1 - mu_t) / (1 - P_t) g + mu_{t+1} / (1 - P_t mu_{t+1}) m) / d``.

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: learning rate (default 2e-3).
        betas: decay rates (b1, b2) of the moment averages (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: weight decay (default 0).
        momentum_decay: speed of the momentum schedule (default 4e-3).
        decoupled_weight_decay: decay the weights directly, as AdamW (NAdamW).
        foreach, capturable: accepted for PyTorch compatibility; they change nothing here.
        maximize: maximize the objective instead of minimizing it.
        differentiable: must be False (autograd through the step is not supported).

    Example:
        >>> opt = dtrain.optim.NAdam(model.parameters(), lr=2e-3)
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        check_adam_hyperparameters(self, group, {"momentum_decay": "momentum_decay value"})

    def _update_group(self, group):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        momentum_decay = group["momentum_decay"]
        # mu_product: a float32 CPU scalar like "step", so the product rounds as PyTorch's does
        for state, param, g, xp, t in each_update(self, group, ("exp_avg", "exp_avg_sq"), {"mu_product": 1.0}):
            mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
            mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
            state["mu_product"].array *= mu
            mu_product = float(state["mu_product"].array)
            m, v = state["exp_avg"].array, state["exp_avg_sq"].array

            tmp = update_moments(xp, g, m, v, beta1, beta2)  # tmp: a free temporary
            denom = xp.divide(v, 1 - beta2 ** t, out=tmp)
            xp.sqrt(denom, out=denom)
            denom += eps
            update = g * (lr * (1.0 - mu) / (1.0 - mu_product))
            update += m * (lr * mu_next / (1.0 - mu_product * mu_next))
            update /= denom
            param -= update
