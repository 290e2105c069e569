"""The default process group's life: ``init_process_group``, ``new_group``, the rank and
size queries, ``destroy_process_group``, and ending the whole job (``abort_job``).

Named and behaving as ``torch.distributed``'s functions (the collectives are in
:mod:`.collectives`). Ranks given to these functions are global ranks, as in PyTorch.
"""
import atexit
import logging
import os
import sys
import threading
from datetime import timedelta

from . import env
from .launch_status import exit_report, mark_left
from .errors import AbortOnError, DistBackendError, DistError
from .local import LocalProcessGroup
from .process_group import ProcessGroup, check_rank, invalid_ranks
from ..timing import set_rank
from .work import seconds

BACKENDS = ("mpi", "nccl")
DEFAULT_TIMEOUT = timedelta(minutes=10)
TIMEOUT_ENV = "DTRAIN_TIMEOUT"
LAUNCHED_ENV = "DTRAIN_LAUNCHED"  # set by dtrain.launch in every rank, as torchrun sets TORCHELASTIC_RUN_ID
log = logging.getLogger(__name__)


class _State:
    """The default (world) group and what init_process_group learned."""

    def __init__(self):
        self.world = None
        self.local_rank, self.local_world_size = 0, 1
        self.groups = []  # sub-groups, destroyed with the world
        self.hook = None
        self.by_launcher = False  # made by `python -m dtrain.launch`; the script's first init adopts it
        self.debug = False  # DTRAIN_DEBUG=1: check collectives agree across ranks
        self.exit_code = None  # the code given to sys.exit, read at exit
        self.announced = False  # the peers were told this rank leaves (see _announce_leaving)


_state = _State()


def is_available():
    """True: the comm layer is always importable (its backends may still be missing)."""
    return True


def is_mpi_available():
    """True if mpi4py and an MPI library can be loaded."""
    from . import mpi
    return mpi.is_available()


def is_nccl_available():
    """True if CuPy has NCCL and sees a GPU."""
    from . import nccl
    return nccl.missing() is None


