"""The job model: what a user writes (:class:`JobSpec`) and what loradeck keeps (:class:`Job`).

A :class:`JobSpec` is exactly what one ``[[job]]`` of a batch file (or one ``loradeck
submit``) asks for, after defaults and sweep expansion, with relative paths made
absolute. It forbids unknown keys so that a typo fails loudly.

A :class:`Job` is the stored, immutable snapshot of one job: its id, its spec, the
dependencies resolved to ids, and its runtime state. Changes are new snapshots made
with :meth:`Job.evolve`, and every state change goes through :meth:`Job.transition`,
which refuses what the state machine does not allow.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from loradeck.core.errors import IllegalTransitionError

# --------------------------------------------------------------------------- states


class JobState(StrEnum):
    """Where a job is in its life."""

    PENDING = "PENDING"
    HELD = "HELD"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        return self not in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
)

#: Every allowed state change. Anything else raises :class:`IllegalTransitionError`.
#: RUNNING -> PENDING is a requeue (retry after a failure, a lost job, an OOM wait);
#: terminal -> PENDING is an explicit ``loradeck retry``.
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset(
        {JobState.RUNNING, JobState.HELD, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.HELD: frozenset({JobState.PENDING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMEOUT,
            JobState.PENDING,
        }
    ),
    JobState.COMPLETED: frozenset({JobState.PENDING}),
    JobState.FAILED: frozenset({JobState.PENDING}),
    JobState.CANCELLED: frozenset({JobState.PENDING}),
    JobState.TIMEOUT: frozenset({JobState.PENDING}),
}


class FailureClass(StrEnum):
    """Why a job attempt ended badly; recorded with the failure."""

    EXIT_CODE = "exit_code"
    SIGNAL = "signal"
    TIMEOUT = "timeout"
    OOM = "oom"
    LOST = "lost"
    DIVERGED = "diverged"
    STALLED = "stalled"
    VRAM_GUARD = "vram_guard"
    DEPENDENCY = "dependency"
    CANCELLED = "cancelled"
    LAUNCH = "launch"


class DependencyCondition(StrEnum):
    """Slurm's dependency conditions."""

    AFTEROK = "afterok"
    AFTERANY = "afterany"
    AFTERNOTOK = "afternotok"


class OomPolicy(StrEnum):
    """What to do when an attempt dies of CUDA out-of-memory."""

    FAIL = "fail"
    """Treat it like any failure (retry by ``retries``)."""
    SMALLER_BATCH = "smaller_batch"
    """Retry with the batch size halved and gradient accumulation doubled in the config copy."""
    WAIT_FOR_MEMORY = "wait_for_memory"
    """Retry only on a GPU with more free memory than the attempt had."""


# --------------------------------------------------------------------------- helpers

_DURATION_RE = re.compile(
    r"^\s*(?:(?P<d>\d+(?:\.\d+)?)\s*d)?\s*(?:(?P<h>\d+(?:\.\d+)?)\s*h)?\s*"
    r"(?:(?P<m>\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(?P<s>\d+(?:\.\d+)?)\s*s)?\s*$"
)
_CLOCK_RE = re.compile(r"^\s*(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+)\s*$")


def parse_duration(value: Any) -> float | None:
    """Seconds from a number (seconds), ``"90s"``, ``"45m"``, ``"2h30m"``, ``"1d"``,
    ``"HH:MM:SS"``, ``"MM:SS"`` or Slurm's ``"D-HH:MM:SS"``. ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("expected a duration like 90, '45m', '2h30m' or '01:30:00'")
        try:
            seconds = float(text)
        except ValueError:
            clock = _CLOCK_RE.match(text)
            units = _DURATION_RE.match(text) if clock is None else None
            if clock is not None:
                parts = {k: float(v or 0) for k, v in clock.groupdict().items()}
            elif units is not None and any(units.groupdict().values()):
                parts = {k: float(v or 0) for k, v in units.groupdict().items()}
            else:
                raise ValueError(
                    f"cannot read {value!r} as a duration; "
                    "write seconds (90) or '45m', '2h30m', '01:30:00'"
                ) from None
            seconds = parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be a positive, finite number of seconds")
    return seconds


Duration = Annotated[float | None, BeforeValidator(parse_duration)]

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DependencyRef(BaseModel):
    """One dependency as a user writes it: a job name or id, and a condition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: str | int
    """Name (within the batch, else the newest job of that name in the store) or id."""
    condition: DependencyCondition = DependencyCondition.AFTEROK
    """afterok (default), afterany or afternotok."""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """Accept ``"name"``, ``12``, ``"afterany:name"`` and the table form."""
        if isinstance(value, bool):
            raise ValueError("expected a job name or id")
        if isinstance(value, int):
            return {"job": value}
        if isinstance(value, str):
            head, sep, tail = value.partition(":")
            if sep and head in DependencyCondition.__members__.values():
                value = {"job": tail, "condition": head}
            else:
                value = {"job": value}
            text = value["job"]
            if isinstance(text, str) and text.strip().isdigit():
                value["job"] = int(text)
        return value

    @field_validator("job")
    @classmethod
    def _non_empty(cls, value: str | int) -> str | int:
        if isinstance(value, str) and not value.strip():
            raise ValueError("a dependency needs a job name or id")
        return value


