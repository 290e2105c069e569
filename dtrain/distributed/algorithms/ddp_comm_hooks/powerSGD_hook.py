"""PowerSGD gradient compression for DDP (Vogels et al., 2019, https://arxiv.org/abs/1905.13727),
as ``torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook``: the same state, the same
arithmetic, the same random starting point for a given ``random_seed``.

Each gradient matrix M (n x m; a parameter of any shape is viewed as ``shape[0]`` rows) is
replaced by a rank-r approximation P Q^T computed by one step of power iteration shared by
all ranks: P = M Q (all-reduced), P orthogonalized, Q = M^T P (all-reduced, averaged); a rank
sends (n + m) r numbers instead of n m. A matrix is compressed only if that saves at least
``min_compression_rate`` times (vectors never do with the default rate: n + 1 > n / 2);
the others go uncompressed, as one all-reduce per bucket. With error feedback, what the
approximation dropped on this rank is added to its next gradient; with warm start, Q
carries over from step to step. The first ``start_powerSGD_iter`` steps are plain
all-reduces.

Example:
    >>> from dtrain.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD
    >>> state = powerSGD.PowerSGDState(process_group=None, matrix_approximation_rank=1,
    ...                                start_powerSGD_iter=10, min_compression_rate=0.5)
    >>> ddp_model.register_comm_hook(state, powerSGD.powerSGD_hook)
"""
import logging
import math
import numbers
import warnings

import numpy

from .... import comm as dist
from ....parallel.comm_hooks import Future
from ....tensor.backend import get_array_module
from .torch_normal import TorchNormal

__all__ = ["PowerSGDState", "powerSGD_hook", "batched_powerSGD_hook"]

logger = logging.getLogger(__name__)