def is_initialized():
    """True between :func:`init_process_group` and :func:`destroy_process_group`."""
    return _state.world is not None


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None,
                       group_name="", pg_options=None, device_id=None, *, debug=None):
    """Join the job's default process group (every rank must call it).

    Rank and world size come from the launcher's environment (Open MPI, MPICH/Hydra,
    SLURM, or RANK/WORLD_SIZE; see :mod:`dtrain.comm.env`) and are checked against MPI's
    own view. A process started without a launcher is rank 0 of a world of size 1 and
    needs neither MPI nor NCCL.

    Args:
        backend: "mpi", "nccl", "gloo" (PyTorch's CPU backend: selects "mpi"), a
            :class:`Backend`, or None for "nccl" when CuPy sees a GPU and has NCCL, else "mpi"
            (with GPUs but no NCCL library, a one-time warning says why and how to install it).
        init_method: None, "env://" or "tcp://host:port": accepted for PyTorch scripts, but
            the ranks always find each other through MPI (MASTER_ADDR/MASTER_PORT and the
            address of "tcp://" are not used).
        timeout: seconds or ``timedelta`` a collective may take (default 10 minutes; the
            environment variable ``DTRAIN_TIMEOUT``, in seconds, overrides it and this
            argument, so an operator can change it without editing the script). A
            collective that takes longer (blocking, or async through ``Work.wait()``)
            raises or reports ``DistTimeoutError`` naming it, its number on the group, the
            ranks that have not called it, where the ranks' calls first differ and where each
            rank is (call sites included), and ends the job; every rank writes its stacks and
            last 32 collectives to ``$DTRAIN_RUN_DIR/dtrain-hang-<job>/`` (see :mod:`.watchdog`,
            :mod:`.forensics`).
        world_size, rank: if given (not -1), must agree with the launcher's.
        store: must be None (there is no key-value store: MPI connects the ranks).
        group_name, pg_options: accepted and ignored, as PyTorch's default backends ignore them.
        device_id: accepted; a CUDA device (index, "cuda:N") becomes the current device
            when CuPy sees GPUs.
        debug: check before every collective that all ranks call the same one on the same
            shape and dtype, and raise ``DistError`` naming the ranks and both calls
            ("rank 0 called all_reduce(float32[4]); rank 1 called barrier()") if not; costs
            an all-gather per call. Default: on if ``DTRAIN_DEBUG=1`` (or PyTorch's spelling
            ``DTRAIN_DISTRIBUTED_DEBUG=DETAIL``). Off, MPI groups check a sample of their
            calls (1, 2, 4, ..., then every 64th: ``DTRAIN_CHECK_EVERY``, 0 turns it off; see
            :mod:`.call_check`).

    A second call while the group exists does nothing if it asks for the same settings
    (backend, timeout, debug, rank, world size) and raises ``DistError`` naming what differs
    otherwise. Under ``python -m dtrain.launch script.py`` the launcher has already
    initialized the group; the script's first call applies its settings: its timeout and
    debug mode, and its backend, for which the group is made again if the launcher chose
    another one.

    Also installs an excepthook that reports an uncaught exception as
    ``rank N failed: ...`` (``rank N on host H failed: ...`` in a job across hosts) and
    aborts every rank, so no rank waits forever on a dead peer,
    and an exit hook that does the same for ``sys.exit(code)`` with a non-zero code
    (``rank N exited with code C``).

    Example:
        >>> import dtrain.distributed as dist
        >>> dist.init_process_group("gloo")    # under mpirun -n 4 python train.py
        >>> dist.get_rank(), dist.get_world_size()
        (0, 4)
    """
    if init_method is not None and not _accepted_init_method(init_method):
        raise ValueError(f"init_process_group: init_method {init_method!r} is not supported: use 'env://' or "
                         f"'tcp://host:port' (accepted; the ranks find each other through MPI) or None")
    if store is not None:
        raise ValueError("init_process_group: store is not supported: there is no key-value store, the ranks "
                         "find each other through MPI; leave store=None")
    wanted = {"backend": None if backend is None else _resolve_backend(backend),
              "timeout": None if timeout is None else _timeout(timeout),
              "debug": None if debug is None else bool(debug)}
    if is_initialized():
        world = _state.world
        if _state.by_launcher:  # the script's first call: its settings apply
            _check_place(world_size, rank, world.size(), world.rank(), "the process group", "made by dtrain.launch")
            _state.by_launcher = False
            if wanted["backend"] not in (None, world.backend):
                destroy_process_group()
                return init_process_group(wanted["backend"], init_method, timeout, world_size, rank,
                                          device_id=device_id, debug=debug)
            if wanted["timeout"] is not None:
                for g in {world, world._group_for_host()}:
                    g.timeout = wanted["timeout"]
            if wanted["debug"] is not None:
                _state.debug = wanted["debug"]
            return
        now = {"backend": world.backend, "timeout": world.timeout, "debug": _state.debug,
               "world_size": world.size(), "rank": world.rank()}
        asked = {**wanted, "world_size": None if world_size == -1 else world_size, "rank": None if rank == -1 else rank}
        show = {"timeout": lambda v: f"{v:g} s"}
        differ = [f"{name} {show.get(name, repr)(now[name])}, this call asks for {show.get(name, repr)(value)}"
                  for name, value in asked.items() if value is not None and value != now[name]]
        if differ:
            raise DistError(f"init_process_group: the default process group is already initialized with other "
                            f"settings ({'; '.join(differ)}); call destroy_process_group() first")
        return
    backend = wanted["backend"] or _resolve_backend(None)
    _state.debug = _debug_mode() if debug is None else bool(debug)
    timeout = _timeout(timeout)
    info = env.discover()
    _check_place(world_size, rank, info.world_size if info else 1, info.rank if info else 0,
                 "the launcher's environment", info.source if info else "no launcher: a single process")
    _use_device(device_id)
    if info is None or (info.world_size == 1 and not is_mpi_available()):
        _state.world = LocalProcessGroup(backend, timeout=timeout)
        return
    with _InitDeadline(info, timeout):
        from . import mpi
        world, _state.local_rank, _state.local_world_size = mpi.MPIProcessGroup.world(
            info, timeout, on_timeout=lambda line, detail: _state.hook.report(line, detail))
        topology = world.topology  # a job across hosts names the failing rank's host too
        host = topology.hosts[world.rank()] if len(set(topology.node_ids)) > 1 else None
        _state.hook = AbortOnError(world.rank(), mpi.abort, host=host)
        _state.hook.install()
        _install_exit_hook()
        if backend == "nccl":
            from . import nccl
            world = nccl.NCCLProcessGroup(world, _state.local_rank, timeout)
    _state.world = world
    set_rank(world.rank())  # the name of this rank's trace file (DTRAIN_TRACE)


