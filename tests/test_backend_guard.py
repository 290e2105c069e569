"""The array-module contract: ops never touch NumPy/CuPy directly (so the CuPy path is the
same code); the CUDA queries work without a GPU; on a GPU, ops agree with the CPU."""
import ast
import pathlib

import numpy as np
import pytest

import dtrain
from dtrain.tensor import backend

OPS_DIR = pathlib.Path(dtrain.__file__).parent / "tensor" / "ops"
ARRAY_MODULES = {"numpy", "np", "cupy", "cp", "cupyx"}


def _direct_uses(path):
    """(line, what) for every import of, or name reference to, NumPy/CuPy in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name.split(".")[0] in ARRAY_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in ARRAY_MODULES:
            found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Name) and node.id in ARRAY_MODULES:
            found.append((node.lineno, f"uses {node.id}"))
    return found


def test_ops_never_use_numpy_directly():
    """No file under dtrain/tensor/ops/ imports or calls numpy (or cupy) itself: array code
    goes through get_array_module / backend helpers so it runs unchanged on CuPy."""
    files = sorted(OPS_DIR.glob("*.py"))
    assert len(files) >= 5, f"expected the ops files under {OPS_DIR}"
    bad = {f"{p.name}:{line}": what for p in files for line, what in _direct_uses(p)}
    assert not bad, f"direct NumPy/CuPy use in ops (move it behind dtrain/tensor/backend.py): {bad}"


def test_guard_detects_direct_use(tmp_path):
    """The guard itself flags each way of reaching NumPy (so the test above can fail)."""
    src = tmp_path / "bad.py"
    src.write_text("import numpy as np\nfrom numpy.lib import stride_tricks\nimport cupy\nx = np.zeros(3)\n")
    assert [what for _, what in _direct_uses(src)] == [
        "import numpy", "from numpy.lib import ...", "import cupy", "uses np"]
    src.write_text("from ..backend import get_array_module\nxp = get_array_module()\n")
    assert _direct_uses(src) == []


def test_cuda_queries_without_cupy(monkeypatch):
    """Without CuPy, cuda.is_available() is False, device_count() is 0, and asking for a CUDA
    device says that CuPy is missing."""
    monkeypatch.setattr(backend, "cupy", None)
    assert dtrain.cuda.is_available() is False and dtrain.cuda.device_count() == 0
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        dtrain.cuda.current_device()
    with pytest.raises(RuntimeError, match="cuda:0 requested but CuPy is not installed"):
        dtrain.zeros(2, device="cuda")
    assert backend.get_array_module(np.zeros(2)) is np


def test_cuda_queries_agree():
    """is_available() and device_count() agree on this machine (False/0 on a CPU-only one)."""
    n = dtrain.cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert dtrain.cuda.is_available() == (n > 0)
    if backend.cupy is None:
        assert n == 0


# ---- the CuPy path (needs a GPU; skipped otherwise by conftest) -------------------------

def _chain(x, w, idx):
    """An op chain touching every ops module: linalg, elementwise, reduce, shape, index."""
    h = (x @ w).tanh() * 2 - x[:, :1].exp()
    h = dtrain.cat([h, h.amax(1, keepdim=True)], 1) + dtrain.where(h > 0, h, 0.1 * h).mean(1, keepdim=True)
    h = h[idx].logsumexp(1) - h.gather(1, idx[:, None] % 3).squeeze(1) + h.var(0).mean()
    return ((h * 0.3).sigmoid() ** 2).mean() + (h / 8).clamp(-0.9, 0.9).prod()


@pytest.mark.gpu
def test_gpu_op_chain_matches_cpu():
    """The same op chain forward and backward on 'cuda' gives the CPU's values and gradients,
    with results and gradients living on the GPU (repeated indices accumulate there too)."""
    rng = np.random.default_rng(0)
    xa, wa = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    results = {}
    for dev in ("cpu", "cuda"):
        x = dtrain.tensor(xa, device=dev, requires_grad=True)
        w = dtrain.tensor(wa, device=dev, requires_grad=True)
        idx = dtrain.tensor([0, 2, 2, 1], device=dev)
        out = _chain(x, w, idx)
        out.backward()
        assert out.device == dev and x.grad.device == dev and w.grad.device == dev
        results[dev] = [t.detach().cpu().numpy() for t in (out, x.grad, w.grad)]
    for c, g in zip(results["cpu"], results["cuda"]):
        np.testing.assert_allclose(g, c, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
def test_gpu_to_device_is_differentiable_and_float32():
    """A CPU leaf moved to the GPU gets its gradient back on the CPU; float32 stays float32."""
    x = dtrain.randn(3, 2, requires_grad=True)
    y = x.to("cuda")
    assert y.is_cuda and y.dtype == dtrain.float32 and "device='cuda:0'" in repr(y)
    (y * y).sum().backward()
    assert x.grad.device == "cpu" and x.grad.dtype == dtrain.float32
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="same device.*cpu and cuda:0"):
        x + y


@pytest.mark.gpu
def test_gpu_gradcheck():
    """gradcheck runs on CUDA float64 inputs (its seeds and perturbations stay on the device)."""
    x = dtrain.randn(3, 2, dtype=dtrain.float64, device="cuda", requires_grad=True)
    assert dtrain.autograd.gradcheck(lambda t: (t.exp() @ t.t()).logsumexp(1), (x,))
