"""benchmarks/gpu_check.py end to end on the CuPy emulation (tests/emulation): every section
runs, the table and the JSON carry every figure, EMULATED labels them, and a failing section
does not stop the others."""
import json
import os
import subprocess
import sys

import pytest

import comm_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")
SECTIONS = ("environment", "pytest", "step", "syncs", "allreduce", "ddp")
WORKLOADS = ("mlp", "cnn", "gpt")


def _env(**extra):
    """A plain environment: no emulation unless the command asks for one, no launcher variables."""
    env = comm_helpers.clean_env()
    env.pop("DTRAIN_CUPY_EMULATION", None)
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env


def _run(tmp_path, *args, env=None, timeout=150):
    out = tmp_path / "gpu_check.json"
    try:
        proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", str(out), *args], cwd=ROOT,
                              env=_env() if env is None else env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"gpu_check did not finish within {timeout} s\n{e.stdout}\n{e.stderr}")
    assert out.exists(), f"no JSON written\n{comm_helpers.output(proc)}"
    return proc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run on 2 emulated devices, switched on the way a user does: the variable."""
    comm_helpers.require_mpi()
    return _run(tmp_path_factory.mktemp("gpu_check"), "--pytest-args", "tests/test_backend_guard.py",
                env=_env(DTRAIN_CUPY_EMULATION="2"))


def _table(stdout):
    """The rows printed under the summary header, as (section, rest of the line)."""
    lines = stdout.split("==== gpu_check summary", 1)[1].splitlines()[2:]
    return [(line.split()[0], line) for line in lines if line.split() and line.split()[0] in SECTIONS]


def test_every_section_reported_in_json_and_table(quick):
    """The JSON has every section with a status and its seconds, the printed table has a row for
    every section, and the JSON's table is the printed one."""
    proc, report = quick
    assert set(report) >= {"emulated", "emulated_devices", "label", "quick", "seconds", "sections", "table"}
    assert set(report["sections"]) == set(SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] in ("ok", "failed", "error", "skipped"), (name, section)
        assert "seconds" in section, name
    printed = _table(proc.stdout)
    assert {s for s, _ in printed} == set(SECTIONS), proc.stdout
    assert len(printed) == len(report["table"])
    for (section, line), row in zip(printed, report["table"]):
        assert section == row["section"] and row["measure"] in line and row["value"] in line
    expected = 1 if any(s["status"] in ("error", "failed") for s in report["sections"].values()) else 0
    assert proc.returncode == expected, comm_helpers.output(proc)


def test_emulated_figures_are_labelled(quick):
    """On the emulation the JSON says so, the table's title and last line say EMULATED, and every
    section header carries the label: no figure passes for a GPU figure."""
    proc, report = quick
    assert report["emulated"] is True and report["emulated_devices"] == 2
    assert "EMULATED" in report["label"]
    assert "gpu_check summary -- EMULATED" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-2].startswith("EMULATED")  # then "wrote PATH"
    for name in SECTIONS:
        assert f"== {name} [EMULATED] ==" in proc.stdout, name


def test_environment_and_pytest_sections(quick):
    """The environment names the (emulated) GPUs and the versions; the pytest section ran
    `pytest -m gpu` and counted what it saw."""
    _, report = quick
    env = report["sections"]["environment"]
    assert env["status"] == "ok"
    assert env["gpus"] == ["Emulated GPU 0 (NumPy)", "Emulated GPU 1 (NumPy)"]
    for key in ("cupy", "cuda_runtime", "nccl", "dtrain", "numpy", "python", "driver", "torch", "mpi"):
        assert key in env, key
    tests = report["sections"]["pytest"]
    assert "-m gpu" in tests["command"] and tests["exit_code"] in (0, 1), tests
    assert tests["counts"]["passed"] + tests["counts"]["failed"] + tests["counts"]["errors"] > 0, tests
    assert tests["counts"]["failed"] + tests["counts"]["errors"] == len(tests["failures"])