class _InitDeadline:
    """Ends the job if joining the group (MPI_Init, which waits for every rank, then the
    world's own communicators) takes longer than the collective timeout: a peer that never
    calls init_process_group, or is stuck before it, would keep this rank waiting forever.

    Before MPI is up nobody can say which peer is missing, and every waiting rank times out
    at once: a rank waits ``STAGGER`` s per rank (at most ``MAX_STAGGER``) longer than the
    one before it, so that under a plain mpiexec the first report ends the job (the process
    manager kills the others) before a second is printed."""
    STAGGER, MAX_STAGGER = 0.5, 2.0

    def __init__(self, info, timeout):
        self.info, self.timeout = info, timeout
        self.done = threading.Event()
        delay = timeout + min(info.rank * self.STAGGER, self.MAX_STAGGER)
        self.timer = threading.Timer(delay, self._expire)
        self.timer.daemon = True

    def __enter__(self):
        self.timer.start()

    def __exit__(self, *exc):
        self.done.set()
        self.timer.cancel()

    def _expire(self):
        if self.done.is_set():
            return
        rank, size = self.info.rank, self.info.world_size
        AbortOnError(rank, os._exit).report(  # MPI may not be up: no MPI_Abort; the process manager ends the job
            f"DistTimeoutError: init_process_group did not finish within {self.timeout:g} s on rank {rank} of "
            f"{size}: a rank has not called it (it may be stuck before it, or dead); which one is unknown "
            f"before MPI is up ({TIMEOUT_ENV} or timeout= sets the limit)")


class Backend(str):
    """Backend names, as ``torch.distributed.Backend``: ``Backend.GLOO == "gloo"``,
    ``Backend("NCCL") == "nccl"``. "gloo" selects dtrain's CPU backend, "mpi".

    Example:
        >>> dist.init_process_group(dist.Backend.GLOO)
    """
    UNDEFINED = "undefined"
    GLOO = "gloo"
    NCCL = "nccl"
    MPI = "mpi"

    def __new__(cls, name):
        if not isinstance(name, str):
            raise ValueError(f"Backend name must be a string, but got: {name!r}")
        return str.__new__(cls, name.lower())


def is_gloo_available():
    """True: "gloo" selects the MPI backend (a single process needs no MPI)."""
    return True


def is_torchelastic_launched():
    """True in a process started by ``python -m dtrain.launch``, dtrain's torchrun."""
    return LAUNCHED_ENV in os.environ


def _accepted_init_method(init_method):
    if not isinstance(init_method, str):
        return False
    if init_method == "env://":
        return True
    host, _, port = init_method[len("tcp://"):].rpartition(":")
    return init_method.startswith("tcp://") and bool(host) and port.isdigit()


def _check_place(world_size, rank, size, own_rank, what, source):
    for name, given, found in (("world_size", world_size, size), ("rank", rank, own_rank)):
        if given != -1 and given != found:
            raise ValueError(f"init_process_group: {name}={given} but {what} says {found} ({source}): the ranks "
                             f"come from the launcher; start them with python -m dtrain.launch --nproc N, "
                             f"mpiexec -n N or dtrain.multiprocessing.spawn")


