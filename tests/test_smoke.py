import numpy as np

import dtrain
from helpers import check_op


def test_matmul_tanh_sum():
    """A small chain: values and grads agree with NumPy, PyTorch and finite differences."""
    check_op(lambda a, b: (a @ b).tanh().sum(), (3, 4), (4, 2),
             ref=lambda a, b: np.tanh(a @ b).sum())


def test_tensor_keeps_numpy_dtype():
    assert dtrain.tensor(np.arange(3, dtype=np.int32)).dtype == dtrain.int32