def test_step_section_times_cpu_and_gpu_from_the_same_start(quick):
    """Each workload ran on the CPU and on emulated GPU 0 from the same weights and data (the
    first loss agrees); the GPU row has host time, and no device time or verdict when emulated."""
    _, report = quick
    step = report["sections"]["step"]
    assert set(step["workloads"]) == set(WORKLOADS)
    for workload, rows in step["workloads"].items():
        cpu, gpu = rows["dtrain-cpu"], rows["dtrain-gpu"]
        assert cpu["status"] == "ok" and gpu["status"] == "ok", (workload, rows)
        assert cpu["wall_ms"] > 0 and gpu["host_ms"] > 0 and gpu["wall_ms"] >= gpu["host_ms"]
        assert gpu["loss_matches_cpu"] is True, (workload, cpu["first_loss"], gpu["first_loss"])
        assert gpu["device_ms"] is None and gpu["bound"] == "n/a"
        assert rows["torch-cuda"]["status"] == "skipped"


def test_sync_section_counts_with_the_emulation_counter(quick):
    """Host syncs per step come from the emulation's counter, as a count with its call sites."""
    _, report = quick
    syncs = report["sections"]["syncs"]
    assert syncs["method"].startswith("emulation counter")
    for workload in WORKLOADS:
        row = syncs["workloads"][workload]
        assert row["status"] == "ok", row
        assert isinstance(row["syncs"], int) and len(row["where"]) == row["syncs"]


def test_allreduce_uses_nccl_tests_definitions(quick):
    """All-reduce over the 2 emulated devices: correct sums, sizes 4 KiB x4 up to 1 MiB (--quick),
    algbw = bytes / time and busbw = algbw * 2(n-1)/n."""
    _, report = quick
    ar = report["sections"]["allreduce"]
    assert ar["status"] == "ok" and ar["correct"] is True and ar["ranks"] == 2, ar
    dtrain_rows = [r for r in ar["rows"] if r["variant"] == "dtrain"]
    assert [r["bytes"] for r in dtrain_rows] == [4096 * 4 ** k for k in range(5)]
    for r in ar["rows"]:
        assert r["algbw_GBps"] == pytest.approx(r["bytes"] / (r["time_us"] * 1e-6) / 1e9)
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * 2 * (2 - 1) / 2)


def test_ddp_weak_scaling_at_one_and_all_devices(quick):
    """DDP ran at 1 rank and at 2 (every emulated device); efficiency = step time(1) / step time(2)."""
    _, report = quick
    ddp = report["sections"]["ddp"]
    assert ddp["ranks"] == [1, 2]
    for workload in WORKLOADS:
        one, two = ddp["workloads"][workload]["1"], ddp["workloads"][workload]["2"]
        assert one["status"] == "ok" and two["status"] == "ok", (workload, one, two)
        assert two["efficiency"] == pytest.approx(one["ms_per_step"] / two["ms_per_step"])
        assert isinstance(two["syncs"], int)


def test_a_failing_section_does_not_stop_the_others(tmp_path):
    """pytest stopped by its timeout and DDP by the rank timeout are reported as errors (exit 1)
    while the environment still runs, allreduce says why it skipped (1 device), and the table and
    JSON are written."""
    comm_helpers.require_mpi()
    proc, report = _run(tmp_path, "--emulate", "1", "--skip", "step", "syncs", "--pytest-timeout", "0.01",
                        "--rank-timeout", "0.5", timeout=60)
    sections = report["sections"]
    assert proc.returncode == 1, comm_helpers.output(proc)
    assert sections["environment"]["status"] == "ok"
    assert sections["pytest"]["status"] == "error" and "--pytest-timeout" in sections["pytest"]["error"]
    assert sections["step"] == {"status": "skipped", "reason": "--skip", "seconds": 0.0}
    assert sections["allreduce"]["status"] == "skipped" and "2+ GPUs" in sections["allreduce"]["reason"]
    assert sections["ddp"]["status"] == "failed" and "--rank-timeout" in sections["ddp"]["runs"]["1"]["error"]
    assert report["emulated_devices"] == 1
    assert "pytest       error" in proc.stdout and "gpu_check summary -- EMULATED" in proc.stdout


def test_bad_emulate_value_is_refused():
    """--emulate 0 is an argument error naming the option."""
    proc = subprocess.run([sys.executable, SCRIPT, "--emulate", "0"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--emulate: expected the number of emulated GPUs" in proc.stderr
