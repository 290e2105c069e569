"""What bf16_compress_wrapper costs per bucket: the time of one comm hook call (start to
the averaged bucket), each hook on the same bucket, at N ranks.

Run under MPI, one BLAS thread per rank:

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bf16_wrapper.py [--rounds 7] [--rank 4]

The bucket: a float32 GPT-like block's gradients, (1024, 1024) + (1024,) + (4096, 1024)
(5.2 M elements, 21 MB). Hooks: ``allreduce_hook``; ``bf16_compress_hook``;
``bf16_compress_wrapper(allreduce_hook)``; ``powerSGD_hook`` (rank ``--rank``, compression
from the first call); ``bf16_compress_wrapper(powerSGD_hook)`` on the CPU's bfloat16 and
on the float32 emulation (as on a GPU, forced here). The variants take turns within each
round (a noisy machine slows all alike); the figure is the slowest rank's, median over
the rounds after a warm-up round.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import dtrain.comm as dist  # noqa: E402
from dtrain.distributed.algorithms.ddp_comm_hooks import default_hooks  # noqa: E402
from dtrain.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD  # noqa: E402
from dtrain.tensor.creation import as_tensor  # noqa: E402

SHAPES = [(1024, 1024), (1024,), (4096, 1024)]


class Bucket:
    """What a hook reads of a DDP bucket, over a flat float32 array laid out as SHAPES."""

    def __init__(self, flat):
        self.flat, self._div_factor = flat, dist.get_world_size()

    def buffer(self):
        return self.flat

    def gradients(self):
        offsets = np.cumsum([0] + [int(np.prod(s)) for s in SHAPES])
        return [as_tensor(self.flat[a:b].reshape(s)) for a, b, s in zip(offsets, offsets[1:], SHAPES)]

    def index(self):
        return 0

    def is_last(self):
        return True


class Emulated:
    """bf16_compress_wrapper(hook) on the float32 emulation (no bfloat16 dtype, as on a GPU)."""

    def __init__(self, hook):
        self.hook = default_hooks.bf16_compress_wrapper(hook)

    def __call__(self, state, bucket):
        real, default_hooks._host_bfloat16 = default_hooks._host_bfloat16, lambda buf: None
        try:
            return self.hook(state, bucket)
        finally:
            default_hooks._host_bfloat16 = real


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rank", type=int, default=4, help="PowerSGD's matrix_approximation_rank")
    args = parser.parse_args()
    dist.init_process_group()

    def psgd():
        return powerSGD.PowerSGDState(None, matrix_approximation_rank=args.rank, start_powerSGD_iter=0,
                                      use_error_feedback=False, warm_start=False)
    variants = {  # name: (hook, state)
        "allreduce_hook": (default_hooks.allreduce_hook, None),
        "bf16_compress_hook": (default_hooks.bf16_compress_hook, None),
        "bf16_compress_wrapper(allreduce_hook)": (default_hooks.bf16_compress_wrapper(default_hooks.allreduce_hook),
                                                  None),
        f"powerSGD_hook r={args.rank}": (powerSGD.powerSGD_hook, psgd()),
        f"bf16_compress_wrapper(powerSGD_hook) r={args.rank}":
            (default_hooks.bf16_compress_wrapper(powerSGD.powerSGD_hook), psgd()),
        f"  the same, float32 emulation r={args.rank}": (Emulated(powerSGD.powerSGD_hook), psgd()),
    }
    grads = np.random.default_rng(dist.get_rank()).standard_normal(sum(int(np.prod(s)) for s in SHAPES))
    grads = grads.astype(np.float32)
    times = {name: [] for name in variants}
    for round_ in range(args.rounds + 1):
        for name, (hook, state) in variants.items():
            bucket = Bucket(grads.copy())
            dist.barrier()
            start = time.perf_counter()
            hook(state, bucket).wait()
            elapsed = np.array([time.perf_counter() - start])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            if round_:  # the first round warms up
                times[name].append(float(elapsed[0]))
    if dist.get_rank() == 0:
        base = statistics.median(times["allreduce_hook"])
        print(f"{dist.get_world_size()} ranks, bucket {SHAPES} float32, median of {args.rounds} rounds")
        for name, t in times.items():
            print(f"{name:48s} {statistics.median(t) * 1e3:8.1f} ms  {statistics.median(t) / base:5.2f}x all-reduce")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
