"""Adam and AdamW (Adam with decoupled weight decay)."""
from .optimizer import Optimizer, check_adam_hyperparameters, each_update, update_moments


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam``.

    With ``g = grad + weight_decay * p`` (``-grad`` if ``maximize``; with
    ``decoupled_weight_decay`` the decay is instead ``p *= 1 - lr * weight_decay``), step t
    does ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2`` (``v_max = max(v_max, v)``
    with ``amsgrad``), then ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: learning rate (default 1e-3).
        betas: decay rates (b1, b2) of the moment averages (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty (default 0).
        amsgrad: use the running maximum of the second moment (AMSGrad).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable, fused: accepted for PyTorch compatibility; they change nothing here.
        differentiable: must be False (autograd through the step is not supported).
        decoupled_weight_decay: decay the weights directly, as AdamW.

    Example:
        >>> opt = dtrain.optim.Adam(model.parameters(), lr=1e-3)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        check_adam_hyperparameters(self, group)

    def _update_group(self, group):
        lr, (beta1, beta2), eps, amsgrad = group["lr"], group["betas"], group["eps"], group["amsgrad"]
        buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")
        for state, param, g, xp, t in each_update(self, group, buffers):
            m, v = state["exp_avg"].array, state["exp_avg_sq"].array
            tmp = update_moments(xp, g, m, v, beta1, beta2)  # tmp: a free temporary
            if amsgrad:
                v = xp.maximum(state["max_exp_avg_sq"].array, v, out=state["max_exp_avg_sq"].array)

            denom = xp.sqrt(v, out=tmp)
            denom /= (1 - beta2 ** t) ** 0.5
            denom += eps
            step = xp.divide(m, denom, out=tmp)
            step *= lr / (1 - beta1 ** t)
            param -= step


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam whose weight decay is decoupled from the
    gradient (``p *= 1 - lr * weight_decay`` each step), with ``weight_decay=1e-2``.

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: learning rate (default 1e-3).
        betas: decay rates (b1, b2) of the moment averages (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: decoupled weight decay (default 1e-2).
        amsgrad: use the running maximum of the second moment (AMSGrad).
        maximize: maximize the objective instead of minimizing it.
        foreach, capturable, fused: accepted for PyTorch compatibility; they change nothing here.
        differentiable: must be False (autograd through the step is not supported).

    Example:
        >>> opt = dtrain.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
