"""``dtrain.autograd``: gradcheck, Function, and the grad-mode switches (as torch.autograd)."""
from .tensor.function import Function  # noqa: F401
from .tensor.gradcheck import GradcheckError, gradcheck  # noqa: F401
from .tensor.grad_mode import enable_grad, no_grad, set_grad_enabled  # noqa: F401
from .tensor.anomaly import detect_anomaly, is_anomaly_enabled, set_detect_anomaly  # noqa: F401