class PowerSGDState:
    r"""The hyperparameters of PowerSGD and its state across steps, for every bucket of one DDP.

    Args:
        process_group: the group the gradients are averaged over (None: the world).
        matrix_approximation_rank: r, the rank of the approximation (the lower, the stronger
            the compression; 1 to 4 is typical; a matrix of fewer rows or columns uses that).
        start_powerSGD_iter: the steps of plain all-reduce before compression starts; must be
            > 1 with error feedback or warm start (DDP rebuilds its buckets after step 1,
            which would invalidate the per-bucket state).
        min_compression_rate: a matrix is compressed only if
            ``(n + m) * r * min_compression_rate < n * m``.
        use_error_feedback: add to each gradient what the previous approximation left out
            on this rank (one extra copy of the gradients in memory).
        warm_start: start each step's power iteration from the previous step's Q (else a
            new random Q every step).
        orthogonalization_epsilon: added to each column norm when orthogonalizing; with 0, a
            gradient matrix that is all zeros on every rank gives NaN (as in PyTorch; a
            warning names it): use e.g. 1e-8 if a layer's gradient can vanish.
        random_seed: seeds the NumPy RNG that draws one seed per random Q initialization
            (the same on every rank, as PyTorch's; the Qs themselves are drawn as
            ``torch.randn`` draws them after ``torch.manual_seed``).
        compression_stats_logging_frequency: log the compression statistics every this many
            steps once compression has started (logger ``dtrain.distributed...powerSGD_hook``).
        batch_tensors_with_same_shape: compress the matrices of one shape in a bucket as one
            batch (faster with many same-shaped layers; a copy of them is made).

    State, per bucket index: ``error_dict`` (the local errors, flat, bucket-sized),
    ``p_memory_dict``/``q_memory_dict`` (the flat P and Q of the bucket's compressed
    matrices), and ``iter``, the steps done. ``compression_stats()`` returns
    ``(rate, numel_before, numel_after)`` summed since compression started. A state pickles
    without its process group (it unpickles with the default group), as in PyTorch.

    Example:
        >>> state = PowerSGDState(None, matrix_approximation_rank=2, start_powerSGD_iter=100)
        >>> ddp.register_comm_hook(state, powerSGD_hook)
    """

    __slots__ = ["process_group", "matrix_approximation_rank", "start_powerSGD_iter", "min_compression_rate",
                 "orthogonalization_epsilon", "use_error_feedback", "warm_start", "batch_tensors_with_same_shape",
                 "rng", "error_dict", "p_memory_dict", "q_memory_dict", "iter", "total_numel_before_compression",
                 "total_numel_after_compression", "compression_stats_logging_frequency", "next_stats_report"]

    def __init__(self, process_group, matrix_approximation_rank=1, start_powerSGD_iter=1_000, min_compression_rate=2,
                 use_error_feedback=True, warm_start=True, orthogonalization_epsilon=0, random_seed=0,
                 compression_stats_logging_frequency=10_000, batch_tensors_with_same_shape=False):
        if not isinstance(matrix_approximation_rank, numbers.Integral) or matrix_approximation_rank < 1:
            raise ValueError(f"PowerSGDState: matrix_approximation_rank must be an integer >= 1, got "
                             f"{matrix_approximation_rank!r}")
        if not isinstance(start_powerSGD_iter, numbers.Integral) or start_powerSGD_iter < 0:
            raise ValueError(f"PowerSGDState: start_powerSGD_iter must be an integer >= 0, got {start_powerSGD_iter!r}")
        if (use_error_feedback or warm_start) and start_powerSGD_iter <= 1:
            raise ValueError(f"PowerSGDState: start_powerSGD_iter must be > 1 when use_error_feedback or warm_start "
                             f"is enabled, got {start_powerSGD_iter}: DDP rebuilds its buckets after the first "
                             f"step, so PowerSGD's per-bucket state can only start with the third")
        if not min_compression_rate >= 0:
            raise ValueError(f"PowerSGDState: min_compression_rate must be >= 0, got {min_compression_rate!r}")
        if not orthogonalization_epsilon >= 0:
            raise ValueError(f"PowerSGDState: orthogonalization_epsilon must be >= 0, got "
                             f"{orthogonalization_epsilon!r}")
        if not isinstance(random_seed, numbers.Integral) or not 0 <= random_seed < 2 ** 32:
            raise ValueError(f"PowerSGDState: random_seed must be an integer in [0, 2**32), got {random_seed!r}")
        logger.info("PowerSGD config: matrix_approximation_rank = %s; start_powerSGD_iter = %s; min_compression_rate "
                    "= %s; orthogonalization_epsilon = %s; use_error_feedback = %s; warm_start = %s; random_seed = %s; "
                    "compression_stats_logging_frequency = %s; batch_tensors_with_same_shape = %s",
                    matrix_approximation_rank, start_powerSGD_iter, min_compression_rate, orthogonalization_epsilon,
                    use_error_feedback, warm_start, random_seed, compression_stats_logging_frequency,
                    batch_tensors_with_same_shape)
        self.process_group = process_group
        self.matrix_approximation_rank = matrix_approximation_rank
        self.start_powerSGD_iter = start_powerSGD_iter
        self.min_compression_rate = min_compression_rate
        self.use_error_feedback = use_error_feedback
        self.warm_start = warm_start
        self.orthogonalization_epsilon = orthogonalization_epsilon
        # one seed per random initialization of Q, in the same order on every rank: the same
        # projection everywhere, a different one each time
        self.rng = numpy.random.RandomState(random_seed)
        self.error_dict, self.p_memory_dict, self.q_memory_dict = {}, {}, {}  # bucket index -> flat array
        self.iter = 0
        self.total_numel_before_compression = self.total_numel_after_compression = 0
        self.compression_stats_logging_frequency = max(1, compression_stats_logging_frequency)
        self.next_stats_report = 0
        self.batch_tensors_with_same_shape = batch_tensors_with_same_shape

    def __getstate__(self):
        """Every field but the process group (which does not pickle)."""
        logger.warning("NOTE: Process group is not serializable and excluded from a saved state.")
        return {slot: getattr(self, slot) for slot in self.__slots__ if slot != "process_group"}

    def __setstate__(self, state):
        """The fields of ``__getstate__``; the process group becomes the default group (None)."""
        logger.warning("NOTE: Process group will be set to a default group (i.e. the world size). If a different "
                       "group is desired, please set `self.process_group` after PowerSGD state is loaded.")
        self.process_group = None
        for slot, value in state.items():
            setattr(self, slot, value)

    def maybe_increase_iter(self, bucket):
        """Count a step when the step's last bucket goes through the hook."""
        if bucket.is_last():
            self.iter += 1
        if self.iter == self.start_powerSGD_iter:
            logger.info("Start to apply PowerSGD after %s iterations.", self.iter)

    def compression_stats(self):
        """``(rate, numel_before, numel_after)``: the elements the buckets held and the ones
        sent, summed over every compressed step; rate = before / after (0 before any)."""
        before, after = self.total_numel_before_compression, self.total_numel_after_compression
        return (before / after if after > 0 else 0, before, after)


