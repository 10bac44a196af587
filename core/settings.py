"""User settings (``config.toml``): validated like batch files, unknown keys are errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import platformdirs
import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loradeck.core.errors import SettingsError
from loradeck.core.models import Duration
from loradeck.core.validation import pydantic_problems

APP_NAME = "loradeck"

Strategy = Literal["fifo", "priority", "fair_share", "sjf"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchedulerSettings(_Section):
    strategy: Strategy = "priority"
    """fifo, priority, fair_share or sjf."""
    backfill: bool = True
    """Let later jobs start early when they do not delay the first waiting job."""
    max_concurrent_jobs: int = Field(default=0, ge=0)
    """At most this many jobs run at once; 0 means no limit beyond the GPUs."""
    max_jobs_per_gpu: int = Field(default=4, ge=1)
    """Jobs that declare vram_gb may share a GPU, up to this many."""
    packing: Literal["spread", "pack"] = "spread"
    """Where sharing jobs go: the GPU with the fewest jobs (spread), or the fullest GPU
    that fits (pack, keeping whole GPUs free for jobs that need one)."""
    aging_per_hour: float = Field(default=1.0, ge=0)
    """Priority points a pending job gains per hour of waiting, so nothing starves."""
    fair_share_half_life_hours: float = Field(default=24.0, gt=0)
    """Half-life of past GPU use in fair-share."""
    default_est_minutes: float = Field(default=60.0, gt=0)
    """Runtime assumed for a job with no estimate and no history."""
    on_dependency_failure: Literal["cancel", "hold"] = "cancel"
    """What happens to afterok dependents of a failed job."""
    check_interval: float = Field(default=10.0, gt=0)
    """Seconds between the slow periodic scheduling passes."""
    backfill_max_job_test: int = Field(default=1000, ge=1)
    """Backfill looks at most this many waiting jobs per pass (Slurm's bf_max_job_test)."""


class ResourceSettings(_Section):
    gpus: str = "auto"
    """auto, a list like '0,2,3', or sim:N / sim:NxG for simulated GPUs."""
    max_vram_per_gpu: float | None = Field(default=None, gt=0)
    """Use at most this many GiB of each GPU."""
    max_system_ram: float | None = Field(default=None, gt=0)
    """Do not start new jobs while system RAM in use is above this many GiB."""

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_list(cls, value: object) -> object:
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return value


class ExecutorSettings(_Section):
    kind: Literal["tmux", "slurm"] = "tmux"
    tmux_session: str = "loradeck"
    """The tmux session that holds one window per job."""
    tmux_socket: str | None = None
    """A tmux socket name (-L) for a private server; the default server when unset."""
    close_window_after: Duration = 3600.0
    """Close a finished job's window after this long."""
    close_on_success: bool = False
    """Close a job's window as soon as it completes."""
    kill_grace: Duration = 10.0
    """Seconds between SIGINT, SIGTERM and SIGKILL when stopping a job."""


class SlurmSettings(_Section):
    partition: str | None = None
    """sbatch's ``--partition``; Slurm's default partition when unset."""
    account: str | None = None
    qos: str | None = None
    extra_sbatch: list[str] = Field(default_factory=list)
    """More sbatch options, one item each (``["--constraint=a100"]``)."""
    shared_root: Path | None = None
    """A folder both the login node and the compute nodes see (absolute). Job folders
    (batch script, log, exit status) go under it, in ``loradeck-<home key>/jobs``, unless
    the home itself is on it; a job whose folder is elsewhere is not handed to Slurm."""
    max_submitted: int = Field(default=100, ge=1)
    """At most this many jobs are in Slurm (waiting or running) at once."""

    @field_validator("shared_root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if not value.is_absolute():
            raise ValueError(
                f"must be an absolute path that the compute nodes see too, got {str(value)!r}"
            )
        return value


class MonitoringSettings(_Section):
    gpu_sample_interval: float = Field(default=1.0, gt=0)
    max_log_mb: float = Field(default=512.0, gt=0)
    """Beyond this a job's log keeps its head and a rolling tail."""
    stall_minutes: float | None = Field(default=None, gt=0)
    stall_action: Literal["warn", "restart", "kill"] = "warn"
    on_nan: Literal["fail", "retry_lower_lr", "warn"] = "fail"
    nan_lr_scale: float = Field(default=0.5, gt=0, lt=1)
    vram_guard: Literal["off", "warn", "kill"] = "warn"
    vram_guard_margin_gb: float = Field(default=2.0, ge=0)
    metrics_retention_days: float = Field(default=30.0, gt=0)


class TuiSettings(_Section):
    theme: str | None = Field(default=None, min_length=1, max_length=64)
    """The theme to start with (``loradeck-dark``, ``loradeck-light``, ...; a user theme by
    name). ``LORADECK_THEME`` overrides it; unset means the dark theme."""


class EvaluationSettings(_Section):
    auto_evaluate: bool = False
    test_prompts: Path | list[str] | None = None
    num_samples_per_checkpoint: int = Field(default=4, ge=1)
    metrics: list[str] = Field(
        default_factory=lambda: ["clip_score", "fid", "consistency", "sharpness", "val_loss"]
    )
    weights: dict[str, float] = Field(default_factory=dict)
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    reference_dir: Path | None = None
    generate_command: str | None = None
    gpus: int = Field(default=1, ge=0)
    vram_gb: float | None = Field(default=8.0, ge=0)


class TrainerPreset(_Section):
    command: str
    """Command template; ``{config}`` is the job's config copy."""
    parser: str | None = None
    batch_size_key: str = "train_batch_size"
    grad_accum_key: str = "gradient_accumulation_steps"
    lr_key: str = "learning_rate"


class UserRegex(_Section):
    name: str
    pattern: str
    """A regex with named groups (step, total_steps, epoch, loss, lr, ...)."""


class HookSettings(_Section):
    on_job_submitted: str | None = None
    on_job_started: str | None = None
    on_job_completed: str | None = None
    on_job_failed: str | None = None
    on_job_cancelled: str | None = None
    on_job_retrying: str | None = None
    on_batch_done: str | None = None
    timeout: Duration = 30.0


BUILTIN_TRAINERS: dict[str, TrainerPreset] = {
    "kohya": TrainerPreset(
        command="accelerate launch train_network.py --config_file {config}", parser="kohya"
    ),
    "kohya-sdxl": TrainerPreset(
        command="accelerate launch sdxl_train_network.py --config_file {config}", parser="kohya"
    ),
    "ai-toolkit": TrainerPreset(
        command="python run.py {config}",
        parser="ai-toolkit",
        batch_size_key="batch_size",
        grad_accum_key="gradient_accumulation_steps",
        lr_key="lr",
    ),
    "onetrainer": TrainerPreset(
        command="python scripts/train.py --config-path {config}",
        parser="onetrainer",
        batch_size_key="batch_size",
        grad_accum_key="gradient_accumulation_steps",
        lr_key="learning_rate",
    ),
}


class Settings(_Section):
    scheduler: SchedulerSettings = SchedulerSettings()
    resources: ResourceSettings = ResourceSettings()
    executor: ExecutorSettings = ExecutorSettings()
    slurm: SlurmSettings = SlurmSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    trainers: dict[str, TrainerPreset] = Field(default_factory=dict)
    """Your own trainer presets; they add to (and may replace) the built-in ones."""
    parsers: list[UserRegex] = Field(default_factory=list)
    hooks: HookSettings = HookSettings()
    tui: TuiSettings = TuiSettings()

    def trainer(self, name: str) -> TrainerPreset | None:
        return self.trainers.get(name) or BUILTIN_TRAINERS.get(name)

    def trainer_names(self) -> list[str]:
        return sorted({*BUILTIN_TRAINERS, *self.trainers})


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def load_settings(path: Path | None = None) -> Settings:
    """Settings from ``path`` (or the platform's config file when it exists).

    An explicit path that does not exist is an error; the default one may be absent.
    """
    explicit = path is not None
    target = path if path is not None else default_config_path()
    if not target.exists():
        if explicit:
            raise SettingsError(
                f"{target}: no such settings file; check the path given to --config"
            )
        return Settings()
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"{target}: cannot read it: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{target}: not valid TOML: {err}") from err
    try:
        return Settings.model_validate(data)
    except pydantic.ValidationError as err:
        raise SettingsError(pydantic_problems(err, str(target))) from err
