"""Optimizers and learning-rate schedulers, as ``torch.optim``.

Example:
    >>> opt = dtrain.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    >>> sched = dtrain.optim.lr_scheduler.StepLR(opt, step_size=10)
"""
from . import lr_scheduler  # noqa: F401
from .adagrad import Adagrad  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .optimizer import Optimizer  # noqa: F401
from .rmsprop import RMSprop  # noqa: F401
from .sgd import SGD  # noqa: F401
