"""dtrain.autograd.detect_anomaly names the op whose forward or backward first made NaN/inf."""
import pytest

import dtrain
from dtrain.autograd import detect_anomaly, is_anomaly_enabled, set_detect_anomaly


def test_forward_nan_names_the_op():
    """log of a negative number: the error names Log, not a later op."""
    x = dtrain.tensor([1.0, -1.0], requires_grad=True)
    with detect_anomaly():
        with pytest.raises(RuntimeError, match="Function 'Log' returned nan or inf values in its forward"):
            (x.log() * 2).sum()


def test_backward_nan_names_the_backward_op():
    """sqrt at 0 is finite forward but its gradient is inf: the error names SqrtBackward."""
    x = dtrain.tensor([0.0, 4.0], requires_grad=True)
    with detect_anomaly():
        y = x.sqrt().sum()
        with pytest.raises(RuntimeError, match="Function 'SqrtBackward' returned nan or inf values in its 0th"):
            y.backward()


def test_backward_error_shows_where_the_op_was_created():
    """The backward error carries the forward call's stack, pointing at this test."""
    x = dtrain.tensor([0.0], requires_grad=True)
    with detect_anomaly():
        y = x.sqrt().sum()
        with pytest.raises(RuntimeError) as info:
            y.backward()
    assert "test_backward_error_shows_where_the_op_was_created" in str(info.value)


def test_off_by_default_and_restored():
    """Without the mode NaN passes silently (as PyTorch); the context restores the mode."""
    assert not is_anomaly_enabled()
    x = dtrain.tensor([-1.0], requires_grad=True)
    x.log().sum().backward()  # nan, no error
    with detect_anomaly():
        assert is_anomaly_enabled()
    assert not is_anomaly_enabled()
    set_detect_anomaly(True)
    try:
        assert is_anomaly_enabled()
    finally:
        set_detect_anomaly(False)
    assert not is_anomaly_enabled()


def test_nan_input_is_not_blamed_on_the_op():
    """In forward, an op fed NaN propagates it without being named (the NaN came from outside)."""
    x = dtrain.tensor([float("nan"), 1.0], requires_grad=True)
    with detect_anomaly():
        y = (x * 2).exp().sum()
    assert y.item() != y.item()  # nan
