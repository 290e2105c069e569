"""The old home of :mod:`dtrain.comm`'s module-level functions, now split into
:mod:`.lifecycle` (init, groups, ranks, abort_job) and :mod:`.collectives`.

Kept only for dtrain/multiprocessing.py, which imports ``LAUNCHED_ENV`` and calls
``api._abort_job`` from here: delete this module once it uses ``lifecycle.LAUNCHED_ENV`` and
``dtrain.comm.abort_job``.
"""
from .lifecycle import LAUNCHED_ENV  # noqa: F401
from .lifecycle import abort_job as _abort_job  # noqa: F401
