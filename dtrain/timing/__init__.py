"""Where the time goes: the phase timer every layer records into (:mod:`.phases`), and the
Chrome trace written from it with ``DTRAIN_TRACE=dir`` (:mod:`.trace`). It imports nothing
of dtrain, so every layer (the backward walk included) may use it; see docs/forensics.md."""
from .phases import PHASES, labelled, phase, span_seconds, totals, totals_list, trace_name, traced
from .trace import merge, set_rank, write_rank

__all__ = ["PHASES", "labelled", "phase", "span_seconds", "totals", "totals_list", "trace_name", "traced", "merge",
           "set_rank", "write_rank"]