def powerSGD_hook(state, bucket):
    """Reduce a bucket with PowerSGD, layer by layer (see the module docstring): a DDP comm hook.

    Per bucket: the error of the previous step is added (error feedback); the matrices worth
    compressing get P = M Q, P all-reduced and orthogonalized, Q = M^T P all-reduced and
    averaged, M replaced by P Q^T; the other gradients are all-reduced as one flat array
    and averaged. Three all-reduces per bucket (uncompressed, P's, Q's); the first two start
    during backward, the third when DDP waits for the bucket.

    Args:
        state: a :class:`PowerSGDState`.
        bucket: the :class:`~dtrain.parallel.bucket_reduction.GradBucket`.

    Returns:
        a Future whose value is the bucket's buffer, holding the averaged approximation.

    Example:
        >>> ddp.register_comm_hook(PowerSGDState(None, start_powerSGD_iter=10), powerSGD_hook)
    """
    group, buf = state.process_group, bucket.buffer()
    world_size = dist.get_world_size(group)
    if state.iter < state.start_powerSGD_iter:
        state.maybe_increase_iter(bucket)
        return _allreduce(buf, group, world_size)
    xp, index = get_array_module(buf), bucket.index()
    before = _add_error(state, index, buf)
    to_compress, uncompressed = _split(state, [g.array for g in bucket.gradients()])
    _report_compression_stats(bucket, state)
    flat = xp.concatenate([t.ravel() for t in uncompressed]) if uncompressed else None
    # started before the Ps are computed (PyTorch: after), so it overlaps them; the order of
    # the collectives is the same on every rank either way
    work_flat = None if flat is None else dist.all_reduce(flat, group=group, async_op=True)
    batches, restore = _batches(state, to_compress, xp)
    low_rank = _LowRank(state, index, batches, buf.dtype, xp)
    work_p = low_rank.all_reduce_p(group)

    def unpack_then_reduce_q(_):
        if work_flat is not None:
            work_flat.wait()
            xp.divide(flat, world_size, out=flat)
            start = 0
            for t in uncompressed:
                t[...] = flat[start:start + t.size].reshape(t.shape)
                start += t.size
        return low_rank.all_reduce_q(group)

    def decompress(fut):
        low_rank.decompress(fut.value(), world_size)
        restore()
        _finish(state, bucket, index, before, buf)
        return buf
    return Future(work_p).then(unpack_then_reduce_q).then(decompress)


def batched_powerSGD_hook(state, bucket):
    """Reduce a bucket with PowerSGD applied to the whole bucket at once: the flat gradients,
    zero-padded to a square, are one matrix (``torch``'s ``batched_powerSGD_hook``).

    Faster than :func:`powerSGD_hook` (one small matrix product per bucket) but usually much
    less accurate unless ``matrix_approximation_rank`` is 1: the square mixes the layers'
    rows and columns. Error feedback keeps the padded square's error. (PyTorch 2.13's own
    ``batched_powerSGD_hook`` stops at an ``AssertionError`` when compression starts: its
    orthogonalization expects a batch of matrices; this one is the computation it intends.)

    Args:
        state: a :class:`PowerSGDState`.
        bucket: the :class:`~dtrain.parallel.bucket_reduction.GradBucket`.

    Returns:
        a Future whose value is the bucket's buffer, holding the averaged approximation.

    Example:
        >>> ddp.register_comm_hook(PowerSGDState(None, start_powerSGD_iter=10), batched_powerSGD_hook)
    """
    group, buf = state.process_group, bucket.buffer()
    world_size = dist.get_world_size(group)
    if state.iter < state.start_powerSGD_iter:
        state.maybe_increase_iter(bucket)
        return _allreduce(buf, group, world_size)
    xp, index, total = get_array_module(buf), bucket.index(), buf.size
    side = math.ceil(math.sqrt(total))
    state.total_numel_before_compression += total
    state.total_numel_after_compression += side * min(side, state.matrix_approximation_rank) * 2
    padded = xp.zeros(side * side, buf.dtype)
    padded[:total] = buf
    _report_compression_stats(bucket, state)
    before = _add_error(state, index, padded)
    low_rank = _LowRank(state, index, [padded.reshape(1, side, side)], buf.dtype, xp)
    work_p = low_rank.all_reduce_p(group)

    def decompress(fut):
        low_rank.decompress(fut.value(), world_size)
        _finish(state, bucket, index, before, padded)
        buf[...] = padded[:total]
        return buf
    return Future(work_p).then(lambda _: low_rank.all_reduce_q(group)).then(decompress)


