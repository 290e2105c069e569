"""Rank / world size / local rank discovery from each launcher's environment variables."""
import pytest

from comm_helpers import clean_env, output, python, require_mpi
from dtrain.comm.env import LaunchInfo, check_agrees, discover

LAUNCHERS = {
    "Open MPI": ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                  "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, (3, 8, 1, 2)),
    "MPICH/Hydra": ({"PMI_RANK": "5", "PMI_SIZE": "6", "MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "3"}, (5, 6, 2, 3)),
    "SLURM": ({"SLURM_PROCID": "6", "SLURM_NTASKS": "7", "SLURM_LOCALID": "0", "SLURM_NODEID": "2",
               "SLURM_STEP_TASKS_PER_NODE": "3(x2),1"}, (6, 7, 0, 1)),
    "RANK/WORLD_SIZE": ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, (1, 2, 1, 2)),
}


@pytest.mark.parametrize("source", LAUNCHERS)
def test_each_launcher_is_read_from_the_process_environment(source):
    """A process started with a launcher's variables (and no MPI) reads its place from them."""
    variables, want = LAUNCHERS[source]
    result = python("-c", "from dtrain.comm.env import discover; print(tuple(discover()))",
                    env=clean_env(**variables))
    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == repr((*want, source)), output(result)


def test_no_launcher_means_a_lone_process():
    """Without launcher variables there is nothing to discover."""
    assert discover({"HOME": "/root"}) is None


def test_mpi_variables_win_over_slurm_ones():
    """mpirun inside an sbatch script inherits SLURM_PROCID=0 of the batch step; MPICH's variables decide."""
    info = discover({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "PMI_RANK": "1", "PMI_SIZE": "2"})
    assert info == LaunchInfo(1, 2, None, None, "MPICH/Hydra")


def test_slurm_local_size_forms():
    """SLURM's local size comes from a plain SLURM_NTASKS_PER_NODE or the compressed per-node list."""
    base = {"SLURM_PROCID": "4", "SLURM_STEP_NUM_TASKS": "5", "SLURM_NTASKS": "99"}
    assert discover({**base, "SLURM_NTASKS_PER_NODE": "4"}).local_world_size == 4
    assert discover({**base, "SLURM_TASKS_PER_NODE": "2,3", "SLURM_NODEID": "1"})[1:4] == (5, None, 3)


@pytest.mark.parametrize("variables, message", [
    ({"PMI_RANK": "0"}, "PMI_RANK=0 is set but the world size is not (expected PMI_SIZE)"),
    ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK='one' is not an integer"),
    ({"OMPI_COMM_WORLD_RANK": "4", "OMPI_COMM_WORLD_SIZE": "4"}, "a rank in [0, 3]"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}, "local rank LOCAL_RANK=2"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "2(xa)", "SLURM_NODEID": "0"},
     "cannot read the tasks of node 0"),
])
def test_bad_variables_are_named(variables, message):
    """A missing, non-integer or out-of-range variable is an error that names it."""
    with pytest.raises(ValueError) as e:
        discover(variables)
    assert message in str(e.value)


def test_disagreement_with_mpi_names_both_views():
    """check_agrees raises naming the launcher's value and MPI's."""
    info = LaunchInfo(1, 4, 1, 2, "SLURM")
    check_agrees(info, 1, 4, 1, 2)
    with pytest.raises(ValueError, match="the SLURM environment says world size 4 but MPI says 2"):
        check_agrees(info, 1, 2, 1, 2)


@pytest.mark.parametrize("source", ["Open MPI", "MPICH/Hydra"])
def test_a_world_of_one_under_mpiexec_names_the_library_mismatch(source):
    """Each rank alone in its world under a 2-rank mpiexec: mpi4py's MPI library is not that
    mpiexec's (e.g. Open MPI's mpi4py under MPICH's Hydra), and the error says so."""
    with pytest.raises(ValueError, match=f"the {source} environment says rank 1 but MPI says 0 .* Each rank is "
                                         f"alone in its world: the {source} mpiexec that started it belongs to "
                                         f"another MPI library than the one the MPI backend uses"):
        check_agrees(LaunchInfo(1, 2, 1, 2, source), 0, 1, 0, 1)


def test_clean_env_keeps_open_mpi_settings_and_drops_rank_variables(monkeypatch):
    """The tests' child environment drops what mpirun set for a rank but keeps the user's Open MPI
    settings (MCA parameters, run as root), which Open MPI needs to start ranks in containers."""
    for var, value in {"OMPI_COMM_WORLD_RANK": "1", "OMPI_MCA_orte_hnp_uri": "x", "PMIX_RANK": "1",
                       "OMPI_MCA_btl": "self,vader", "OMPI_ALLOW_RUN_AS_ROOT": "0"}.items():
        monkeypatch.setenv(var, value)
    env = clean_env()
    assert not {"OMPI_COMM_WORLD_RANK", "OMPI_MCA_orte_hnp_uri", "PMIX_RANK"} & set(env)
    assert env["OMPI_MCA_btl"] == "self,vader" and env["OMPI_ALLOW_RUN_AS_ROOT"] == "0"
    assert env["OMPI_MCA_rmaps_base_oversubscribe"] == "1"


def test_init_refuses_an_environment_mpi_contradicts():
    """RANK/WORLD_SIZE=2 set by hand in a lone process: MPI sees 1 rank and init says so."""
    require_mpi()
    result = python("-c", "import dtrain.comm as d; d.init_process_group()",
                    env=clean_env(RANK="0", WORLD_SIZE="2"))
    assert result.returncode != 0
    assert "environment says world size 2 but MPI says 1" in result.stderr, output(result)