class Dependency(BaseModel):
    """A dependency resolved to a job id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: int
    condition: DependencyCondition = DependencyCondition.AFTEROK


# --------------------------------------------------------------------------- spec


class JobSpec(BaseModel):
    """One job as the user asked for it. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    """Shown everywhere; any text (it never reaches a shell)."""
    command: str | None = None
    """Run by bash in the job's workdir. ``{config}`` is the job's config copy."""
    trainer: str | None = None
    """A trainer preset from settings that turns ``config`` into a command."""
    config: Path | None = None
    """A trainer config file; copied per job (sweep values written into the copy)."""
    parser: str | None = None
    """Log parser preset (kohya, ai-toolkit, diffusers, onetrainer...); auto-detected if unset."""
    workdir: Path | None = None
    """Where the command runs; the batch file's folder by default."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables."""
    venv: Path | None = None
    """A Python virtual environment to activate."""
    conda: str | None = None
    """A conda environment (name or path) to activate."""
    gpus: int = Field(default=1, ge=0, le=64)
    """How many GPUs, all at once; 0 for a CPU job."""
    vram_gb: float | None = Field(default=None, ge=0, le=4096)
    """VRAM needed per GPU in GiB; unset means the whole GPU."""
    exclusive: bool = False
    """Never share a GPU with another job, whatever the VRAM."""
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    """Higher runs first under the priority policy."""
    user: str | None = None
    """For fair-share; the submitting user by default."""
    project: str = "default"
    """For fair-share."""
    depends_on: list[DependencyRef] = Field(default_factory=list)
    """Jobs this one waits for."""
    retries: int = Field(default=0, ge=0, le=100)
    """How many times a failed attempt is retried."""
    retry_backoff: Duration = 30.0
    """Seconds before the first retry; doubled on each further attempt."""
    timeout: Duration = None
    """Wall-time limit of one attempt (seconds, '45m', '2h', '01:30:00')."""
    est_minutes: float | None = Field(default=None, gt=0)
    """Expected run time, for shortest-first and backfill."""
    tags: list[str] = Field(default_factory=list)
    """Free labels."""
    on_oom: OomPolicy = OomPolicy.FAIL
    """What to do when an attempt runs out of GPU memory."""
    stall_minutes: float | None = Field(default=None, gt=0)
    """Watchdog: no progress for this long counts as a stall."""
    cpus: int | None = Field(default=None, ge=1)
    """CPU cores (Slurm's --cpus-per-task)."""
    mem_gb: float | None = Field(default=None, gt=0)
    """System memory (Slurm's --mem)."""
    output_dir: Path | None = None
    """Where the job writes; its folder in the home by default."""

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_NAME_RE.match(key):
                raise ValueError(
                    f"{key!r} is not a valid environment variable name "
                    "(letters, digits and _, not starting with a digit)"
                )
        return value

    @field_validator("name")
    @classmethod
    def _name_printable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a job name cannot be blank")
        if "\x00" in value:
            raise ValueError("a job name cannot contain a NUL byte")
        return value

    @field_validator("command")
    @classmethod
    def _command_text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("command is empty; give the command to run")
        if value is not None and "\x00" in value:
            raise ValueError("a command cannot contain a NUL byte")
        return value

    @model_validator(mode="after")
    def _runnable(self) -> JobSpec:
        if self.command is None and self.trainer is None:
            raise ValueError("give either `command`, or `trainer` with `config`")
        if self.trainer is not None and self.config is None:
            raise ValueError(f"trainer {self.trainer!r} needs `config` (the trainer's config file)")
        if self.venv is not None and self.conda is not None:
            raise ValueError("give `venv` or `conda`, not both")
        if self.exclusive and self.gpus == 0:
            raise ValueError("`exclusive` only makes sense for a job with gpus >= 1")
        return self