def _use_device(device_id):
    """Make ``device_id`` (an int, "cuda:N" or a device) the current CUDA device, if there are GPUs."""
    if device_id is None:
        return
    from ..tensor.backend import Device, cuda_is_available
    device = Device("cuda", device_id) if isinstance(device_id, int) else Device(device_id)
    if device.type == "cuda" and cuda_is_available():
        from ..tensor.backend import cupy
        cupy.cuda.Device(device.index).use()


def _debug_mode():
    flag = os.environ.get("DTRAIN_DEBUG", "").strip().lower()
    return flag in ("1", "true", "yes", "on") or os.environ.get("DTRAIN_DISTRIBUTED_DEBUG", "").upper() == "DETAIL"


def _timeout(timeout):
    """The collective timeout in seconds: $DTRAIN_TIMEOUT, else ``timeout``, else 10 minutes."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return seconds(DEFAULT_TIMEOUT if timeout is None else timeout)
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise ValueError(f"init_process_group: {TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return value


def _install_exit_hook():
    """Record the code of ``sys.exit`` and, at exit, end the job if it is non-zero (a plain
    ``mpiexec python script.py`` whose rank 1 calls ``sys.exit(3)`` must not leave rank 0
    waiting in its next collective). Installed once per process."""
    if getattr(sys.exit, "dtrain_records_code", False):
        return
    original = sys.exit

    def exit(code=None):
        _state.exit_code = code
        original(code)
    exit.dtrain_records_code = True
    sys.exit = exit
    original_os_exit = os._exit

    def os_exit(code):
        if code == 0:
            _check_peers_before_exit()
        original_os_exit(code)
    os._exit = os_exit
    atexit.register(_at_exit)
    os.register_at_fork(after_in_child=lambda: atexit.register(_leave_forked_child))


def _check_peers_before_exit():
    """For ``os._exit(0)``, which skips every exit hook and MPI_Finalize (a process manager
    may then end the whole job at once, with exit code 0): ask the peers whether one waits in
    a collective this rank never called, and if so end the job with that report (exit code
    1); else tell them this rank leaves."""
    world, hook = _state.world, _state.hook
    if world is None or hook is None or not hook.in_rank() or _state.announced:
        return
    dog = world._group_for_host().watchdog
    if dog is not None:
        ahead = dog.peers_ahead()
        if ahead is not None:
            abort_job(ahead, 1)
    _announce_leaving("exited (code 0)")


def _leave_forked_child():
    """In a child the rank forked (``os.fork``), the last thing at exit: leave without
    MPI_Finalize, which would wait forever for the MPI peers of the parent (a plain mpi4py
    child hangs there too). The exit code: that of ``sys.exit``, 1 after an uncaught
    exception, else 0 (a ``raise SystemExit(n)`` that bypasses ``sys.exit`` exits 0)."""
    code = _state.exit_code
    code = code if isinstance(code, int) else (0 if code is None else 1)
    if getattr(sys, "last_type", None) is not None and not code:  # set when Python printed an uncaught exception
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


def _at_exit():
    """End the job on a non-zero ``sys.exit`` code; otherwise let the async collectives
    still queued finish (the watchdog still enforces their deadlines), tell the peers this
    rank exited (one still waiting in a collective it never called reports it), and stop
    the watchdog before MPI finalizes."""
    world, hook = _state.world, _state.hook
    if world is None or hook is None or not hook.in_rank():  # a child the rank forked: its exit is its own
        return
    message = _state.exit_code
    code = message if isinstance(message, int) or message is None else 1
    if code:
        abort_job(*exit_report(world.ranks[world.rank()], code, None if message is code else str(message)))
    host = world._group_for_host()
    if host.thread is not None:
        host.thread.submit("drain", lambda: None).wait()
    _announce_leaving("exited (code 0)")
    if host.watchdog is not None:
        host.watchdog.stop()


def _resolve_backend(backend):
    if backend is None:
        from . import nccl
        problem = nccl.missing()
        if problem is None:
            return "nccl"
        from ..tensor.backend import cuda_device_count
        if cuda_device_count() and not _state_notes.get("no-nccl"):  # GPUs without NCCL: say why not nccl
            _state_notes["no-nccl"] = True
            log.warning(f"init_process_group: {problem}; using backend 'mpi' (GPU tensors go through MPI)")
        return "mpi"
    name = backend.lower() if isinstance(backend, str) else backend
    if name == "gloo":
        _note_gloo()
        name = "mpi"
    if name not in BACKENDS:
        raise ValueError(f"init_process_group: unknown backend {backend!r}; known backends: "
                         f"{', '.join(repr(b) for b in BACKENDS)}, 'gloo' (PyTorch's CPU backend: selects 'mpi') "
                         f"or None to choose nccl on a GPU, else mpi")
    if name == "nccl":
        from . import nccl
        problem = nccl.missing()
        if problem is not None:
            raise DistBackendError(f"init_process_group: backend 'nccl' is not usable: {problem}")
    return name


def _note_gloo():
    if not _state_notes.get("gloo"):
        _state_notes["gloo"] = True
        log.info("init_process_group: backend 'gloo' (PyTorch's CPU backend) selects dtrain's CPU backend, 'mpi'")


_state_notes = {}  # what has been logged once per process


def destroy_process_group(group=None):
    """Leave ``group`` (default: all groups, after which init_process_group may be called again)."""
    if group is not None and group is not _state.world:
        if group in _state.groups:
            _state.groups.remove(group)
            group.destroy()
        return
    _announce_leaving("destroyed its process group (destroy_process_group)")
    for g in _state.groups:
        g.destroy()
    _state.world.destroy()
    if _state.hook is not None:
        _state.hook.uninstall()
    _state.__init__()


def finish():
    """Leave the job at the end of this rank's script (what ``python -m dtrain.launch`` does
    when the script returns): tell the peers this rank exited, then destroy the group. A
    peer still waiting in a collective this rank never called then reports it at once."""
    _announce_leaving("exited (code 0)")
    destroy_process_group()


def _announce_leaving(how):
    """Tell the peers' watchdogs this rank leaves the group (once: the first ``how`` counts)."""
    world = default_group("destroy_process_group")
    host = world._group_for_host()
    if _state.announced:
        return
    _state.announced = True
    mark_left(os.getpid())  # for the supervisor of dtrain.launch --nproc: this exit 0 is a clean one
    if getattr(host, "watchdog", None) is not None:
        host.watchdog.announce_exit(how)


