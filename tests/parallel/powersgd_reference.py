"""PowerSGD's math for N simulated ranks in one process, written out in NumPy from the paper
and PyTorch's hook (the reference of test_powersgd.py and powersgd_checks.py).

One call is one step of one bucket on every rank at once: ``grads[i]`` is rank i's flat
gradient. Only the random starting Q comes from dtrain (``TorchNormal``, checked against
``torch.randn`` on its own in test_powersgd.py).
"""
import math

import numpy as np

from dtrain.distributed.algorithms.ddp_comm_hooks.torch_normal import TorchNormal


def orthonormal(a, qr_above_rank=2):
    """Columns of ``a`` (n x r) orthonormalized: Gram-Schmidt (QR with R's diagonal made
    positive) for r <= 2, LAPACK's QR as it comes above (as PyTorch chooses)."""
    q, r = np.linalg.qr(a)
    return q if a.shape[1] > qr_above_rank else q * np.where(np.diag(r) < 0, -1, 1)


class Reference:
    """PowerSGD state of N simulated ranks (their errors, the shared Qs, the seed RNG)."""

    def __init__(self, world_size, rank=1, start=2, min_rate=2, error_feedback=True, warm_start=True, seed=0,
                 batch_same_shape=False):
        self.n, self.r, self.start, self.min_rate = world_size, rank, start, min_rate
        self.error_feedback, self.warm_start, self.batch = error_feedback, warm_start, batch_same_shape
        self.seeds = np.random.RandomState(seed)
        self.errors, self.qs, self.iter = {}, {}, 0  # bucket -> per-rank error / per-matrix Q

    def step(self, index, grads, shapes, last):
        """The averaged bucket every rank receives, and updates the per-rank errors."""
        if self.iter < self.start:
            self.iter += last
            return np.mean(grads, axis=0)
        x = [g + self.errors.get(index, [0] * self.n)[i] for i, g in enumerate(grads)]
        out = np.empty_like(x[0])
        offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
        compressed = {}  # matrix shape -> its slots, in order of first appearance
        for k, shape in enumerate(shapes):
            n = shape[0] if shape else 1
            m = math.prod(shape) // n
            r = min(n, m, self.r)
            if (n + m) * r * self.min_rate < n * m:
                compressed.setdefault((n, m), []).append(k)
            else:
                out[offsets[k]:offsets[k + 1]] = np.mean([xi[offsets[k]:offsets[k + 1]] for xi in x], axis=0)
        fresh = not self.warm_start or index not in self.qs
        if fresh:
            normal, self.qs[index] = TorchNormal(int(self.seeds.randint(1_000_000_000))), {}
            for (n, m), slots in compressed.items():
                r = min(n, m, self.r)
                draws = [normal.randn((len(slots), m, r), x[0].dtype)] if self.batch else \
                    [normal.randn((1, m, r), x[0].dtype) for _ in slots]
                for k, q in zip(slots, np.concatenate(draws)):
                    self.qs[index][k] = q
        for slots in compressed.values():
            for k in slots:
                mats = [xi[offsets[k]:offsets[k + 1]].reshape(shapes[k][0], -1) for xi in x]
                q = orthonormal(self.qs[index][k])
                p = orthonormal(sum(mat @ q for mat in mats))
                q = np.mean([mat.T @ p for mat in mats], axis=0)
                self.qs[index][k] = q
                out[offsets[k]:offsets[k + 1]] = (p @ q.T).ravel()
        if self.error_feedback:
            self.errors[index] = [xi - out for xi in x]
        self.iter += last
        return out

    def batched_step(self, index, grads, last):
        """``batched_powerSGD_hook``: the whole bucket, zero-padded to a square, as one matrix."""
        if self.iter < self.start:
            self.iter += last
            return np.mean(grads, axis=0)
        total = grads[0].size
        side = math.ceil(math.sqrt(total))
        padded = [np.concatenate([g, np.zeros(side * side - total, g.dtype)]) for g in grads]
        x = [p + self.errors.get(index, [0] * self.n)[i] for i, p in enumerate(padded)]
        mats = [xi.reshape(side, side) for xi in x]
        if not self.warm_start or index not in self.qs:
            self.qs[index] = TorchNormal(int(self.seeds.randint(1_000_000_000))).randn(
                (side, min(side, self.r)), x[0].dtype)
        q = orthonormal(self.qs[index])
        p = orthonormal(sum(mat @ q for mat in mats))
        self.qs[index] = q = np.mean([mat.T @ p for mat in mats], axis=0)
        out = (p @ q.T).ravel()
        if self.error_feedback:
            self.errors[index] = [xi - out for xi in x]
        self.iter += last
        return out[:total]


class FakeBucket:
    """What a comm hook reads of a DDP bucket (``buffer``, ``gradients``, ``index``,
    ``is_last``), over a flat NumPy array laid out as ``shapes``."""

    def __init__(self, flat, shapes, index, last):
        self.flat, self.shapes, self._index, self._last = flat, shapes, index, last

    def buffer(self):
        return self.flat

    def gradients(self):
        import dtrain
        offsets = np.cumsum([0] + [math.prod(s) for s in self.shapes])
        return [dtrain.as_tensor(self.flat[a:b].reshape(s)) for a, b, s in zip(offsets, offsets[1:], self.shapes)]

    def index(self):
        return self._index

    def is_last(self):
        return self._last
