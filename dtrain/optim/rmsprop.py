"""RMSprop: divide the gradient by a running root mean square of recent gradients."""
from .optimizer import Optimizer, average_square, check_nonnegative, check_step_flags, each_update


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    With ``g = grad + weight_decay * p`` (``-grad`` if ``maximize``), each step does
    ``v = alpha v + (1 - alpha) g^2`` and ``avg = sqrt(v) + eps`` (``centered``: also
    ``ga = alpha ga + (1 - alpha) g`` and ``avg = sqrt(v - ga^2) + eps``); then
    ``p -= lr * g / avg``, or with momentum ``b = momentum b + g / avg; p -= lr * b``.

    Args:
        params: iterable of parameters or of parameter-group dicts.
        lr: learning rate (default 1e-2).
        alpha: smoothing constant of the square average (default 0.99).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty (default 0).
        momentum: momentum factor (default 0).
        centered: normalize by the estimated variance of the gradient instead.
        capturable, foreach: accepted for PyTorch compatibility; they change nothing here.
        maximize: maximize the objective instead of minimizing it.
        differentiable: must be False (autograd through the step is not supported).

    Example:
        >>> opt = dtrain.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.9)
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group):
        check_nonnegative(group, {"lr": "learning rate", "eps": "epsilon value", "momentum": "momentum value",
                                  "weight_decay": "weight_decay value", "alpha": "alpha value"})
        check_step_flags(self, group)

    def _update_group(self, group):
        lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
        centered = group["centered"]
        buffers = ("square_avg",) + (("momentum_buffer",) if momentum > 0 else ()) + (("grad_avg",) if centered else ())
        for state, param, g, xp, _ in each_update(self, group, buffers):
            square_avg = state["square_avg"].array
            tmp = average_square(xp, g, square_avg, alpha)  # the one temporary, reused below
            if centered:
                grad_avg = state["grad_avg"].array
                grad_avg *= alpha
                grad_avg += xp.multiply(g, 1 - alpha, out=tmp)
                xp.multiply(grad_avg, grad_avg, out=tmp)
                avg = xp.subtract(square_avg, tmp, out=tmp)
                xp.sqrt(avg, out=avg)
            else:
                avg = xp.sqrt(square_avg, out=tmp)
            avg += eps
            ratio = xp.divide(g, avg, out=tmp)
            if momentum > 0:
                buf = state["momentum_buffer"].array
                buf *= momentum
                buf += ratio
                ratio = xp.multiply(buf, lr, out=tmp)
            else:
                ratio *= lr
            param -= ratio
