"""How a group across hosts chooses its all-reduce (dtrain/comm/hierarchical.py's decide),
from what its ranks exchange: checked in one process with a stand-in communicator whose
all-gather returns the views of every rank (no MPI, no cluster)."""
import pytest

from dtrain.comm import hierarchical


class Gathered:
    """A communicator whose allgather returns ``views`` (what every rank sent) with this rank's own first."""

    def __init__(self, views, rank=0):
        self.views, self.rank = views, rank

    def allgather(self, mine):
        assert mine[:2] == self.views[self.rank][:2], (mine, self.views[self.rank])  # (its host name is real)
        return self.views

    def Get_size(self):
        return len(self.views)

    def Get_rank(self):
        return self.rank


def node(rank):
    return Gathered([None] * (rank + 1), rank)  # only its Get_rank is asked


def views(setting, hosts):
    """Every rank's (DTRAIN_HIERARCHICAL, leads its host, host name) for ranks filling ``hosts`` in order."""
    out = []
    for h, count in enumerate(hosts):
        out += [(setting, i == 0, f"h{h + 1}") for i in range(count)]
    return out


@pytest.mark.parametrize("hosts, setting, expected", [
    ((2, 2), None, True),      # some host holds 2 ranks: hierarchical by topology
    ((2, 1), None, True),
    ((1, 1, 1), None, False),  # one rank per host: nothing to reduce within a host
    ((1, 1, 1), "1", True),
    ((2, 2), "0", False),
    ((2, 2), "off", False),
])
def test_choice_by_topology_and_setting(monkeypatch, hosts, setting, expected):
    """Unset: hierarchical exactly when some host holds more than one of the group's ranks;
    DTRAIN_HIERARCHICAL=1/0 forces it on or off."""
    if setting is None:
        monkeypatch.delenv(hierarchical.ENV, raising=False)
    else:
        monkeypatch.setenv(hierarchical.ENV, setting)
    group = views(setting, hosts)
    assert hierarchical.decide(Gathered(group), node(0), list(range(len(group)))) is expected


def test_setting_that_differs_across_ranks_names_each(monkeypatch):
    """Ranks that set DTRAIN_HIERARCHICAL differently would take different paths (a hang): every
    rank raises, naming each rank's value and host."""
    monkeypatch.setenv(hierarchical.ENV, "1")
    group = views("1", (2, 2))
    group[3] = (None, False, "h2")
    with pytest.raises(ValueError) as error:
        hierarchical.decide(Gathered(group), node(0), [0, 1, 2, 3])
    message = str(error.value)
    assert "DTRAIN_HIERARCHICAL differs across the ranks of group [0, 1, 2, 3]" in message, message
    assert "rank 0 on h1: '1'" in message and "rank 3 on h2: None" in message, message


def test_invalid_setting_is_refused(monkeypatch):
    """A value other than 0/1 (or their spellings) is an error quoting it."""
    monkeypatch.setenv(hierarchical.ENV, "auto")
    group = views("auto", (2, 2))
    with pytest.raises(ValueError, match=r"DTRAIN_HIERARCHICAL='auto': expected 1 .* or 0"):
        hierarchical.decide(Gathered(group), node(0), [0, 1, 2, 3])
