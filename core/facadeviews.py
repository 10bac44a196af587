"""The values the facade hands a user interface: immutable, plain, cheap to compare.

Kept apart from :mod:`loradeck.core.facade` so that readers, the machine view and test
scenes can build them without the facade (and its engine) being imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from loradeck.core.gpu import GpuSnapshot


class FacadeMode(StrEnum):
    """How the facade reaches the queue."""

    STARTING = "starting"
    HOSTING = "hosting"
    """The engine runs in this process."""
    FOLLOWING = "following"
    """Another process holds the engine; this one reads and acts through the store."""
    STATIC = "static"
    """Fixed data (snapshots, screenshots); no home."""


@dataclass(frozen=True)
class EngineStatus:
    """What the banner says."""

    mode: FacadeMode
    text: str


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One observation of a job's training curve."""

    step: int
    loss: float | None
    lr: float | None


@dataclass(frozen=True)
class ForeignProcess:
    """A process loradeck did not start that holds memory on a GPU."""

    pid: int
    name: str
    used_gb: float


@dataclass(frozen=True)
class GpuPanel:
    """One GPU as its panel shows it: the reading, loradeck's jobs, foreign processes."""

    gpu: GpuSnapshot
    jobs: tuple[tuple[int, str], ...]
    """(job id, name) of the running loradeck jobs placed on it."""
    foreign: tuple[ForeignProcess, ...]


@dataclass(frozen=True)
class NodePanel:
    """One node of a Slurm cluster as its panel shows it (Slurm mode)."""

    name: str
    state: str
    """Slurm's word: ``idle``, ``mixed``, ``allocated``, ``drained``, ``down``..."""
    partition: str
    gpus_used: int
    gpus_total: int
    cpus_used: int
    cpus_total: int
    mem_used_gb: float
    """Memory allocated to jobs (what Slurm gave out, not what they touch)."""
    mem_total_gb: float
    gres: str = ""
    """As configured (``gpu:a100:4``)."""
    reason: str = ""
    """Why it is drained or down, when it is."""
    jobs: tuple[tuple[int, str], ...] = ()
    """(job id, name) of the loradeck jobs Slurm runs on it."""


@dataclass(frozen=True)
class MachineReading:
    """GPUs, system RAM and CPU, read at one moment; in Slurm mode the cluster's nodes
    (``cluster`` names them) instead of this machine's GPUs."""

    taken_at: float
    gpus: tuple[GpuPanel, ...]
    ram_used_gb: float
    ram_total_gb: float
    cpu_percent: float
    message: str | None = None
    nodes: tuple[NodePanel, ...] = ()
    cluster: str = ""
    """What the nodes are (``Slurm cluster dev, partition gpu``); empty without Slurm."""
    nodes_at: float | None = None
    """When the nodes were read (they are read less often than the rest)."""


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint on the leaderboard; ``score`` is None until it is evaluated."""

    job_id: int
    job_name: str
    path: str
    step: int | None
    at: float
    score: float | None = None
    """Combined score, comparable within ``group`` (a sweep)."""
    rank: int | None = None
    """1 is the best of its group."""
    group: str = ""
    best: bool = False
    """The best checkpoint of its group."""
    metrics: tuple[tuple[str, float | None], ...] = ()


@dataclass(frozen=True)
class SubmitOutcome:
    """What a submitted (or resumed) batch became."""

    batch_id: int | None
    job_ids: tuple[int, ...]
    message: str


@dataclass(frozen=True)
class AttachPlan:
    """How to show a job's tmux window: run ``argv``; with ``suspend`` the terminal is
    handed to it (the UI suspends until it returns), else it returns at once."""

    argv: tuple[str, ...]
    suspend: bool
    env: Mapping[str, str] | None