def _allreduce(buf, group, world_size):
    """The plain average before compression starts (divided first, as PyTorch's ``_allreduce_fut``)."""
    buf /= world_size
    return Future(dist.all_reduce(buf, group=group, async_op=True), buf)


def _add_error(state, index, flat):
    """Error feedback: add the bucket's previous local error to ``flat`` (a first step makes a
    zero error); return a copy of the sum, or None without error feedback."""
    if not state.use_error_feedback:
        return None
    error = state.error_dict.get(index)
    if error is None:
        logger.info("A zero tensor of length %s that represents local error is created.", flat.size)
        state.error_dict[index] = get_array_module(flat).zeros_like(flat)
    elif error.shape != flat.shape:
        raise RuntimeError(f"powerSGD_hook: bucket {index} holds {flat.size} gradient elements but its error feedback "
                           f"from an earlier step has {error.size}: the buckets changed after PowerSGD started. Keep "
                           f"the model and bucket_cap_mb fixed, and start_powerSGD_iter > 1 (DDP rebuilds its "
                           f"buckets once, after the first step)")
    else:
        flat += error
    return flat.copy()


def _finish(state, bucket, index, before, after):
    """Keep the local error (what this rank put in minus the average it got), drop P and Q
    without warm start, count the step."""
    if state.use_error_feedback:
        state.error_dict[index] = before - after
    if not state.warm_start:
        state.p_memory_dict.clear()
        state.q_memory_dict.clear()
    state.maybe_increase_iter(bucket)


def _should_compress(num_rows, num_cols, rank, min_compression_rate):
    """``(compress?, numel uncompressed, numel compressed)`` of an n x m matrix at rank r."""
    uncompressed, compressed = num_rows * num_cols, (num_rows + num_cols) * rank
    return compressed * min_compression_rate < uncompressed, uncompressed, compressed


def _split(state, gradients):
    """The bucket's gradients as (matrices to compress, n x m views; the others), counted in
    the state's statistics."""
    to_compress, uncompressed = [], []
    for grad in gradients:
        matrix = grad.reshape(grad.shape[0] if grad.ndim else 1, -1)  # a view: the bucket's slots are contiguous
        n, m = matrix.shape
        compress, numel, compressed = _should_compress(n, m, min(n, m, state.matrix_approximation_rank),
                                                       state.min_compression_rate)
        state.total_numel_before_compression += numel
        if compress:
            to_compress.append(matrix)
            state.total_numel_after_compression += compressed
        else:
            uncompressed.append(grad)
            state.total_numel_after_compression += numel
    return to_compress, uncompressed


def _batches(state, matrices, xp):
    """The matrices as batches (b, n, m), grouped by shape in order of first appearance (as
    PyTorch lays out P and Q, batched or not): with ``batch_tensors_with_same_shape``, one
    stacked copy per shape, else one view per matrix. Returns ``(batches, restore)``;
    ``restore()`` copies stacked batches back into the bucket."""
    by_shape = {}
    for matrix in matrices:
        by_shape.setdefault(matrix.shape, []).append(matrix)
    if not state.batch_tensors_with_same_shape:
        return [matrix[None] for group in by_shape.values() for matrix in group], lambda: None
    batches = [group[0][None] if len(group) == 1 else xp.stack(group) for group in by_shape.values()]

    def restore():
        for group, batch in zip(by_shape.values(), batches):
            if len(group) > 1:
                for matrix, result in zip(group, batch):
                    matrix[...] = result
    return batches, restore


