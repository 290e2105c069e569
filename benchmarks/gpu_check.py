"""One command that checks dtrain on the GPUs of this machine and prints one table.

Sections (each survives the failure of another: its error is printed and recorded):
  environment  GPU names, driver, CUDA runtime, CuPy, NCCL, dtrain, NumPy, MPI, torch versions
  pytest       ``pytest -m gpu`` in a subprocess: passed / failed / skipped counts
  step         one training step of the reference MLP, CNN and GPT (benchmarks/step.py's
               models, same weights and data; the first losses must agree): dtrain on the CPU,
               dtrain on GPU 0, PyTorch on CUDA where installed (TF32 off: the same float32
               arithmetic). For the GPU variants, "host ms" is the wall time of the Python step
               with nothing synchronizing at the end (what the host spends queueing work),
               "device ms" the time between CUDA events around the same steps; host >= device
               means the GPU waits for Python (Python-bound).
  syncs        host synchronisations inside one training step (no ``.item()``): counted
               exactly by the CPU emulation's counter when emulated; on a real GPU a probe
               queues a spinning kernel first, so a step that waits for the device takes
               longer than the spin (the probe tells 0 from ">= 1", not the count)
  allreduce    all-reduce of float32 buffers, 4 KiB to 256 MiB, over every local GPU (2+),
               through dtrain.comm (NCCL backend) and CuPy's NCCL communicator directly;
               as nccl-tests define them: algbw = bytes / time, busbw = algbw * 2(n-1)/n
  ddp          DistributedDataParallel at 1 rank and at one rank per local GPU, each rank
               the reference batch (weak scaling): efficiency = step time(1) / step time(N);
               host syncs per DDP step where emulated
Ranks are started with ``python -m dtrain.launch --nproc N`` (this file, ``--worker ...``).

Usage: python benchmarks/gpu_check.py [--quick] [--json PATH] [--emulate N] [--skip SECTION ...]
                                      [--pytest-args "tests"] [--pytest-timeout 300]
  --quick      small sizes and few steps (a smoke run)
  --emulate N  run on tests/emulation's CuPy emulation with N NumPy-backed devices (as does
               DTRAIN_CUPY_EMULATION=N): every figure is then labelled EMULATED and says
               nothing about a GPU
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EMULATION_ENV = "DTRAIN_CUPY_EMULATION"
SECTIONS = ("environment", "pytest", "step", "syncs", "allreduce", "ddp")
WORKLOADS = ("mlp", "cnn", "gpt")
LR, MOMENTUM = 0.01, 0.9


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, few steps")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--emulate", type=int, default=None, metavar="N",
                   help="use the CuPy emulation with N devices (tests/emulation; EMULATED figures)")
    p.add_argument("--skip", nargs="+", default=[], choices=SECTIONS, help="sections not to run")
    p.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--pytest-args", default="tests", help="what `pytest -m gpu` runs (default: tests)")
    p.add_argument("--pytest-timeout", type=float, default=300.0, help="seconds before pytest is stopped")
    p.add_argument("--rank-timeout", type=float, default=180.0, help="seconds for each multi-rank run")
    p.add_argument("--worker", choices=("allreduce", "ddp"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.emulate is not None and args.emulate < 1:
        p.error(f"--emulate: expected the number of emulated GPUs (>= 1), got {args.emulate}")
    return args


def install_emulation(n):
    """Install tests/emulation's CuPy before dtrain is imported (as tests/conftest.py does) and
    put its bootstrap on PYTHONPATH for the processes this one starts. Returns the device count."""
    if n is not None:
        os.environ[EMULATION_ENV] = str(n)
    if os.environ.get(EMULATION_ENV, "").strip() in ("", "0"):
        return 0
    emulation = sys.modules.get("emulation")  # a rank: boot/sitecustomize.py installed it already
    if emulation is None or not emulation.installed():
        if "dtrain" in sys.modules:
            raise RuntimeError("the CuPy emulation must be installed before dtrain is imported")
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        try:
            import emulation
        finally:
            del sys.path[0]
        emulation.install(emulation.requested())
    os.environ["PYTHONPATH"] = emulation.child_env(os.environ)["PYTHONPATH"]
    return emulation.requested()


def _syncs():
    """The emulation's host-synchronisation counter (None on real CuPy)."""
    mod = sys.modules.get("emulation")
    return mod.syncs if mod is not None and mod.installed() else None


