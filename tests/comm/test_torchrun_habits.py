"""PyTorch's distributed habits: torchrun's variables and options on the launcher, the ways
scripts call init_process_group ("gloo", init_method, rank/world_size, twice), and
dtrain.distributed as torch.distributed's path to dtrain.comm."""
import json
import logging
import re
import sys

import pytest

import dtrain
import dtrain.comm as comm
import dtrain.distributed as dist
from comm_helpers import clean_env, output, python, require_mpi, run

LAUNCH = ("-m", "dtrain.launch")
ENV_SCRIPT = "tests/comm/rank_torchrun_env.py"


@pytest.fixture
def lone(monkeypatch):
    """No process group and no launcher variables; the group a test makes is destroyed after it."""
    if dist.is_initialized():
        dist.destroy_process_group()
    monkeypatch.setattr("os.environ", clean_env())
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def records(stdout):
    """The JSON lines the ranks printed, by rank (their lines may interleave)."""
    found = [json.loads(m) for m in re.findall(r"\{(?:[^{}]|\{[^{}]*\})*\}", stdout)]
    return sorted(found, key=lambda r: r["rank"])


def check_torchrun_env(result, world):
    """Every rank saw RANK/LOCAL_RANK/WORLD_SIZE/LOCAL_WORLD_SIZE of its place and the same
    MASTER_ADDR/MASTER_PORT, and its init_process_group('gloo') joined the one MPI group."""
    assert result.returncode == 0, output(result)
    seen = records(result.stdout)
    assert [r["rank"] for r in seen] == list(range(world)), output(result)
    for rank, r in enumerate(seen):
        assert r["world"] == world and r["backend"] == "mpi" and r["launched"] is True, r
        env = r["env"]
        assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == \
            (str(rank), str(rank), str(world), str(world)), r
        assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"].isdigit(), r
        first = seen[0]["env"]
        assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == (first["MASTER_ADDR"], first["MASTER_PORT"]), r


def test_torchrun_options_and_variables_under_nproc():
    """python -m dtrain.launch --standalone --nproc_per_node=2 script.py: torchrun's spelling
    starts 2 ranks, each with torchrun's variables."""
    require_mpi()
    result = python(*LAUNCH, "--standalone", "--nnodes=1", "--nproc_per_node=2", ENV_SCRIPT, timeout=60)
    check_torchrun_env(result, 2)


def test_torchrun_variables_under_plain_mpiexec():
    """mpiexec -n 2 python -m dtrain.launch script.py: the same variables, MASTER_* sent by rank 0."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "2", sys.executable, *LAUNCH, ENV_SCRIPT], timeout=60)
    check_torchrun_env(result, 2)


def test_module_through_torchrun_path():
    """python -m dtrain.distributed.run -m package.module runs the module as python -m would."""
    result = python("-m", "dtrain.distributed.run", "-m", "tests.comm.rank_torchrun_env", timeout=60)
    check_torchrun_env(result, 1)


@pytest.mark.parametrize("args, message", [
    (["--nnodes", "2", ENV_SCRIPT], "--nnodes 2: this launcher starts ranks on one node"),
    (["-m"], "-m/--module needs a module name"),
    (["--nproc_per_node=gpu", ENV_SCRIPT], "--nproc gpu: no CUDA device is available"),
])
def test_bad_torchrun_options_are_usage_errors(args, message):
    """Several nodes, -m without a module, or one rank per GPU without a GPU are usage errors
    (exit code 2) that say why."""
    if "gpu" in args[0] and dtrain.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = python(*LAUNCH, *args)
    assert result.returncode == 2 and message in result.stderr, output(result)


def test_init_variants_under_plain_mpiexec():
    """Under mpiexec -n 2: init_process_group('gloo', init_method='tcp://...', rank=, world_size=)
    joins the MPI group; a second call with the same settings does nothing, one with another
    timeout says what differs; destroy, then init again works."""
    mpiexec = require_mpi()
    result = run([mpiexec, "-n", "2", sys.executable, "tests/comm/rank_init_variants.py"], timeout=60)
    assert result.returncode == 0, output(result)
    seen = records(result.stdout)
    for rank, r in enumerate(seen):
        assert (r["rank"], r["world"], r["backend"], r["gathered"]) == (rank, 2, "mpi", [0, 1]), r
        assert r["other_settings"] == ("init_process_group: the default process group is already initialized with "
                                       "other settings (timeout 600 s, this call asks for 7 s); call "
                                       "destroy_process_group() first"), r
        assert r["after_destroy"] is False and r["again"] == 2, r


def test_gloo_selects_mpi_and_says_so_once(lone, caplog):
    """'gloo' (and Backend.GLOO, any case) is dtrain's CPU backend, 'mpi'; the log says so once."""
    with caplog.at_level(logging.INFO, logger="dtrain.comm.lifecycle"):
        comm.lifecycle._state_notes.clear()
        dist.init_process_group("GLOO")
        assert dist.get_backend() == "mpi"
        dist.init_process_group(dist.Backend.GLOO)
    notes = [r.getMessage() for r in caplog.records if "gloo" in r.getMessage()]
    assert notes == ["init_process_group: backend 'gloo' (PyTorch's CPU backend) selects dtrain's CPU backend, "
                     "'mpi'"]