def default_group(what):
    """The world group; DistError telling the caller of ``what`` to initialize it first."""
    if _state.world is None:
        raise DistError(f"{what}: the default process group has not been initialized; "
                        f"call dtrain.comm.init_process_group() first")
    return _state.world


def group_or_default(group, what):
    """``group``, or the world group for None (either way, only once the world exists)."""
    world = default_group(what)
    if group is None:
        return world
    if not isinstance(group, (ProcessGroup, _NonMember)):
        raise TypeError(f"{what}: group must be a process group (dist.group.WORLD, or one new_group returned) "
                        f"or None for the default group, got {type(group).__name__} {group!r:.80}")
    return group


def get_rank(group=None):
    """This process's rank in ``group`` (default: the world); -1 if it is not a member."""
    return group_or_default(group, "get_rank").rank()


def get_world_size(group=None):
    """The number of ranks in ``group`` (default: the world)."""
    return group_or_default(group, "get_world_size").size()


def get_local_rank():
    """This process's rank among the ranks on its node (selects its GPU)."""
    default_group("get_local_rank")
    return _state.local_rank


def get_local_world_size():
    """The number of ranks on this process's node."""
    default_group("get_local_world_size")
    return _state.local_world_size


def get_backend(group=None):
    """The backend's name, "mpi" or "nccl"."""
    return group_or_default(group, "get_backend").backend


def get_process_group_ranks(group):
    """The global ranks of ``group``'s members, in group-rank order."""
    return list(group_or_default(group, "get_process_group_ranks").ranks)


def get_global_rank(group, group_rank):
    """The global rank of rank ``group_rank`` of ``group``."""
    ranks = get_process_group_ranks(group)
    check_rank("get_global_rank", "group", group_rank, len(ranks))
    return ranks[group_rank]