def _cupy():
    from dtrain.tensor.backend import cupy
    if cupy is None:
        raise RuntimeError("CuPy is not importable: install dtrain[cuda] (or pass --emulate N)")
    return cupy


def _gpu_count():
    import dtrain
    return dtrain.cuda.device_count() if dtrain.cuda.is_available() else 0


def _err(e):
    return f"{type(e).__name__}: {e}".strip()


# ---- environment ----------------------------------------------------------------------------

def _cuda_version(v):
    return f"{v // 1000}.{v % 1000 // 10}" if isinstance(v, int) and v > 0 else str(v)


def _nccl_version(v):
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if isinstance(v, int) and v >= 10000 else str(v)


def section_environment(args, emulated):
    import numpy
    import dtrain
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "numpy": numpy.__version__, "dtrain": dtrain.__version__, "emulated_devices": emulated}

    def attempt(key, fn):
        try:
            env[key] = fn()
        except Exception as e:  # one missing piece does not hide the others
            env[key] = f"unavailable ({_err(e)})"

    def gpus():
        cupy = _cupy()
        names = []
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            name = cupy.cuda.runtime.getDeviceProperties(i)["name"]
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names

    def nvidia_smi():
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return "nvidia-smi not found"
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else out.stderr.strip()

    def nccl():
        from cupy.cuda import nccl as mod
        if not getattr(mod, "available", True):
            return "not available (CuPy found no NCCL library)"
        return _nccl_version(mod.get_version())

    def mpi():
        from mpi4py import MPI
        import mpi4py
        return f"mpi4py {mpi4py.__version__}, {MPI.Get_library_version().splitlines()[0].strip()}"

    def torch():
        import torch as t
        cuda = t.version.cuda or "none"
        return f"{t.__version__} (CUDA build {cuda}, cuda.is_available() = {t.cuda.is_available()})"

    attempt("gpus", gpus)
    attempt("cupy", lambda: _cupy().__version__)
    attempt("cuda_runtime", lambda: _cuda_version(_cupy().cuda.runtime.runtimeGetVersion()))
    attempt("cuda_driver_api", lambda: _cuda_version(_cupy().cuda.runtime.driverGetVersion()))
    attempt("driver", nvidia_smi if not emulated else (lambda: "none (emulated devices)"))
    attempt("nccl", nccl)
    attempt("mpi", mpi)
    attempt("torch", torch)
    for key in ("gpus", "driver", "cuda_runtime", "cuda_driver_api", "cupy", "nccl", "dtrain", "torch", "mpi",
                "numpy", "python", "cpu_count"):
        print(f"  {key:<16} {env[key]}")
    return env


# ---- pytest -m gpu --------------------------------------------------------------------------

def section_pytest(args, emulated):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *args.pytest_args.split()]
    print("  $", " ".join(cmd))
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.pytest_timeout)
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        print(tail)
        raise RuntimeError(f"pytest -m gpu did not finish in {args.pytest_timeout:.0f} s (--pytest-timeout)")
    seconds = time.perf_counter() - start
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    counted = r"\d+ (passed|failed|skipped|error|deselected)"
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(counted, line)),
                   lines[-1] if lines else "")
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors", "deselected", "xfailed", "xpassed")}
    for num, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", summary):
        counts["errors" if kind.startswith("error") else kind] += int(num)
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    for line in failures[:20]:
        print("  " + line)
    print(f"  {summary} (exit code {out.returncode}, {seconds:.0f} s)")
    if out.returncode not in (0, 1, 5):  # 5: nothing collected
        print(out.stdout[-3000:] + out.stderr[-2000:])
    return {"status": "ok" if out.returncode in (0, 5) else "failed", "command": " ".join(cmd), "summary": summary,
            "counts": counts, "exit_code": out.returncode, "failures": failures, "seconds": seconds}


