"""dtrain.tensor.reachable_leaves: the leaves a backward from some outputs would write .grad to."""
import pytest

import dtrain
from dtrain.tensor import reachable_leaves


def names(leaves, **named):
    by_id = {id(t): n for n, t in named.items()}
    return [by_id[id(t)] for t in leaves]


def test_finds_exactly_the_leaves_backward_reaches():
    """Leaves on the path count once each, in the walk's order; a leaf that is not used, one
    that does not require grad and one used only under no_grad are not reached."""
    a, b, c, unused = (dtrain.ones(3, requires_grad=True) for _ in range(4))
    frozen = dtrain.ones(3)
    with dtrain.no_grad():
        hidden = c * 2
    out = ((a * b + a) * frozen + hidden).sum()
    got = reachable_leaves(out)
    assert len(got) == 2
    assert sorted(names(got, a=a, b=b)) == ["a", "b"]
    out.backward()
    written = [n for n, t in dict(a=a, b=b, c=c, unused=unused).items() if t.grad is not None]
    assert sorted(written) == ["a", "b"]


def test_order_is_deterministic_and_outputs_deduplicate():
    """The same graph gives the same order; a leaf reached from two outputs appears once; an
    output that is itself a leaf requiring grad is reached (first)."""
    w1, w2, w3 = (dtrain.ones(2, requires_grad=True) for _ in range(3))

    def graph():
        h = w1 * 3
        return [(h * w2).sum(), (h + w3).sum(), w3]
    first = names(reachable_leaves(graph()), w1=w1, w2=w2, w3=w3)
    assert len(first) == 3 and first[0] == "w3"
    assert sorted(first) == ["w1", "w2", "w3"]
    for _ in range(3):
        assert names(reachable_leaves(graph()), w1=w1, w2=w2, w3=w3) == first


def test_outputs_without_graph_reach_nothing():
    """A constant output, or an output under no_grad, reaches no leaf."""
    w = dtrain.ones(2, requires_grad=True)
    with dtrain.no_grad():
        y = w * 2
    assert reachable_leaves([dtrain.ones(2), y]) == []
    assert reachable_leaves([]) == []


def test_freed_graph_and_non_tensors_are_errors():
    """After a backward without retain_graph the graph is gone: asking raises as a second
    backward does. A non-Tensor output is a TypeError naming its type."""
    w = dtrain.ones(2, requires_grad=True)
    out = (w * w).sum()
    out.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        reachable_leaves(out)
    with pytest.raises(TypeError, match="got list"):
        reachable_leaves([[out]])


def test_graph_survives_the_query():
    """Asking does not consume the graph: backward afterwards writes the same gradient."""
    w = dtrain.tensor([1.0, 2.0], requires_grad=True)
    out = (w * w).sum()
    assert len(reachable_leaves(out)) == 1
    out.backward()
    assert w.grad.tolist() == [2.0, 4.0]