def get_group_rank(group, global_rank):
    """The rank within ``group`` of global rank ``global_rank``."""
    ranks = get_process_group_ranks(group)
    if global_rank not in ranks:
        raise ValueError(f"global rank {global_rank} is not a member of the group of ranks {ranks}")
    return ranks.index(global_rank)


def get_node_local_rank(fallback_rank=None):
    """This process's rank on its node, as ``torch.distributed.get_node_local_rank``: the
    group's local rank once initialized, else the launcher's (LOCAL_RANK, or MPI's or SLURM's
    variable), else ``fallback_rank``.

    Example:
        >>> dtrain.cuda.set_device(dist.get_node_local_rank(fallback_rank=0))
    """
    if is_initialized():
        return _state.local_rank
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    info = env.discover()
    if info is not None and info.local_rank is not None:
        return info.local_rank
    if fallback_rank is not None:
        return int(fallback_rank)
    raise RuntimeError("LOCAL_RANK is not in the environment. Consider passing fallback_rank to allow "
                       "`get_node_local_rank` to work, assuming you are not running in a multi-device context "
                       "and want the code to run locally instead.")


class _GroupMember:
    """``dist.group.WORLD`` / ``dist.GroupMember.WORLD``: the default group (None before init)."""
    NON_GROUP_MEMBER = -100

    @property
    def WORLD(self):
        return _state.world


group = GroupMember = _GroupMember()


class _NonMember:
    """What new_group returns to a rank outside the new group (torch's NON_GROUP_MEMBER)."""

    def __init__(self, backend, ranks):
        self.backend, self.ranks = backend, ranks

    def rank(self):
        return -1

    def size(self):
        return len(self.ranks)

    def destroy(self):
        pass

    def __repr__(self):
        return f"NonMemberGroup(ranks={self.ranks})"


def new_group(ranks=None, timeout=None, backend=None):
    """A process group of some ranks. Every rank must call it, members or not (as in PyTorch).

    Args:
        ranks: global ranks of the members (sorted, as PyTorch does); None or [] for all ranks.
        timeout: the group's ``wait()`` timeout (default: the world's).
        backend: must be None or the world's backend.

    Returns:
        the group; on a rank outside it, a placeholder whose ``rank()`` is -1 and with
        which collectives warn and do nothing.

    Example:
        >>> evens = dist.new_group([0, 2])
        >>> dist.all_reduce(t, group=evens)  # ranks 1 and 3 skip this
    """
    world = default_group("new_group")
    n = world.size()
    if backend is not None and backend != world.backend:
        raise ValueError(f"new_group: backend {backend!r} differs from the world's {world.backend!r}")
    ranks = list(range(n)) if not ranks else list(ranks)
    bad = invalid_ranks(ranks, n)
    if bad:
        raise ValueError(f"new_group: invalid ranks {bad}: ranks should be in the interval [0, {n - 1}]")
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"new_group: ranks {ranks} contain duplicates")
    ranks = sorted(int(r) for r in ranks)  # NumPy integers become ints: the group quotes its ranks
    group = world.new_subgroup(ranks, world.timeout if timeout is None else seconds(timeout))
    if group is None:
        return _NonMember(world.backend, ranks)
    _state.groups.append(group)
    return group


def abort_job(line, code):
    """End every rank of the job with exit code ``code``, reporting ``line`` once (as an uncaught
    exception does); a no-op in a world without MPI. The launcher and ``spawn`` call it when a
    rank exits non-zero, so that its peers do not wait for it in their next collective.

    Example:
        >>> dist.abort_job(f"rank {dist.get_rank()} exited with code 3", 3)
    """
    if _state.hook is not None:
        _state.hook.end(line, code=code)


def mark_launched():
    """Mark the default group as made by the launcher (``python -m dtrain.launch``): the
    script's first ``init_process_group`` then adopts it and applies its own settings
    instead of finding it already initialized."""
    default_group("mark_launched")
    _state.by_launcher = True