class _LowRank:
    """P and Q of one bucket's batches of matrices: allocated (or kept from the previous step
    with warm start) in the state's flat per-bucket arrays, Q initialized and orthogonalized,
    P = M Q computed; then the two all-reduces and the decompression."""

    def __init__(self, state, index, batches, dtype, xp):
        self.state, self.batches, self.xp = state, batches, xp
        shapes = [(b, n, m, min(n, m, state.matrix_approximation_rank)) for b, n, m in (t.shape for t in batches)]
        p_size, q_size = sum(b * n * r for b, n, m, r in shapes), sum(b * m * r for b, n, m, r in shapes)
        randomize = not state.warm_start or index not in state.p_memory_dict
        if randomize:
            state.p_memory_dict[index] = xp.empty(p_size, dtype)
            state.q_memory_dict[index] = xp.empty(q_size, dtype)
        elif state.p_memory_dict[index].size != p_size or state.q_memory_dict[index].size != q_size:
            raise RuntimeError(f"powerSGD_hook: bucket {index}'s compressed matrices need P and Q of {p_size} and "
                               f"{q_size} elements, but warm start kept {state.p_memory_dict[index].size} and "
                               f"{state.q_memory_dict[index].size} from an earlier step: the buckets changed after "
                               f"PowerSGD started. Keep the model and bucket_cap_mb fixed")
        self.p_memory, self.q_memory = state.p_memory_dict[index], state.q_memory_dict[index]
        self.ps, self.qs = _views(self.p_memory, [(b, n, r) for b, n, m, r in shapes]), \
            _views(self.q_memory, [(b, m, r) for b, n, m, r in shapes])
        if randomize:
            # the seed is drawn even for a bucket with nothing to compress, as PyTorch does:
            # the seeds of the later buckets and steps stay the same as PyTorch's
            normal = TorchNormal(int(state.rng.randint(1_000_000_000)))
            for q in self.qs:
                q[...] = xp.asarray(normal.randn(q.shape, q.dtype))
        for q in self.qs:
            _orthogonalize(q, state.orthogonalization_epsilon)
        for m, q, p in zip(batches, self.qs, self.ps):
            xp.matmul(m, q, out=p)

    def all_reduce_p(self, group):
        """Start the sum of the Ps (no division: they are orthogonalized next); None if empty."""
        return dist.all_reduce(self.p_memory, group=group, async_op=True) if self.p_memory.size else None

    def all_reduce_q(self, group):
        """Orthogonalize the summed Ps, compute Q = M^T P, start the sum of the Qs."""
        for p in self.ps:
            _orthogonalize(p, self.state.orthogonalization_epsilon)
        for m, p, q in zip(self.batches, self.ps, self.qs):
            self.xp.matmul(m.transpose(0, 2, 1), p, out=q)
        return dist.all_reduce(self.q_memory, group=group, async_op=True) if self.q_memory.size else None

    def decompress(self, work, world_size):
        """Wait for the Qs, average them, write each M = P Q^T."""
        if work is not None:
            work.wait()
        self.q_memory /= world_size
        for p, q, m in zip(self.ps, self.qs, self.batches):
            self.xp.matmul(p, q.transpose(0, 2, 1), out=m)


def _views(flat, shapes):
    views, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        views.append(flat[start:start + n].reshape(shape))
        start += n
    return views


def _orthogonalize(matrices, epsilon=0):
    """Orthonormalize the columns of each matrix of a batch (b, n, r), r <= n, in place:
    Gram-Schmidt for r <= 2 or half precision (where QR is unavailable), else QR."""
    if matrices.shape[2] <= 2 or matrices.dtype.itemsize < 4:
        _orthogonalize_gram_schmidt(matrices, epsilon)
    else:
        matrices[...] = get_array_module(matrices).linalg.qr(matrices)[0]


def _orthogonalize_gram_schmidt(matrices, epsilon=0):
    """Gram-Schmidt on each matrix of a batch, column by column, in place (as QR's Q up to
    the columns' signs, with epsilon 0)."""
    xp = get_array_module(matrices)
    cols = matrices.shape[2]
    for i in range(cols):
        col = matrices[:, :, i:i + 1]
        norm = xp.linalg.norm(col, axis=1, keepdims=True)
        if epsilon == 0:
            zero = norm == 0
            if zero.any():  # 0 / 0: NaN, as in PyTorch, but said
                warnings.warn("PowerSGD: a matrix to orthogonalize has a column of zeros (a gradient that is zero on "
                              "every rank?); its result is NaN. Set orthogonalization_epsilon (e.g. 1e-8) in "
                              "PowerSGDState", RuntimeWarning, stacklevel=2)
                norm = xp.where(zero, xp.nan, norm).astype(norm.dtype)
            col /= norm
        else:
            col /= norm + epsilon
        if i + 1 < cols:
            rest = matrices[:, :, i + 1:]
            rest -= (col * rest).sum(axis=1, keepdims=True) * col


def _report_compression_stats(bucket, state):
    """Log the statistics at the last bucket of a step, every ``compression_stats_logging_frequency`` steps."""
    if bucket.is_last() and state.iter >= state.next_stats_report:
        rate, before, after = state.compression_stats()
        logger.info("Compression stats: iter %s, total before compression %s, total after compression %s, rate %s",
                    state.iter, before, after, rate)
        state.next_stats_report = state.iter + state.compression_stats_logging_frequency
