"""Memory statistics: dtrain.tensor.memory counts the bytes of tensor storage alive (each base
array once) and their peak while tracking is on; dtrain.cuda's answer 0 without a GPU."""
import gc

import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from dtrain.tensor import memory


def test_alloc_and_free_move_the_counter_by_the_exact_bytes():
    """A float64 tensor of 1000 elements adds 8000 bytes; freeing it takes them back; the peak stays."""
    with memory.track():
        assert memory.memory_allocated() == 0
        x = dtrain.zeros(1000, dtype=dtrain.float64)
        assert memory.memory_allocated() == 8000
        y = dtrain.ones(10, 10, dtype=dtrain.float32)
        assert memory.memory_allocated() == 8400
        del x
        assert memory.memory_allocated() == 400
        assert memory.max_memory_allocated() == 8400
        memory.reset_peak_memory_stats()
        assert memory.max_memory_allocated() == 400
        del y
        assert memory.memory_allocated() == 0


def test_views_share_their_base():
    """Views (slice, view, transpose, .data, detach) add nothing; the bytes go when the last one dies."""
    with memory.track():
        x = dtrain.zeros(10, 100, dtype=dtrain.float64)
        views = [x[2:5], x.view(1000), x.t(), x.data, x.detach(), x[0][3:7]]
        assert memory.memory_allocated() == 8000
        del x
        assert memory.memory_allocated() == 8000
        views.clear()
        assert memory.memory_allocated() == 0


def test_existing_tensors_are_counted_when_passed():
    """Tensors made before tracking count only when passed to track(); figures stay after it."""
    w = dtrain.zeros(50, dtype=dtrain.float32)
    with memory.track():
        assert memory.memory_allocated() == 0
    with memory.track([w, w[:10]]):
        assert memory.memory_allocated() == 200
        with pytest.raises(RuntimeError, match="already on"):
            memory.enable()
    assert not memory.is_enabled()
    assert memory.memory_allocated() == 200 and memory.max_memory_allocated() == 200


def test_saved_arrays_of_a_recorded_op_count():
    """A dropout mask that only the recorded op keeps is counted, and freed with the graph."""
    x = dtrain.ones(1000, dtype=dtrain.float64, requires_grad=True)
    with memory.track():
        y = nn.functional.dropout(x, 0.5)
        assert memory.memory_allocated() == 16000  # the output and the mask
        del y
        gc.collect()
        assert memory.memory_allocated() == 0


def _mlp_peak():
    dtrain.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10)).double()
    x = dtrain.randn(64, 100, dtype=dtrain.float64)
    with memory.track(list(model.parameters()) + [x]):
        start = memory.memory_allocated()
        nn.functional.cross_entropy(model(x), dtrain.zeros(64, dtype=dtrain.int64)).backward()
        end = memory.memory_allocated()
    return start, memory.max_memory_allocated(), end


def test_mlp_forward_backward_peak_is_plausible_and_reproducible():
    """A 100-200-10 MLP on 64 rows (float64): the peak is at least parameters + input + the two
    hidden arrays the forward keeps (linear and ReLU outputs) and at most that plus the gradients
    and two more hidden-sized arrays; the gradients stay after backward; two runs agree exactly."""
    params = (100 * 200 + 200 + 200 * 10 + 10) * 8
    start, peak, end = _mlp_peak()
    assert start == params + 64 * 100 * 8
    assert end == start + params  # the .grads
    hidden = 64 * 200 * 8
    assert start + 2 * hidden <= peak <= start + params + 4 * hidden, (start, peak)
    assert _mlp_peak() == (start, peak, end)


def test_tracking_off_counts_nothing():
    """With tracking off, Tensors are not registered (the hook is None)."""
    assert not memory.is_enabled()
    with memory.track():
        pass
    x = dtrain.zeros(100)
    assert memory.memory_allocated() == 0 and x.numel() == 100


def test_cuda_memory_queries_answer_zero_without_a_gpu():
    """dtrain.cuda's memory functions answer 0 (and reset does nothing) without a GPU, as PyTorch's."""
    if dtrain.cuda.is_available():
        pytest.skip("a GPU is present")
    dtrain.cuda.reset_peak_memory_stats()
    assert dtrain.cuda.memory_allocated() == 0 == dtrain.cuda.max_memory_allocated()


def test_bad_device_name_is_an_error():
    """A device name that is no device is reported."""
    with pytest.raises(Exception, match="nodevice"):
        memory.memory_allocated("nodevice")
    np.testing.assert_equal(memory.memory_allocated("cpu"), memory.memory_allocated())
