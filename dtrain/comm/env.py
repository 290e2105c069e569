"""Rank, world size and local rank, read from the variables a process manager sets.

Sources, in the order they are tried (the first whose rank variable is set wins):

=============  ===================  ======================  =========================  ========================
launcher       rank                 world size              local rank                 local world size
=============  ===================  ======================  =========================  ========================
Open MPI       OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE    OMPI_COMM_WORLD_LOCAL_RANK OMPI_COMM_WORLD_LOCAL_SIZE
MPICH / Hydra  PMI_RANK             PMI_SIZE                MPI_LOCALRANKID            MPI_LOCALNRANKS
SLURM (srun)   SLURM_PROCID         SLURM_STEP_NUM_TASKS,   SLURM_LOCALID              SLURM_STEP_TASKS_PER_NODE,
                                    SLURM_NTASKS                                       SLURM_TASKS_PER_NODE,
                                                                                       SLURM_NTASKS_PER_NODE
torchrun-like  RANK                 WORLD_SIZE              LOCAL_RANK                 LOCAL_WORLD_SIZE
=============  ===================  ======================  =========================  ========================

MPI's variables come before SLURM's: ``mpirun`` inside an ``sbatch`` script inherits the
batch step's SLURM_PROCID=0, which says nothing about the ranks mpirun starts.

The MPI library must be the one whose mpiexec started the job: an MPICH build under Open MPI's
mpirun stops in ``MPI_Init`` (MPICH does not speak PMIx); an Open MPI build under MPICH's
Hydra starts N worlds of one rank each, which :func:`check_agrees` reports.
"""
import os
from typing import NamedTuple, Optional


class LaunchInfo(NamedTuple):
    """Where this process sits in the job. ``local_*`` are None when the launcher does not say."""
    rank: int
    world_size: int
    local_rank: Optional[int]
    local_world_size: Optional[int]
    source: str


# (source name, rank var, world size vars, local rank var, local size vars)
SOURCES = (
    ("Open MPI", "OMPI_COMM_WORLD_RANK", ("OMPI_COMM_WORLD_SIZE",), "OMPI_COMM_WORLD_LOCAL_RANK",
     ("OMPI_COMM_WORLD_LOCAL_SIZE",)),
    ("MPICH/Hydra", "PMI_RANK", ("PMI_SIZE",), "MPI_LOCALRANKID", ("MPI_LOCALNRANKS",)),
    ("SLURM", "SLURM_PROCID", ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"), "SLURM_LOCALID",
     ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE")),
    ("RANK/WORLD_SIZE", "RANK", ("WORLD_SIZE",), "LOCAL_RANK", ("LOCAL_WORLD_SIZE",)),
)


def discover(environ=None):
    """Read this process's place in the job from the launcher's environment variables.

    Args:
        environ: the mapping to read (default ``os.environ``).

    Returns:
        a :class:`LaunchInfo`, or None when no launcher variables are set (a lone process).

    Raises:
        ValueError: a variable is missing, not an integer, or out of range; the message
            names the variable, its value and the launcher.

    Example:
        >>> discover({"PMI_RANK": "1", "PMI_SIZE": "4"})
        LaunchInfo(rank=1, world_size=4, local_rank=None, local_world_size=None, source='MPICH/Hydra')
    """
    env = os.environ if environ is None else environ
    for source, rank_var, size_vars, local_var, local_size_vars in SOURCES:
        if rank_var not in env:
            continue
        size_var = next((v for v in size_vars if v in env), None)
        if size_var is None:
            raise ValueError(f"{source} launch: {rank_var}={env[rank_var]} is set but the world size is not "
                             f"(expected {' or '.join(size_vars)})")
        rank, size = _int(env, rank_var, source), _int(env, size_var, source)
        if size < 1 or not 0 <= rank < size:
            raise ValueError(f"{source} launch: {rank_var}={rank} with {size_var}={size}: "
                             f"expected a world size >= 1 and a rank in [0, {size - 1}]")
        local_rank = _int(env, local_var, source) if local_var in env else None
        local_size = _local_size(env, local_size_vars, source)
        if local_rank is not None and local_size is not None and not 0 <= local_rank < local_size:
            raise ValueError(f"{source} launch: local rank {local_var}={local_rank} is not in "
                             f"[0, {local_size - 1}] (local world size {local_size})")
        return LaunchInfo(rank, size, local_rank, local_size, source)
    return None


def count_from_env(variable, default, meaning):
    """A whole number >= 0 from environment ``variable`` (``default`` when unset).

    Raises:
        ValueError: any other value, quoting the variable, its value and ``meaning`` (what
            the number sets, so the message says what to write).
    """
    text = os.environ.get(variable)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{variable}={text!r} must be a whole number >= 0: {meaning}")
    return value


def _int(env, var, source):
    try:
        return int(env[var])
    except ValueError:
        raise ValueError(f"{source} launch: {var}={env[var]!r} is not an integer") from None


def _local_size(env, variables, source):
    var = next((v for v in variables if v in env), None)
    if var is None:
        return None
    if var.endswith("TASKS_PER_NODE") and var != "SLURM_NTASKS_PER_NODE":
        return _slurm_tasks_on_node(env[var], int(env.get("SLURM_NODEID", 0)), var)
    return _int(env, var, source)


def _slurm_tasks_on_node(spec, node, var):
    """The task count of node ``node`` in SLURM's compressed list, e.g. ``"4(x2),3"`` = 4,4,3."""
    counts = []
    try:
        for item in spec.split(","):
            count, _, repeat = item.partition("(x")
            counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
        return counts[node]
    except (ValueError, IndexError):
        raise ValueError(f"SLURM launch: cannot read the tasks of node {node} from {var}={spec!r}") from None


def check_agrees(info, rank, world_size, local_rank=None, local_world_size=None, what="MPI"):
    """Raise if the launcher's variables and the backend's own view of the job differ.

    Args:
        info: the :class:`LaunchInfo` read from the environment (None: nothing to check).
        rank, world_size, local_rank, local_world_size: the backend's view.
        what: the backend's name, for the message.
    """
    if info is None:
        return
    pairs = [("rank", info.rank, rank), ("world size", info.world_size, world_size),
             ("local rank", info.local_rank, local_rank), ("local world size", info.local_world_size, local_world_size)]
    if world_size == 1 and info.world_size > 1 and info.source in ("Open MPI", "MPICH/Hydra"):
        advice = (f"Each rank is alone in its world: the {info.source} mpiexec that started it belongs to "
                  f"another MPI library than the one the {what} backend uses (mpi4py's). Start the job with "
                  f"that library's mpiexec (DTRAIN_MPIEXEC=/path/to/mpiexec for python -m dtrain.launch --nproc).")
    else:
        advice = ("Start every rank with the same launcher (mpirun/mpiexec/srun) and do not set "
                  "RANK/WORLD_SIZE by hand.")
    for name, env_value, backend_value in pairs:
        if env_value is not None and backend_value is not None and env_value != backend_value:
            raise ValueError(
                f"the {info.source} environment says {name} {env_value} but {what} says {backend_value} "
                f"(environment: rank {info.rank} of {info.world_size}; {what}: rank {rank} of {world_size}). "
                f"{advice}")
