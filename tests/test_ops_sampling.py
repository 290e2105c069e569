"""multinomial: draws follow the weights (with and without replacement), are reproducible
under dtrain.manual_seed, never pick a zero weight; each bad-input message."""
import numpy as np
import pytest

import dtrain


def test_multinomial_shapes_and_dtype():
    """1-D weights give (num_samples,), 2-D give (rows, num_samples), as int64."""
    assert dtrain.multinomial(dtrain.ones(5), 3).shape == (3,)
    out = dtrain.ones(2, 5).multinomial(4, replacement=True)
    assert out.shape == (2, 4) and out.dtype == dtrain.int64


def test_multinomial_reproducible_under_manual_seed():
    """The same seed gives the same draws; a generator argument is used instead of the default."""
    w = dtrain.rand(3, 10)
    dtrain.manual_seed(7)
    a = dtrain.multinomial(w, 4)
    dtrain.manual_seed(7)
    b = dtrain.multinomial(w, 4)
    assert a.tolist() == b.tolist()
    g1, g2 = dtrain.Generator().manual_seed(3), dtrain.Generator().manual_seed(3)
    draws = [dtrain.multinomial(w, 6, True, generator=g).tolist() for g in (g1, g2)]
    assert draws[0] == draws[1]


def test_multinomial_with_replacement_follows_the_weights():
    """Frequencies of 40,000 draws with replacement match the normalized weights (per row)."""
    dtrain.manual_seed(0)
    w = np.array([[1.0, 0.0, 3.0, 4.0], [0.0, 0.0, 5.0, 5.0]])
    draws = dtrain.multinomial(dtrain.tensor(w), 40000, replacement=True).numpy()
    for row, weights in zip(draws, w):
        freq = np.bincount(row, minlength=4) / row.size
        np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.01)
        assert freq[weights == 0].sum() == 0


def test_multinomial_without_replacement():
    """Without replacement a row never repeats a category and never picks a zero weight; the
    first draw follows the weights; drawing all non-zero categories returns each once."""
    dtrain.manual_seed(1)
    w = dtrain.tensor([[0.0, 1.0, 2.0, 7.0, 0.0]]).repeat(4000, 1)
    draws = dtrain.multinomial(w, 3).numpy()
    assert all(sorted(r) == [1, 2, 3] for r in draws)
    first = np.bincount(draws[:, 0], minlength=5) / len(draws)
    np.testing.assert_allclose(first, [0, 0.1, 0.2, 0.7, 0], atol=0.025)


def test_multinomial_float32_and_unnormalized():
    """float32 weights that do not sum to 1 are accepted."""
    out = dtrain.multinomial(dtrain.tensor([0.0, 20.0], dtype=dtrain.float32), 3, replacement=True)
    assert out.tolist() == [1, 1, 1]


@pytest.mark.parametrize("call, message", [
    (lambda: dtrain.multinomial(dtrain.ones(2, 2, 2), 1), r"multinomial: prob_dist must be 1 or 2 dim"),
    (lambda: dtrain.multinomial(dtrain.ones(3, dtype=dtrain.int64), 1), r"only supports floating-point dtypes"),
    (lambda: dtrain.multinomial(dtrain.ones(3), 0), r"cannot sample n_sample <= 0 samples"),
    (lambda: dtrain.multinomial(dtrain.ones(3), 4), r"cannot sample n_sample > prob_dist.size\(-1\) samples "
                                                    r"without replacement \(4 > 3\)"),
    (lambda: dtrain.multinomial(dtrain.tensor([1.0, -1.0]), 1), r"contains either `inf`, `nan` or element < 0"),
    (lambda: dtrain.multinomial(dtrain.tensor([1.0, float("nan")]), 1), r"contains either `inf`, `nan`"),
    (lambda: dtrain.multinomial(dtrain.zeros(2), 1), r"invalid multinomial distribution \(sum of probabilities <= 0\)"),
    (lambda: dtrain.multinomial(dtrain.tensor([1.0, 0.0, 0.0]), 2), r"not enough non-negative category to sample"),
    (lambda: dtrain.multinomial(dtrain.ones(2, 0), 1, True), r"number of categories cannot be zero"),
])
def test_multinomial_errors(call, message):
    """Bad shapes, dtypes, counts and weights are refused with PyTorch's wording."""
    with pytest.raises(RuntimeError, match=message):
        call()


def test_multinomial_of_a_non_tensor():
    """Weights given as a list are a TypeError naming the op."""
    with pytest.raises(TypeError, match="multinomial: expected a Tensor, got list"):
        dtrain.multinomial([0.5, 0.5], 1)
