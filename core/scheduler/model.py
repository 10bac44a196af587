"""The scheduler's inputs and outputs: plain, frozen values.

A scheduling pass (:func:`loradeck.core.scheduler.schedule`) reads one
:class:`SchedulerInput` and returns one :class:`Decision`; nothing else goes in or out.
The engine builds the input from its store and GPU inventory, the simulator from its own
simulated clock, so both drive the very same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple

from loradeck.core.models import Job, JobState
from loradeck.core.scheduler.fairshare import FairShareUsage
from loradeck.core.scheduler.history import RuntimeHistory

_NO_DISTANCES: Mapping[tuple[int, int], int] = MappingProxyType({})


@dataclass(frozen=True)
class GpuView:
    """One GPU as the scheduler sees it. Memory in GiB."""

    index: int
    """NVML index."""
    total_gb: float
    foreign_gb: float = 0.0
    """VRAM held by processes loradeck did not start: counted as taken."""
    name: str = ""


@dataclass(frozen=True)
class ClusterView:
    """The GPUs of this machine, their topology and the per-GPU VRAM cap."""

    gpus: tuple[GpuView, ...]
    distance: Mapping[tuple[int, int], int] = field(default_factory=lambda: _NO_DISTANCES)
    """Topology between two NVML indices: lower is closer (NVML's common-ancestor level).
    Either order of a pair may be given; pairs that are missing count as the largest
    distance given (so unknown pairs are never preferred), or 0 when none is given."""
    max_vram_per_gpu: float | None = None
    """Use at most this many GiB of each GPU (``resources.max_vram_per_gpu``)."""

    @classmethod
    def uniform(cls, count: int, total_gb: float = 80.0) -> ClusterView:
        """``count`` identical GPUs with indices 0..count-1 and no topology (simulations)."""
        return cls(gpus=tuple(GpuView(index=i, total_gb=total_gb) for i in range(count)))

    def usable_gb(self, gpu: GpuView) -> float:
        """What loradeck may use of ``gpu`` when nothing else runs on it."""
        if self.max_vram_per_gpu is None:
            return gpu.total_gb
        return min(gpu.total_gb, self.max_vram_per_gpu)


@dataclass(frozen=True)
class SchedulerInput:
    """Everything one scheduling pass looks at."""

    jobs: Sequence[Job]
    """Active jobs: PENDING, HELD and RUNNING (running ones carry gpu_ids and started_at),
    with unique ids. A :class:`~loradeck.core.scheduler.queue.QueueIndex` of them gives the
    same decision much faster on long queues."""
    dep_states: Mapping[int, JobState]
    """State of every job an active job depends on (terminal or archived ones included).
    A dependency missing here is looked up among ``jobs``; one found nowhere waits."""
    cluster: ClusterView
    now: float
    """The pass's clock (epoch seconds, or simulated seconds); never read inside."""
    usage: FairShareUsage = field(default_factory=FairShareUsage.empty)
    """Decayed GPU-seconds per user and project (fair-share)."""
    history: RuntimeHistory = field(default_factory=RuntimeHistory.empty)
    """Past runtimes, for shortest-first ordering and backfill estimates."""


@dataclass(frozen=True)
class Start:
    """Start ``job_id`` now on ``gpu_ids`` (empty for a CPU job)."""

    job_id: int
    gpu_ids: tuple[int, ...]


@dataclass(frozen=True)
class DependencyFailure:
    """A pending job whose dependency can no longer be satisfied."""

    job_id: int
    failed_dep: int
    action: Literal["cancel", "hold"]
    """``scheduler.on_dependency_failure``: end the job CANCELLED, or hold it."""
    reason: str
    """E.g. ``"dependency 12 failed"``; store it as the job's reason."""


@dataclass(frozen=True)
class Decision:
    """What one pass decided."""

    starts: tuple[Start, ...]
    """In the order the policy chose them."""
    reasons: Mapping[int, str]
    """Every pending or held job that does not start -> why, for people. Reasons of jobs
    the pass did not look at closely are worked out when read (same answer every time)."""
    dependency_failures: tuple[DependencyFailure, ...]
    reservations: Mapping[int, tuple[tuple[int, ...], float]]
    """Job id -> (GPU ids, expected start time): what backfill keeps free for it."""


class Need(NamedTuple):
    """What a job asks of the GPUs: its shape, shared by many jobs in a queue."""

    gpus: int
    vram_gb: float | None
    """Per GPU; None takes whole GPUs."""
    exclusive: bool

    @property
    def whole(self) -> bool:
        """Whether it can share a GPU with nothing else."""
        return self.vram_gb is None or self.exclusive
