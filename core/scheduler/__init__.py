"""loradeck's scheduler: what starts where, as a pure function, and its simulator.

:func:`schedule` reads a :class:`SchedulerInput` (jobs, GPUs, clock, fair-share usage,
runtime history) and returns a :class:`Decision` (starts, reasons, dependency failures,
reservations). It does no I/O and reads no clock, so the engine and the discrete-event
:func:`simulate` drive the very same code.
"""

from loradeck.core.scheduler.decide import held_reason, schedule
from loradeck.core.scheduler.fairshare import FairShareUsage
from loradeck.core.scheduler.history import (
    RuntimeHistory,
    bound_seconds,
    expected_seconds,
    history_keys,
    name_stem,
)
from loradeck.core.scheduler.model import (
    ClusterView,
    Decision,
    DependencyFailure,
    GpuView,
    Need,
    SchedulerInput,
    Start,
)
from loradeck.core.scheduler.placement import never_fits
from loradeck.core.scheduler.policies import effective_priority
from loradeck.core.scheduler.queue import QueueIndex
from loradeck.core.scheduler.report import SimJobResult, SimReport, WaitStats
from loradeck.core.scheduler.simulate import (
    STRATEGIES,
    compare_strategies,
    run_strategies,
    simulate,
)
from loradeck.core.scheduler.workload import Workload, standard_workload

__all__ = [
    "STRATEGIES",
    "ClusterView",
    "Decision",
    "DependencyFailure",
    "FairShareUsage",
    "GpuView",
    "Need",
    "QueueIndex",
    "RuntimeHistory",
    "SchedulerInput",
    "SimJobResult",
    "SimReport",
    "Start",
    "WaitStats",
    "Workload",
    "bound_seconds",
    "compare_strategies",
    "effective_priority",
    "expected_seconds",
    "held_reason",
    "history_keys",
    "name_stem",
    "never_fits",
    "run_strategies",
    "schedule",
    "simulate",
    "standard_workload",
]
