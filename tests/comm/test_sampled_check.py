"""The sampled cross-rank check (dtrain/comm/call_check.py), on by default: which calls it
checks, its setting, and (rank_call_check.py, under mpiexec) that it catches each steady
mismatch kind on every rank with both sides named, and leaves agreeing programs unchanged."""
import sys

import pytest

from comm_helpers import assert_all_checks_passed, clean_env, require_mpi, run
from dtrain.comm.call_check import CHECK_ENV, check_interval, next_check

SCRIPT = "tests/comm/rank_call_check.py"


def checked(calls, every):
    """The numbers of the calls checked among the first ``calls``, as a group schedules them."""
    found, due = [], 1
    for seq in range(1, calls + 1):
        if seq >= due:
            found.append(seq)
            due = next_check(seq, every)
    return found


def test_first_calls_then_every_nth():
    """Calls 1, 2, 4, ... below N are checked (a mismatch from the start is caught at once),
    then every N-th: 21 of 1000 calls at N = 64."""
    assert checked(1000, 64) == [1, 2, 4, 8, 16, 32] + list(range(64, 1001, 64))
    assert checked(10, 1) == list(range(1, 11))
    assert checked(20, 5) == [1, 2, 4, 5, 10, 15, 20]


def test_interval_setting(monkeypatch):
    """DTRAIN_CHECK_EVERY: default 64, 0 turns the check off, anything else but a whole
    number >= 0 is refused naming the variable and what it takes."""
    monkeypatch.delenv(CHECK_ENV, raising=False)
    assert check_interval() == 64
    monkeypatch.setenv(CHECK_ENV, "0")
    assert check_interval() == 0
    monkeypatch.setenv(CHECK_ENV, "8")
    assert check_interval() == 8
    for bad in ("-1", "often", "1.5"):
        monkeypatch.setenv(CHECK_ENV, bad)
        with pytest.raises(ValueError, match=rf"{CHECK_ENV}='{bad}' must be a whole number >= 0.*0 turns it off"):
            check_interval()


@pytest.mark.parametrize("n, cases, count", [(2, [], 6), (4, ["dtypes", "agree"], 2)])
def test_steady_mismatches_are_caught(n, cases, count):
    """float32 against int32 and SUM against MAX from call #101 (caught at #128), broadcast
    roots and sizes that differ and an async dtype mismatch from call #1 (caught there): a
    DistError on every rank naming the odd rank's call and the others', with call sites; 280
    agreeing calls give the right values."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", str(n), sys.executable, SCRIPT, *cases], timeout=90, env=clean_env())
    assert_all_checks_passed(result, n, count)