# ---- training steps ---------------------------------------------------------------------------

def _step_module():
    """benchmarks/step.py (the reference models), imported without letting it pin this process's
    BLAS-thread variables (it sets them to 1 for its own timing)."""
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                            "BLIS_NUM_THREADS")}
    sys.path.insert(0, HERE)
    try:
        import step
    finally:
        sys.path.remove(HERE)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return step


def _batch(workload, quick):
    full = {"mlp": 256, "cnn": 64, "gpt": 16}[workload]
    return max(2, full // 8) if quick else full


def build_workload(workload, lib, device, quick, seed=0, wrap=None):
    """A training step of ``workload`` in ``lib`` (dtrain or torch) on ``device`` that returns the
    loss tensor without reading it (no host synchronisation of its own), and its batch size.
    ``wrap(model)`` (e.g. DistributedDataParallel) is what the step calls, if given."""
    import numpy as np
    S = _step_module()
    n = _batch(workload, quick)
    rng = np.random.default_rng(seed + 1)
    if workload == "gpt":
        shape = dict(S.GPT_SHAPE, block_size=16) if quick else S.GPT_SHAPE
        model = S._same_weights(lib, S._gpt(lib, **shape), seed=0).to(device)
        net = wrap(model) if wrap else model
        window = rng.integers(0, shape["vocab_size"], (n, shape["block_size"] + 1))
        x = lib.from_numpy(window[:, :-1].copy()).to(device)
        y = lib.from_numpy(window[:, 1:].copy()).to(device)
        params = list(net.parameters())
        opt = lib.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                               {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                              lr=3e-4, betas=(0.9, 0.95))

        def step():
            loss = net(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lib.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return loss
        return step, n

    model = S._mlp(lib.nn) if workload == "mlp" else S._cnn(lib.nn)
    model = S._same_weights(lib, model, seed=0).to(device)
    net = wrap(model) if wrap else model
    shape = (n, 784) if workload == "mlp" else (n, 3, 32, 32)
    x = lib.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(device)
    y = lib.from_numpy(rng.integers(0, 10, n)).to(device)
    opt, loss_fn = lib.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM), lib.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss
    return step, n


def _timers(kind):
    """(synchronize, start_event, elapsed_ms(start, end)) for 'dtrain' on CuPy or 'torch' CUDA."""
    if kind == "torch":
        import torch
        return (torch.cuda.synchronize, lambda: _recorded(torch.cuda.Event(enable_timing=True)),
                lambda a, b: a.elapsed_time(b))
    cupy = _cupy()
    return (lambda: cupy.cuda.Device().synchronize(), lambda: _recorded(cupy.cuda.Event()),
            cupy.cuda.get_elapsed_time)


def _recorded(event):
    event.record()
    return event


def time_steps(step, steps, rounds, gpu=None):
    """Median per-step milliseconds over ``rounds`` rounds of ``steps`` steps: host (the Python
    loop, nothing waited for), wall (until the device has finished) and device (CUDA events)."""
    host, wall, device = [], [], []
    sync, event, elapsed = _timers(gpu) if gpu else (None, None, None)
    for _ in range(rounds):
        if sync:
            sync()
            start = event()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        host.append((time.perf_counter() - t0) / steps * 1e3)
        if sync:
            end = event()
            end.synchronize()
            device.append(elapsed(start, end) / steps)
        else:
            float(loss)
        wall.append((time.perf_counter() - t0) / steps * 1e3)
    out = {"host_ms": statistics.median(host), "wall_ms": statistics.median(wall)}
    if device:
        out["device_ms"] = statistics.median(device)
        out["bound"] = "python" if out["host_ms"] >= 0.9 * out["device_ms"] else "device"
    return out


def section_step(args, emulated):
    import dtrain
    steps, rounds = (2, 1) if args.quick else (10, 5)
    gpu = _gpu_count() > 0
    torch_cuda = False
    try:
        import torch
        torch_cuda = torch.cuda.is_available() and not emulated
    except ImportError:
        torch = None
    results = {}
    for workload in args.workload:
        variants = {"dtrain-cpu": (dtrain, "cpu", None)}
        variants["dtrain-gpu"] = (dtrain, "cuda:0", "dtrain") if gpu else None
        variants["torch-cuda"] = (torch, "cuda:0", "torch") if torch_cuda else None
        rows = {}
        for name, spec in variants.items():
            if spec is None:
                why = "no CUDA device" if name == "dtrain-gpu" else (
                    "torch not installed" if torch is None else "torch sees no CUDA device" if not emulated
                    else "the emulation does not drive torch")
                rows[name] = {"status": "skipped", "reason": why}
                continue
            lib, device, timer = spec
            try:
                if lib is torch:  # full float32 as dtrain (cuDNN would use TF32 for convolutions)
                    torch.manual_seed(0)
                    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
                step, n = build_workload(workload, lib, device, args.quick)
                first = float(step().detach().cpu().item()) if lib is torch else step().item()
                step()  # warm-up: allocations, kernel compilation
                if name == "dtrain-cpu":  # slow at full size: fewer steps, it is the reference only
                    row = time_steps(step, max(1, steps // 2), max(1, rounds - 2), None)
                else:
                    row = time_steps(step, steps, rounds, timer)
                if emulated and timer:  # emulated events measure nothing: no device time, no verdict
                    row.update(device_ms=None, bound="n/a")
                row.update(status="ok", first_loss=first, batch=n,
                           samples_per_s=n / (row["wall_ms"] / 1e3) if row["wall_ms"] > 0 else None)
            except Exception as e:
                traceback.print_exc()
                row = {"status": "error", "error": _err(e)}
            rows[name] = row
        cpu = rows["dtrain-cpu"].get("first_loss")
        for name, row in rows.items():  # the same weights and data: the first loss must agree
            if name != "dtrain-cpu" and row["status"] == "ok" and cpu is not None:
                row["loss_matches_cpu"] = abs(row["first_loss"] - cpu) <= 1e-3 * max(1.0, abs(cpu))
        results[workload] = rows
        print(f"  {workload} (batch {_batch(workload, args.quick)}): ms per training step")
        print(f"    {'variant':<12} {'wall ms':>9} {'host ms':>9} {'device ms':>9} {'bound':>7} {'loss@1':>9}")
        for name, r in rows.items():
            if r["status"] != "ok":
                print(f"    {name:<12} {r['status']}: {r.get('reason') or r.get('error')}")
                continue
            dev = f"{r['device_ms']:9.2f}" if r.get("device_ms") is not None else f"{'-':>9}"
            print(f"    {name:<12} {r['wall_ms']:9.2f} {r['host_ms']:9.2f} {dev} {r.get('bound', '-'):>7} "
                  f"{r['first_loss']:9.4f}")
    return {"steps": steps, "rounds": rounds, "workloads": results,
            "status": "ok" if all(r["status"] != "error" and r.get("loss_matches_cpu") is not False
                                  for w in results.values() for r in w.values()) else "failed"}


# ---- host synchronisations --------------------------------------------------------------------

_SPIN = r'''
extern "C" __global__ void dtrain_gpu_check_spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
'''


def _spin_probe(step, cupy):
    """Whether ``step`` makes the host wait for the device: a kernel spinning for S ms is queued
    first; a step that returns in well under S ms never waited. Returns (waited, detail)."""
    kernel = cupy.RawKernel(_SPIN, "dtrain_gpu_check_spin")
    dev = cupy.cuda.Device()
    kernel((1,), (1,), (cupy.int64(1),))  # compiled here, not inside the calibration below
    step()
    dev.synchronize()
    t0 = time.perf_counter()
    step()
    host_ms = (time.perf_counter() - t0) * 1e3
    dev.synchronize()
    cycles = 10_000_000
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    kernel((1,), (1,), (cupy.int64(cycles),))
    end.record()
    end.synchronize()
    per_ms = cycles / max(cupy.cuda.get_elapsed_time(start, end), 1e-3)
    spin_ms = max(200.0, 20 * host_ms)
    kernel((1,), (1,), (cupy.int64(int(spin_ms * per_ms)),))
    t0 = time.perf_counter()
    step()
    probed_ms = (time.perf_counter() - t0) * 1e3
    dev.synchronize()
    waited = probed_ms > spin_ms / 2
    return waited, {"spin_ms": spin_ms, "step_host_ms": host_ms, "step_host_ms_behind_spin": probed_ms}


def section_syncs(args, emulated):
    import dtrain
    if not _gpu_count():
        raise RuntimeError("no CUDA device (pass --emulate N to count on the emulation)")
    counter = _syncs()
    method = ("emulation counter (exact count; CPU emulation)" if counter is not None else
              "spin probe (real GPU; 0 or >= 1, not a count; a step that queues more kernels than CUDA's "
              "launch queue holds also reads >= 1)")
    print(f"  method: {method}; one training step without .item()")
    out = {"method": method, "workloads": {}}
    for workload in args.workload:
        try:
            step, _ = build_workload(workload, dtrain, "cuda:0", args.quick)
            step()
            step()
            if counter is not None:
                counter.reset()
                step()
                events = list(counter.events)
                row = {"syncs": len(events), "where": [f"{kind} at {where}" for kind, where in events]}
            else:
                waited, detail = _spin_probe(step, _cupy())
                row = {"syncs": ">=1" if waited else 0, **detail}
            row["status"] = "ok"
        except Exception as e:
            traceback.print_exc()
            row = {"status": "error", "error": _err(e)}
        out["workloads"][workload] = row
        if row["status"] == "ok":
            print(f"  {workload:<5} {row['syncs']} host sync(s) per step")
            for where in row.get("where", [])[:10]:
                print(f"        {where}")
        else:
            print(f"  {workload:<5} error: {row['error']}")
    return out


# ---- multi-rank runs (this file under the launcher) ---------------------------------------------

def run_ranks(args, nproc, worker, extra=()):
    """Run this file's ``--worker`` on ``nproc`` ranks through dtrain.launch; rank 0's JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        cmd = [sys.executable, "-m", "dtrain.launch", "--nproc", str(nproc), os.path.abspath(__file__),
               "--worker", worker, "--out", out, "--workload", *args.workload, *extra]
        if args.quick:
            cmd.append("--quick")
        print("  $", " ".join(cmd[1:]))
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.rank_timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{worker} on {nproc} rank(s) did not finish in {args.rank_timeout:.0f} s "
                               f"(--rank-timeout)") from None
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            print("    " + "\n    ".join(tail))
            raise RuntimeError(f"{worker} on {nproc} rank(s) exited with code {proc.returncode}: "
                               + (tail[-1].strip() if tail else "no output"))
        with open(out) as f:
            return json.load(f)


def _mpi_max(value):
    from mpi4py import MPI
    return MPI.COMM_WORLD.allreduce(value, op=MPI.MAX)


def _sizes(quick):
    top = 1 << 20 if quick else 256 << 20
    sizes, size = [], 4 << 10
    while size <= top:
        sizes.append(size)
        size *= 4
    return sizes


def worker_allreduce(args):
    import dtrain
    import dtrain.comm as dist
    from mpi4py import MPI
    dist.init_process_group(backend="nccl")
    cupy = _cupy()
    rank, n = dist.get_rank(), dist.get_world_size()
    dev = cupy.cuda.Device()
    result = {"ranks": n, "backend": dist.get_backend(), "device": dtrain.cuda.current_device(), "rows": []}

    # correctness first: rank r holds r + 1, the sum is n(n+1)/2 everywhere
    probe = cupy.full(1024, rank + 1, dtype=cupy.float32)
    dist.all_reduce(probe)
    result["correct"] = bool(_mpi_max(int(not bool((probe == n * (n + 1) / 2).all()))) == 0)

    variants = {"dtrain": lambda buf: dist.all_reduce(buf)}
    try:
        from cupy.cuda import nccl
        uid = MPI.COMM_WORLD.bcast(nccl.get_unique_id() if rank == 0 else None, root=0)
        raw = nccl.NcclCommunicator(n, uid, rank)
        variants["cupy-nccl"] = lambda buf: raw.allReduce(buf.data.ptr, buf.data.ptr, buf.size, nccl.NCCL_FLOAT32,
                                                     nccl.NCCL_SUM, cupy.cuda.get_current_stream().ptr)
    except Exception as e:
        result["nccl_error"] = _err(e)
    iters = 3 if args.quick or _syncs() is not None else 20  # as nccl-tests (-n 20); emulated: meaningless, short
    for nbytes in _sizes(args.quick):
        buf = cupy.zeros(nbytes // 4, dtype=cupy.float32)
        for name, fn in variants.items():
            for _ in range(1 if iters < 20 else 5):  # warm-up, 5 as nccl-tests
                fn(buf)
            dev.synchronize()
            MPI.COMM_WORLD.Barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn(buf)
            dev.synchronize()
            t = _mpi_max((time.perf_counter() - t0) / iters)
            algbw = nbytes / t / 1e9
            result["rows"].append({"variant": name, "bytes": nbytes, "time_us": t * 1e6, "algbw_GBps": algbw,
                                   "busbw_GBps": algbw * 2 * (n - 1) / n, "iters": iters})
        del buf
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


def worker_ddp(args):
    import dtrain
    import dtrain.comm as dist
    from dtrain.parallel import DistributedDataParallel
    dist.init_process_group()
    rank, n = dist.get_rank(), dist.get_world_size()
    index = dtrain.cuda.current_device()
    device = f"cuda:{index}"
    counter = _syncs()
    sync = _timers("dtrain")[0]
    steps = 2 if args.quick else 20
    result = {"ranks": n, "backend": dist.get_backend(), "workloads": {}}
    for workload in args.workload:
        try:
            step, batch = build_workload(workload, dtrain, device, args.quick, seed=rank,
                                         wrap=lambda m: DistributedDataParallel(m, device_ids=[index]))
            step()
            step()
            row = {}
            if counter is not None:
                counter.reset()
                step()
                row["syncs"] = _mpi_max(counter.count)
            sync()
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = step()
            loss.item()
            sync()
            row.update(ms_per_step=_mpi_max((time.perf_counter() - t0) / steps * 1e3), batch_per_rank=batch,
                       status="ok")
            row["samples_per_s"] = n * batch / (row["ms_per_step"] / 1e3)
        except Exception as e:
            traceback.print_exc()
            row = {"status": "error", "error": _err(e)}
        result["workloads"][workload] = row
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


def section_allreduce(args, emulated):
    count = _gpu_count()
    if count < 2:
        return {"status": "skipped", "reason": f"needs 2+ GPUs, this machine has {count}"}
    res = run_ranks(args, count, "allreduce")
    n = res["ranks"]
    print(f"  all_reduce float32 SUM over {n} ranks ({res['backend']}); result correct: {res['correct']}"
          + (f"; CuPy NCCL direct: {res['nccl_error']}" if "nccl_error" in res else ""))
    print("  busbw = algbw * 2(n-1)/n, algbw = bytes / time (nccl-tests' definitions)")
    names = list(dict.fromkeys(r["variant"] for r in res["rows"]))
    print(f"  {'bytes':>11} " + " ".join(f"{v + ' us':>12} {'algbw GB/s':>10} {'busbw GB/s':>10}" for v in names))
    for nbytes in dict.fromkeys(r["bytes"] for r in res["rows"]):
        row = {r["variant"]: r for r in res["rows"] if r["bytes"] == nbytes}
        print(f"  {nbytes:>11} " + " ".join(f"{row[v]['time_us']:12.1f} {row[v]['algbw_GBps']:10.3f} "
                                            f"{row[v]['busbw_GBps']:10.3f}" for v in names))
    res["status"] = "ok" if res["correct"] else "failed"
    return res


def section_ddp(args, emulated):
    count = _gpu_count()
    if count < 1:
        raise RuntimeError("no CUDA device (pass --emulate N to run on the emulation)")
    runs = {}
    for nproc in dict.fromkeys((1, count)):
        try:
            runs[nproc] = run_ranks(args, nproc, "ddp")
        except Exception as e:
            print(f"  {nproc} rank(s): {_err(e)}")
            runs[nproc] = {"status": "error", "error": _err(e)}
    out = {"ranks": list(runs), "runs": {str(k): v for k, v in runs.items()}, "workloads": {}}
    print(f"  weak scaling: the reference batch on every rank; efficiency = step time(1) / step time({count})")
    print(f"  {'workload':<8} {'ranks':>5} {'ms/step':>9} {'samples/s':>11} {'efficiency':>10} {'syncs':>6}")
    for workload in args.workload:
        w = {}
        for nproc, run in runs.items():
            row = run.get("workloads", {}).get(workload) or {"status": "error", "error": run.get("error", "?")}
            w[str(nproc)] = row
            if row["status"] != "ok":
                print(f"  {workload:<8} {nproc:>5} error: {row['error']}")
                continue
            one = w.get("1", {})
            eff = one["ms_per_step"] / row["ms_per_step"] if one.get("status") == "ok" else None
            row["efficiency"] = eff
            print(f"  {workload:<8} {nproc:>5} {row['ms_per_step']:9.2f} {row['samples_per_s']:11.1f} "
                  f"{'-' if eff is None else f'{eff:10.3f}':>10} {row.get('syncs', '-'):>6}")
        out["workloads"][workload] = w
    bad = any(r.get("status") != "ok" for r in runs.values() if "workloads" not in r) or any(
        r["status"] != "ok" for w in out["workloads"].values() for r in w.values())
    out["status"] = "failed" if bad else "ok"
    if count == 1:
        out["note"] = "one GPU: DDP at 1 rank only, no scaling figure"
    return out


# ---- the table ----------------------------------------------------------------------------------

def summary_rows(results):
    """(section, measure, value) for every headline figure; errors as their own rows."""
    rows = []
    for name, res in results.items():
        status = res.get("status")
        if status in ("error", "skipped"):
            rows.append((name, status, res.get("error") or res.get("reason", "")))
            continue
        if name == "environment":
            gpus = res.get("gpus")
            rows.append((name, "GPUs", ", ".join(gpus) if isinstance(gpus, list) else str(gpus)))
            for key in ("driver", "cuda_runtime", "cupy", "nccl", "dtrain", "torch"):
                rows.append((name, key, str(res.get(key))))
        elif name == "pytest":
            rows.append((name, "pytest -m gpu", f"{res['summary']} (exit {res['exit_code']})"))
        elif name == "step":
            for workload, variants in res["workloads"].items():
                for variant, r in variants.items():
                    if r["status"] != "ok":
                        why = r.get("reason") or r.get("error")
                        rows.append((name, f"{workload} {variant}", f"{r['status']}: {why}"))
                        continue
                    value = f"{r['wall_ms']:.2f} ms/step"
                    if r.get("device_ms") is not None:
                        value += f" (host {r['host_ms']:.2f}, device {r['device_ms']:.2f}: {r['bound']}-bound)"
                    if r.get("loss_matches_cpu") is False:
                        value += f"; first loss {r['first_loss']:.5f} differs from the CPU's"
                    rows.append((name, f"{workload} {variant}", value))
        elif name == "syncs":
            for workload, r in res["workloads"].items():
                method = res["method"].split(" (")[0]
                value = f"{r['syncs']} ({method})" if r["status"] == "ok" else f"error: {r['error']}"
                rows.append((name, f"{workload} host syncs/step", value))
        elif name == "allreduce":
            for r in res["rows"]:
                if r["bytes"] in (4 << 10, 1 << 20, 64 << 20, 256 << 20) or r["bytes"] == res["rows"][-1]["bytes"]:
                    rows.append((name, f"{r['variant']} {_human(r['bytes'])} busbw",
                                 f"{r['busbw_GBps']:.3f} GB/s ({r['time_us']:.1f} us, {res['ranks']} ranks)"))
            rows.append((name, "result correct", str(res["correct"])))
        elif name == "ddp":
            for workload, w in res["workloads"].items():
                for nproc, r in w.items():
                    if r.get("status") != "ok":
                        rows.append((name, f"{workload} {nproc} rank(s)", f"error: {r.get('error')}"))
                        continue
                    eff = r.get("efficiency") if nproc != "1" else None
                    eff = f", efficiency {eff:.3f}" if eff is not None else ""
                    syncs = f", {r['syncs']} syncs/step" if "syncs" in r else ""
                    rows.append((name, f"{workload} {nproc} rank(s)", f"{r['ms_per_step']:.2f} ms/step{eff}{syncs}"))
        if status == "failed":
            rows.append((name, "status", "FAILED (see above)"))
    return rows


def _human(nbytes):
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes // size} {unit}"
    return f"{nbytes} B"


def print_table(rows, label):
    print(f"\n==== gpu_check summary{' -- ' + label if label else ''} ====")
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    print(f"{'section':<{w1}}  {'measure':<{w2}}  value")
    for section, measure, value in rows:
        print(f"{section:<{w1}}  {measure:<{w2}}  {value}")
    if label:
        print(label)


def main(argv=None):
    args = parse_args(argv)
    emulated = install_emulation(args.emulate)
    if args.worker:
        return (worker_allreduce if args.worker == "allreduce" else worker_ddp)(args)
    label = (f"EMULATED: {emulated} NumPy-backed CPU devices (tests/emulation), not GPU figures"
             if emulated else "")
    results = {}
    sections = {"environment": section_environment, "pytest": section_pytest, "step": section_step,
                "syncs": section_syncs, "allreduce": section_allreduce, "ddp": section_ddp}
    start = time.perf_counter()
    for name, fn in sections.items():
        if name in args.skip:
            results[name] = {"status": "skipped", "reason": "--skip", "seconds": 0.0}
            continue
        print(f"\n== {name}{' [' + label.split(':')[0] + ']' if label else ''} ==")
        t0 = time.perf_counter()
        try:
            res = fn(args, emulated)
            res.setdefault("status", "ok")
        except Exception as e:  # a failed section is reported; the others still run
            traceback.print_exc()
            print(f"  {name} failed: {_err(e)}")
            res = {"status": "error", "error": _err(e)}
        res["seconds"] = round(time.perf_counter() - t0, 2)
        results[name] = res
    rows = summary_rows(results)
    print_table(rows, label)
    report = {"emulated": bool(emulated), "emulated_devices": emulated, "label": label or "real hardware",
              "quick": args.quick, "seconds": round(time.perf_counter() - start, 1), "sections": results,
              "table": [{"section": s, "measure": m, "value": v} for s, m, v in rows]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    report = main()
    # 1 when a section failed or raised (the table and the JSON are written all the same)
    sys.exit(int(report is not None and any(r.get("status") in ("error", "failed")
                                            for r in report["sections"].values())))
