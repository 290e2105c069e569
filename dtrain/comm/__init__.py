"""dtrain.comm: process groups and collectives, as ``torch.distributed``.

``import dtrain.comm as dist`` gives the names a PyTorch script uses: ``init_process_group``,
``get_rank``, ``all_reduce``, ``ReduceOp``, ``new_group``, ... Backends: "mpi" (mpi4py) and
"nccl" (CuPy's NCCL); a process started without a launcher is a world of size 1 that needs
neither. See :mod:`dtrain.comm.lifecycle` (init, groups, ranks) and
:mod:`dtrain.comm.collectives` for the functions, :mod:`dtrain.comm.env` for how ranks are
discovered, and :class:`dtrain.comm.ProcessGroup` for the backend contract.
"""
from .collectives import all_reduce_bfloat16, reduces_bfloat16  # noqa: F401  (dtrain's: NCCL's bfloat16 for CuPy data)
from .collectives import (all_gather, all_gather_into_tensor, all_gather_object, all_reduce,  # noqa: F401
                          all_reduce_coalesced, all_to_all, all_to_all_single, barrier, broadcast,
                          broadcast_object_list, gather, gather_object, irecv, isend, monitored_barrier, recv,
                          reduce, reduce_scatter, reduce_scatter_tensor, scatter, scatter_object_list, send)
from .lifecycle import (Backend, GroupMember, destroy_process_group, get_backend, get_global_rank,  # noqa: F401
                        get_group_rank, get_local_rank, get_local_world_size, get_node_local_rank,
                        get_process_group_ranks, get_rank, get_world_size, group, init_process_group, is_available,
                        is_gloo_available, is_initialized, is_mpi_available, is_nccl_available,
                        is_torchelastic_launched, new_group)
from .lifecycle import abort_job, mark_launched  # noqa: F401  (dtrain's: what the launcher and spawn call)
from .errors import DistBackendError, DistError, DistTimeoutError  # noqa: F401
from .process_group import ProcessGroup, ReduceOp  # noqa: F401
from .work import Work  # noqa: F401
