"""``python -m dtrain.launch --preflight``: the table at 1 and 2 ranks, a planted slow rank
named with a non-zero exit, the pair schedule and the outlier rule, and its option errors."""
import pytest

from comm_helpers import clean_env, output, python, require_mpi
from dtrain import preflight

LAUNCH = ("-m", "dtrain.launch", "--preflight")


def assert_table(result, ranks):
    """The report's header, one row per rank with two positive rates, and the prediction."""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"dtrain pre-flight: {ranks} rank"), output(result)
    rows = [line.split() for line in lines[2:2 + ranks]]
    assert [int(r[0]) for r in rows] == list(range(ranks)), output(result)
    assert all(float(r[2]) > 0 and float(r[3].replace(",", "")) > 0 for r in rows), output(result)
    assert any(line.startswith("predicted step of the reference MLP (1,863,690 parameters") for line in lines)
    assert ("all-reduce busbw, 4 MiB float32: all 2 ranks" in result.stdout) == (ranks == 2)


def test_one_rank_prints_the_table_and_passes():
    result = python(*LAUNCH, timeout=60)
    assert result.returncode == 0, output(result)
    assert_table(result, 1)
    assert result.stdout.splitlines()[-1] == "OK: no rank or pair below 0.5x the median"


def test_two_ranks_print_the_table():
    """At 2 ranks (threshold 0.1: on a busy machine a healthy rank may be measured at a few
    times below its peer; the planted slow rank below is 50x or more)."""
    require_mpi()
    result = python(*LAUNCH, "--nproc", "2", "--threshold", "0.1", timeout=90, env=clean_env())
    assert result.returncode == 0, output(result)
    assert_table(result, 2)


def test_a_slow_rank_fails_the_check_by_name():
    """DTRAIN_PREFLIGHT_SLOW_RANK=1 makes rank 1's GEMMs sleep: exit code 1, rank 1 named on a
    FAIL line, rank 0 not."""
    require_mpi()
    result = python(*LAUNCH, "--nproc", "2", timeout=90, env=clean_env(DTRAIN_PREFLIGHT_SLOW_RANK="1"))
    assert result.returncode == 1, output(result)
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL: ")]
    assert len(fails) == 1 and fails[0].startswith("FAIL: rank 1: GEMM "), output(result)
    assert "x the other ranks' median" in fails[0]


def test_a_model_from_a_file_is_counted(tmp_path):
    """--model file.py:factory predicts from the factory's Module (55 parameters)."""
    (tmp_path / "net.py").write_text("import dtrain.nn as nn\n\n\ndef make():\n    return nn.Linear(10, 5)\n")
    result = python(*LAUNCH, "--model", f"{tmp_path / 'net.py'}:make", "--model-batch", "8", timeout=60)
    assert result.returncode == 0, output(result)
    assert f"predicted step of {tmp_path / 'net.py'}:make (55 parameters, 0.0 MFLOP/sample, batch 8 per rank)" \
        in result.stdout


@pytest.mark.parametrize("args, message", [
    (("--model", "resnet"), "--model 'resnet': give 'mlp', 'file.py:factory' or 'package.module:factory'"),
    (("--model", "dtrain.nn:Nothing"), "--model 'dtrain.nn:Nothing': dtrain.nn has no 'Nothing'"),
    (("--model", "dtrain.nn:Identity", "--threshold", "1.5"), "--threshold must be between 0 and 1"),
    (("tests/timing_job.py",), "--preflight runs the check, not a script: drop 'tests/timing_job.py'"),
])
def test_bad_options_are_refused_before_any_rank_starts(args, message):
    result = python(*LAUNCH, *args, timeout=30)
    assert result.returncode == 2 and message in result.stderr, output(result)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_pair_rounds_cover_every_pair_once_in_disjoint_rounds(n):
    rounds = preflight.pair_rounds(n)
    pairs = [p for r in rounds for p in r]
    assert sorted(pairs) == [(a, b) for a in range(n) for b in range(a + 1, n)]
    assert all(len({rank for p in r for rank in p}) == 2 * len(r) for r in rounds)  # no rank twice in a round


def test_many_ranks_measure_neighbour_pairs():
    assert sorted(p for r in preflight.pair_rounds(20) for p in r) == [(r, r + 1) for r in range(19)]


def result(rank, gemm=100.0, loader=1e5, pairs=None):
    return {"rank": rank, "host": "h", "gemm": gemm, "loader": loader, "all": 2.0, "pairs": pairs or {}}


def test_outliers_name_the_rank_and_the_pair():
    """At 4 ranks: a rank at 0.3x the others' GEMM and a pair at 0.25x the others' busbw are
    named; a pair is the slower view of its two ranks."""
    pairs = {(0, 1): 2.0, (0, 2): 2.0, (0, 3): 2.0, (1, 2): 2.0, (1, 3): 0.5, (2, 3): 2.0}
    results = [result(r, gemm=30.0 if r == 2 else 100.0,
                      pairs={p: v if r == min(p) else v * 1.5 for p, v in pairs.items() if r in p}) for r in range(4)]
    assert preflight.outliers(results, 0.5) == [
        "rank 2: GEMM 30.0 GFLOP/s is 0.30x the other ranks' median 100.0 (threshold 0.5)",
        "ranks 1 and 3: all-reduce busbw 0.50 GB/s is 0.25x the other pairs' median 2.00 (threshold 0.5)"]
    assert preflight.outliers([result(0)], 0.5) == []  # one rank: nobody to compare with


@pytest.mark.gpu
def test_two_ranks_on_gpus_measure_their_devices_over_nccl():
    """With GPUs (real, or the tests' CuPy emulation) each rank's GEMM and all-reduce run on
    its own device, over NCCL."""
    require_mpi()
    result = python(*LAUNCH, "--nproc", "2", "--threshold", "0.1", timeout=120, env=clean_env())
    assert result.returncode == 0, output(result)
    assert result.stdout.startswith("dtrain pre-flight: 2 ranks, nccl backend"), output(result)
    assert_table(result, 2)
