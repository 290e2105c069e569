"""NAdam: Adam with Nesterov momentum and a momentum schedule."""
from ..tensor.backend import get_array_module
from .optimizer import (Optimizer, check_betas, check_nonnegative, check_step_flags, effective_grad, on_param_device,
                        state_like, step_tensor, update_moments)


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
        check_nonnegative(group, {"lr": "learning rate", "eps": "epsilon value",
                                  "weight_decay": "weight_decay value", "momentum_decay": "momentum_decay value"})
        check_betas(group)
        check_step_flags(self, group)

    def step(self, closure=None):
        """Perform one update; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._run_closure(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            weight_decay, decoupled, momentum_decay = (group["weight_decay"], group["decoupled_weight_decay"],
                                                       group["momentum_decay"])
            for p in on_param_device(group["params"]):
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = step_tensor()
                    # a float32 CPU scalar like "step", so the product rounds as PyTorch's does
                    state["mu_product"] = step_tensor(1.0)
                    state["exp_avg"] = state_like(p)
                    state["exp_avg_sq"] = state_like(p)
                param = p.array
                xp = get_array_module(param)
                g = effective_grad(param, p.grad.array, 0 if decoupled else weight_decay, group["maximize"])
                if decoupled and weight_decay:
                    param *= 1 - lr * weight_decay
                state["step"].array += 1
                t = float(state["step"].array)
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
        return loss