@pytest.mark.parametrize("first, second, differs", [
    (dict(), dict(timeout=30), "timeout 600 s, this call asks for 30 s"),
    (dict(backend="gloo"), dict(debug=True), "debug False, this call asks for True"),
    (dict(backend="mpi"), dict(rank=0, world_size=1, backend="mpi", timeout=600), None),
])
def test_second_init(lone, first, second, differs):
    """A second init_process_group with the same settings is a no-op; with others, an error
    naming each setting that differs, both values."""
    dist.init_process_group(**first)
    group = dist.lifecycle._state.world
    if differs is None:
        dist.init_process_group(**second)
        assert dist.lifecycle._state.world is group
    else:
        with pytest.raises(dist.DistError, match=f"already initialized with other settings \\({differs}\\)"):
            dist.init_process_group(**second)


@pytest.mark.parametrize("kwargs, message", [
    (dict(init_method="tcp://host-without-port"), "init_method 'tcp://host-without-port' is not supported"),
    (dict(store=object()), "store is not supported"),
    (dict(rank=1), "rank=1 but the launcher's environment says 0 (no launcher: a single process)"),
])
def test_unsupported_init_arguments(lone, kwargs, message):
    """A tcp:// address without a port, a store, or a rank the environment contradicts is refused, quoted."""
    with pytest.raises(ValueError, match=re.escape(message)):
        dist.init_process_group(**kwargs)


def test_accepted_init_arguments(lone):
    """env://, tcp://host:port, group_name, pg_options and a CPU device_id are accepted."""
    dist.init_process_group("gloo", init_method="tcp://10.1.1.20:23456", group_name="g", pg_options=None,
                            device_id=dtrain.device("cpu"))
    assert dist.get_world_size() == 1
    dist.destroy_process_group()
    dist.init_process_group(init_method="env://")
    assert dist.is_initialized()


def test_script_init_under_the_launcher_adopts_or_remakes_its_group(lone):
    """Under the launcher the script's first init applies its settings: the same backend keeps
    the launcher's group; another backend makes the group again with the script's; a world
    size the group contradicts is refused."""
    dist.init_process_group("mpi")  # what the launcher chooses without a GPU ("gloo" selects it too)
    dist.mark_launched()
    launcher_group = dist.lifecycle._state.world
    with pytest.raises(ValueError, match=re.escape("world_size=2 but the process group says 1 (made by dtrain.launch)")):
        dist.init_process_group("gloo", world_size=2)
    dist.init_process_group("gloo", timeout=42)
    assert dist.lifecycle._state.world is launcher_group and launcher_group.timeout == 42
    dist.mark_launched()
    launcher_group.backend = "nccl"  # as if the launcher had chosen NCCL on a GPU
    dist.init_process_group("gloo")
    assert dist.lifecycle._state.world is not launcher_group and dist.get_backend() == "mpi"


def test_distributed_is_the_comm_api():
    """Every public name of dtrain.comm is the same object in dtrain.distributed (also after
    a plain `import dtrain`)."""
    names = [n for n in dir(comm) if not n.startswith("_")]
    assert {"init_process_group", "all_reduce", "ReduceOp", "Backend", "is_gloo_available"} <= set(names)
    assert all(getattr(dist, n) is getattr(comm, n) for n in names)
    assert dtrain.distributed is dist
    assert dist.Backend("NCCL") == dist.Backend.NCCL == "nccl" and dist.is_gloo_available()


def test_distributed_optim_has_zero_redundancy_optimizer():
    """dtrain.distributed.optim imports and has ZeroRedundancyOptimizer (tests/parallel/test_zero.py
    tests it); other names are plain AttributeErrors."""
    import dtrain.distributed.optim as dist_optim
    from dtrain.distributed.optim import ZeroRedundancyOptimizer
    assert issubclass(ZeroRedundancyOptimizer, dtrain.optim.Optimizer)
    with pytest.raises(AttributeError, match="has no attribute 'Adam'"):
        dist_optim.Adam


def test_not_launched_in_a_plain_process(lone):
    """is_torchelastic_launched() is False outside the launcher (True inside: see the env tests)."""
    assert dist.is_torchelastic_launched() is False


def test_world_group_and_node_local_rank(lone, monkeypatch):
    """group.WORLD is None before init and the default group after (collectives accept it);
    get_node_local_rank falls back before init and raises PyTorch's error without a fallback."""
    assert dist.group.WORLD is None and dist.GroupMember.NON_GROUP_MEMBER == -100
    assert dist.get_node_local_rank(fallback_rank=3) == 3
    with pytest.raises(RuntimeError, match="LOCAL_RANK is not in the environment. Consider passing fallback_rank"):
        dist.get_node_local_rank()
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert dist.get_node_local_rank() == 5
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("MPI_LOCALRANKID", "1")
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert dist.get_node_local_rank() == 1  # MPICH's variable
    for name in ("MPI_LOCALRANKID", "PMI_RANK", "PMI_SIZE"):
        monkeypatch.delenv(name)
    dist.init_process_group()
    assert dist.group.WORLD is dist.lifecycle._state.world and dist.get_node_local_rank() == 0
    t = dtrain.ones(2)
    dist.all_reduce(t, group=dist.group.WORLD)
    dist.monitored_barrier()
    assert t.tolist() == [1.0, 1.0]