# --------------------------------------------------------------------------- job


class Progress(BaseModel):
    """The latest training progress parsed from a job's log (a summary, not the series)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    loss: float | None = None
    lr: float | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    val_loss: float | None = None
    checkpoints: int = 0
    updated_at: float | None = None

    @property
    def fraction(self) -> float | None:
        if self.step is not None and self.total_steps:
            return max(0.0, min(1.0, self.step / self.total_steps))
        if self.epoch is not None and self.total_epochs:
            return max(0.0, min(1.0, self.epoch / self.total_epochs))
        return None


class EvalSummary(BaseModel):
    """What the store keeps of a job's checkpoint evaluation (the full results are in
    ``<job folder>/evaluation/results.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    results_file: Path
    evaluated_at: float
    checkpoints: int = 0
    best_key: str | None = None
    best_checkpoint: Path | None = None
    best_score: float | None = None
    error: str | None = None


class Job(BaseModel):
    """A stored job: an immutable snapshot. Use :meth:`evolve` and :meth:`transition`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1)
    spec: JobSpec
    deps: tuple[Dependency, ...] = ()
    """Dependencies resolved to ids at submit time."""
    batch_id: int | None = None
    command: str
    """The final command line run by bash (trainer preset expanded, placeholders filled)."""
    config_copy: Path | None = None
    """This job's own copy of its trainer config (sweep values written in)."""
    output_dir: Path
    log_file: Path
    state: JobState = JobState.PENDING
    reason: str = ""
    """Why it is pending or held, or why it failed."""
    failure_class: FailureClass | None = None
    exit_code: int | None = None
    attempts: int = 0
    """Attempts started so far."""
    not_before: float | None = None
    """Retry backoff: not started before this time (epoch seconds)."""
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    gpu_ids: tuple[int, ...] = ()
    """GPUs of the current or last attempt (NVML indices)."""
    executor_ref: str | None = None
    """The executor's handle of the current attempt (tmux window id, Slurm job id)."""
    progress: Progress | None = None
    log_offset: int = 0
    """Bytes of the current attempt's log already parsed, so a restarted engine
    neither re-reads nor misses a line."""
    evaluation: EvalSummary | None = None
    """The best checkpoint and its score, once the job's evaluation ran."""
    cancel_requested_at: float | None = None
    """Set by ``loradeck cancel`` on a running job; the engine stops it and ends it CANCELLED."""

    @property
    def job_dir(self) -> Path:
        """The job's own folder in the home (run script, log, exit status, config copy)."""
        return self.log_file.parent

    # ----- convenience
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def gpus(self) -> int:
        return self.spec.gpus

    @property
    def priority(self) -> int:
        return self.spec.priority

    @property
    def user(self) -> str:
        return self.spec.user or ""

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied; not for ``state`` (use :meth:`transition`)."""
        if "state" in changes:
            raise IllegalTransitionError(
                f"job {self.id}: change state with transition(), not evolve()"
            )
        return self.model_copy(update=changes)

    def transition(self, new: JobState, **changes: Any) -> Job:
        """A copy in state ``new``; raises :class:`IllegalTransitionError` if not allowed."""
        if new not in ALLOWED_TRANSITIONS[self.state]:
            raise IllegalTransitionError(
                f"job {self.id} ({self.name}) cannot go from {self.state} to {new}"
            )
        return self.model_copy(update={**changes, "state": new})


class Batch(BaseModel):
    """One submitted batch file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1)
    path: Path | None
    """The batch file, absolute; None for jobs from ``loradeck submit``."""
    digest: str
    """sha256 of the file's bytes, to recognise a re-run of the same file."""
    submitted_at: float
    job_ids: tuple[int, ...]


OutputFormat = Literal["table", "json"]
