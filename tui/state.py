"""What the TUI knows about the queue and the machine, kept on the UI thread.

Plain Python: the app feeds it from bridge messages and worker results, the screens read
it. Live progress events are kept beside the stored jobs (they arrive many times a
second, the store is written less often), and :meth:`DeckState.progress_of` shows
whichever is newer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from loradeck.core import events as ev
from loradeck.core.facade import (
    CheckpointEntry,
    EngineStatus,
    FacadeMode,
    MachineReading,
    NodePanel,
)
from loradeck.core.gpu import GpuRing
from loradeck.core.models import Job, JobState

#: Events kept for the Events screen.
EVENT_HISTORY = 1_000
#: GPU samples kept per GPU (at one a second: ten minutes).
RING_CAPACITY = 600


@dataclass(frozen=True)
class ProgressView:
    """The progress a row shows: stored summary or newer live event."""

    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    loss: float | None = None
    lr: float | None = None
    eta_s: float | None = None

    @property
    def fraction(self) -> float | None:
        if self.step is not None and self.total_steps:
            return max(0.0, min(1.0, self.step / self.total_steps))
        return None


class NodeRing:
    """The last readings of one Slurm node: GPUs and CPUs given out, memory allocated."""

    def __init__(self, capacity: int = RING_CAPACITY) -> None:
        self.gpus: deque[float] = deque(maxlen=capacity)
        self.cpus: deque[float] = deque(maxlen=capacity)
        self.mem: deque[float] = deque(maxlen=capacity)

    def append(self, node: NodePanel) -> None:
        self.gpus.append(float(node.gpus_used))
        self.cpus.append(float(node.cpus_used))
        self.mem.append(node.mem_used_gb)


@dataclass(frozen=True)
class JobsDiff:
    """What changed between two job lists."""

    added: tuple[int, ...] = ()
    changed: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass
class DeckState:
    """Jobs, live progress, GPU history, events and checkpoints."""

    status: EngineStatus = field(
        default_factory=lambda: EngineStatus(FacadeMode.STARTING, "engine: starting…")
    )
    jobs: dict[int, Job] = field(default_factory=dict)
    live: dict[int, ev.JobProgress] = field(default_factory=dict)
    events: deque[ev.Event] = field(default_factory=lambda: deque(maxlen=EVENT_HISTORY))
    """Newest first."""
    checkpoints: list[CheckpointEntry] = field(default_factory=list)
    rings: dict[int, GpuRing] = field(default_factory=dict)
    node_rings: dict[str, NodeRing] = field(default_factory=dict)
    """Slurm mode: each node's history, one entry per reading of the nodes."""
    ram: deque[float] = field(default_factory=lambda: deque(maxlen=RING_CAPACITY))
    cpu: deque[float] = field(default_factory=lambda: deque(maxlen=RING_CAPACITY))
    machine: MachineReading | None = None
    loaded: bool = False
    """True once the first job list arrived."""

    # ------------------------------------------------------------------ jobs

    def set_jobs(self, jobs: Sequence[Job]) -> JobsDiff:
        """Replace the job list; the ids that were added, changed or removed."""
        old = self.jobs
        new = {job.id: job for job in jobs}
        added = tuple(i for i in new if i not in old)
        removed = tuple(i for i in old if i not in new)
        # The store hands back the same object for an unchanged job: `is` is enough.
        changed = tuple(i for i, job in new.items() if i in old and old[i] is not job)
        for job_id in changed:
            if new[job_id].state != JobState.RUNNING or (
                new[job_id].attempts != old[job_id].attempts
            ):
                self.live.pop(job_id, None)
        for job_id in removed:
            self.live.pop(job_id, None)
        self.jobs = new
        self.loaded = True
        return JobsDiff(added, changed, removed)

    def apply_progress(self, event: ev.JobProgress) -> bool:
        """Keep a live progress event; False if the job is unknown or not running."""
        job = self.jobs.get(event.job_id)
        if job is None or job.state != JobState.RUNNING:
            return False
        self.live[event.job_id] = event
        return True

    def progress_of(self, job: Job) -> ProgressView:
        stored = job.progress
        event = self.live.get(job.id)
        if event is not None and (
            stored is None or stored.updated_at is None or event.at >= stored.updated_at
        ):
            merged_total = event.total_steps or (stored.total_steps if stored else None)
            return ProgressView(
                step=event.step,
                total_steps=merged_total,
                epoch=event.epoch,
                loss=event.loss if event.loss is not None else (stored.loss if stored else None),
                lr=event.lr if event.lr is not None else (stored.lr if stored else None),
                eta_s=event.eta_s,
            )
        if stored is None:
            return ProgressView()
        return ProgressView(
            step=stored.step,
            total_steps=stored.total_steps,
            epoch=stored.epoch,
            loss=stored.loss,
            lr=stored.lr,
            eta_s=stored.eta_s,
        )

    def counts(self) -> dict[JobState, int]:
        out: dict[JobState, int] = {}
        for job in self.jobs.values():
            out[job.state] = out.get(job.state, 0) + 1
        return out

    def siblings(self, job: Job) -> list[Job]:
        """The other jobs of the same batch (a sweep), by id."""
        if job.batch_id is None:
            return []
        return [j for j in self.jobs.values() if j.batch_id == job.batch_id and j.id != job.id]

    # ------------------------------------------------------------------ events, machine

    def add_events(self, events: Iterable[ev.Event]) -> None:
        """Add events given oldest first (they are kept newest first)."""
        for event in events:
            self.events.appendleft(event)
            if isinstance(event, ev.CheckpointSaved) and all(
                c.path != event.path for c in self.checkpoints
            ):
                self.checkpoints.insert(
                    0,
                    CheckpointEntry(event.job_id, event.name, event.path, event.step, event.at),
                )

    def add_reading(self, reading: MachineReading) -> None:
        before, self.machine = self.machine, reading
        for panel in reading.gpus:
            ring = self.rings.get(panel.gpu.index)
            if ring is None:
                ring = self.rings[panel.gpu.index] = GpuRing(panel.gpu.index, RING_CAPACITY)
            ring.append(panel.gpu.sample(reading.taken_at))
        if reading.nodes and (before is None or reading.nodes_at != before.nodes_at):
            # nodes are read less often than the rest: one entry per reading of them
            for node in reading.nodes:
                self.node_rings.setdefault(node.name, NodeRing()).append(node)
        self.ram.append(reading.ram_used_gb)
        self.cpu.append(reading.cpu_percent)
