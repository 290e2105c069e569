"""Review of session 7 (engine routing records, 62fc15f): demonstrations of a bug found.

The backward walk drops an array's routing record when a node pops it (its one edge used
it). A pass-through backward (Add: ``(g, g)``) then routes the same array to two leaves,
and each edge counts it once in turn: the first leaf sees a count of 1, adopts it as .grad
and drops the record again, so the second leaf adopts the very same array. Later in-place
accumulation into one .grad writes into the other's (and deterministic mode's in-place
micro-shard sums add into it twice). Before 62fc15f the popped array kept its count, so the
second route counted 2 and both leaves copied.

Marked xfail(strict): they pass (and must lose the marker) once the walk counts all the
edges of a node's gradients before it routes any of them.
"""
import numpy as np
import pytest

import dtrain
import dtrain.nn as nn
from dtrain.parallel import DistributedDataParallel as DDP

BUG = pytest.mark.xfail(strict=True, reason="engine: a pass-through array adopted by two leaves (62fc15f)")


@BUG
def test_two_leaves_never_adopt_one_array():
    a = dtrain.ones(3, requires_grad=True)
    b = dtrain.ones(3, requires_grad=True)
    ((a + b) * 2).sum().backward()  # Mul's backward makes a fresh array; Add passes it to both leaves
    assert a.grad.array is not b.grad.array
    (a * 3 + b * 5).sum().backward()  # accumulates in place into each .grad
    np.testing.assert_array_equal(a.grad.numpy(), [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(b.grad.numpy(), [7.0, 7.0, 7.0])


@BUG
def test_scalar_leaves_added_at_the_root():
    a = dtrain.tensor(1.0, requires_grad=True)
    b = dtrain.tensor(2.0, requires_grad=True)
    (a + b).backward()  # the seed itself is passed to both leaves
    (a * 3 + b * 5).backward()
    assert (float(a.grad), float(b.grad)) == (4.0, 6.0)


class _Sum(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(dtrain.ones(4))
        self.q = nn.Parameter(dtrain.ones(4))

    def forward(self, x):
        return (self.p + self.q) * x.sum(0)


@BUG
def test_micro_shard_sums_of_parameters_added_together(world):
    """At one rank the fixed tree sums the micro-shard gradients in their own arrays: two
    aliases holding one array get it added into twice (44 instead of 24 for p[0])."""
    x = dtrain.tensor(np.arange(16, dtype=np.float32).reshape(4, 4))
    model = _Sum()
    DDP(model, micro_shard_size=2)(x).sum().backward()
    expected = x.numpy().sum(0)  # the mean over ranks (1) of the sum over micro-shards
    np.testing.assert_array_equal(model.p.grad.numpy(), expected)
    np.testing.assert_array_equal(model.q.grad.numpy(), expected)
