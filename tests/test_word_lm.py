"""examples/word_lm.py (the LSTM word language model): it learns, and its data helpers cut
the stream as pytorch/examples' word_language_model does."""
import math
import os
import runpy

import numpy as np

import dtrain

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "word_lm.py")


def _module():
    return runpy.run_path(EXAMPLE)


def test_word_lm_loss_falls(tmp_path, capsys):
    """Three short epochs of a small LSTM: the training loss falls every epoch, the
    validation loss ends lower than it started and below that of the training text's word
    frequencies (it learned more than unigram statistics), and the saved best model gives
    the test loss printed at the end."""
    save = tmp_path / "lm.pt"
    history, test_loss = _module()["main"](["--epochs", "3", "--emsize", "32", "--nhid", "32", "--words", "30000",
                                            "--log-interval", "10", "--save", str(save)])
    out = capsys.readouterr().out
    unigram_ppl = float(out.split("train unigram ")[1].split()[0])
    train, val = zip(*history)
    assert all(a > b for a, b in zip(train, train[1:])), f"training loss did not fall: {train}"
    assert val[-1] < val[0], f"validation loss did not fall: {val}"
    assert math.exp(min(val)) < unigram_ppl, f"validation ppl {math.exp(min(val)):.1f} vs unigram {unigram_ppl}"
    assert save.exists() and f"test ppl {math.exp(test_loss):8.2f}" in out
    assert "| epoch   1 |    10/" in out


def test_batchify_and_get_batch():
    """batchify makes bsz columns of the stream (dropping the remainder); get_batch returns
    bptt rows and the rows one step later, flattened; repackage_hidden detaches nested states."""
    m = _module()
    data = m["batchify"](dtrain.arange(23), 4)
    np.testing.assert_array_equal(data.numpy(), np.arange(20).reshape(4, 5).T)
    x, y = m["get_batch"](data, 0, 3)
    np.testing.assert_array_equal(x.numpy(), np.arange(20).reshape(4, 5).T[:3])
    np.testing.assert_array_equal(y.numpy(), np.arange(20).reshape(4, 5).T[1:4].reshape(-1))
    x, y = m["get_batch"](data, 3, 3)  # the last, shorter chunk
    assert tuple(x.shape) == (1, 4) and tuple(y.shape) == (4,)
    h = dtrain.ones(2, requires_grad=True) * 2
    hs = m["repackage_hidden"]((h, (h, h)))
    assert not hs[0].requires_grad and not hs[1][1].requires_grad
