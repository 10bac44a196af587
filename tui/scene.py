"""A fixed scene: a :class:`~loradeck.core.facade.Facade` over made-up, deterministic data.

For SVG snapshot tests, the README screenshots and benchmarks of drawing alone: a sweep
with jobs in every state, four busy GPUs (or a Slurm cluster's nodes) with history,
events and checkpoints, all at a fixed clock (the data is in
:mod:`~loradeck.tui.scene_data`). Actions change the in-memory jobs the way the real
facade changes stored ones, so keys can be tried without an engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from loradeck.core import events as ev
from loradeck.core.actions import cancel_job, retry_job, set_priority, toggle_hold
from loradeck.core.errors import LoradeckError, UnknownJobError, ValidationError
from loradeck.core.facade import (
    AttachPlan,
    CheckpointEntry,
    EngineStatus,
    FacadeMode,
    MachineReading,
    MetricPoint,
    SubmitOutcome,
    checkpoints_from_events,
)
from loradeck.core.models import Job, JobState
from loradeck.tui.scene_data import (
    NOW,
    scene_cluster_reading,
    scene_events,
    scene_jobs,
    scene_reading,
    scene_series,
)

if TYPE_CHECKING:
    from loradeck.tui.app import LoradeckApp

__all__ = ["NOW", "SceneFacade", "scene_app"]


class SceneFacade:
    """The fixed scene as a facade (see the module docstring)."""

    def __init__(
        self,
        jobs: list[Job] | None = None,
        *,
        clock: Callable[[], float] = lambda: NOW,
        slurm: bool = False,
    ) -> None:
        """With ``slurm``, the machine is a Slurm cluster's nodes (Slurm mode)."""
        self.bus = ev.EventBus()
        self._read: Callable[[int], MachineReading] = (
            scene_cluster_reading if slurm else scene_reading
        )
        self.tmux_session = "loradeck"
        self._jobs = {job.id: job for job in (jobs if jobs is not None else scene_jobs())}
        self._clock = clock
        self._events = scene_events()
        self.submitted: list[Path] = []

    def status(self) -> EngineStatus:
        return EngineStatus(FacadeMode.STATIC, "engine: running in this window (GPUs 0-3)")

    def now(self) -> float:
        return self._clock()

    def start(self) -> EngineStatus:
        return self.status()

    def close(self, *, keep_scheduling: bool = False) -> str:
        return "scene closed"

    def jobs(self) -> list[Job]:
        return [self._jobs[i] for i in sorted(self._jobs)]

    def job(self, job_id: int) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError as err:
            raise UnknownJobError(f"no job {job_id} in this scene") from err

    def _apply(self, job_id: int, change: Callable[[Job], Job]) -> Job:
        job = self._jobs[job_id] = change(self.job(job_id))
        self.bus.publish(ev.QueueChanged(at=self.now()))
        return job

    def cancel(self, job_id: int) -> Job:
        return self._apply(job_id, lambda job: cancel_job(job, self.now()))

    def toggle_hold(self, job_id: int) -> Job:
        return self._apply(job_id, lambda job: toggle_hold(job, self.now()))

    def retry(self, job_id: int) -> Job:
        return self._apply(job_id, lambda job: retry_job(job, self.now()))

    def change_priority(self, job_id: int, delta: int) -> Job:
        return self._apply(job_id, lambda job: set_priority(job, job.priority + delta))

    def submit_batch(self, path: Path, *, resume: bool = False) -> SubmitOutcome:
        if not path.exists():
            raise ValidationError(f"{path}: no such batch file")
        self.submitted.append(path)
        return SubmitOutcome(None, (), f"scene: {path} accepted (nothing runs here)")

    def evaluate(self, job_id: int) -> str:
        raise LoradeckError("the scene has no checkpoints to evaluate", title="evaluate")

    def pending_reason(self, job: Job) -> str:
        return job.reason

    def read_machine(self) -> MachineReading:
        return self._read(60)

    def history(self) -> list[MachineReading]:
        """A minute of readings, oldest first, to fill the GPU history at once."""
        return [self._read(tick) for tick in range(60)]

    def log_tail(self, job: Job, lines: int = 200) -> list[str]:
        if job.progress is None or job.progress.step is None:
            return []
        step, total = job.progress.step, job.progress.total_steps or 0
        shown = [f"epoch {e}/10" for e in range(1, 4)]
        for s in range(max(1, step - 5), step + 1):
            loss = 0.09 + 0.01 * (s % 3)
            shown.append(
                f"steps: {100 * s // max(total, 1):3d}%| {s}/{total} [avr_loss={loss:.4f}]"
            )
        return shown[-lines:]

    def metric_series(self, job: Job) -> list[MetricPoint]:
        return scene_series(job)

    def recent_events(self, limit: int = 500) -> list[ev.Event]:
        return self._events[:limit]

    def checkpoints(self) -> list[CheckpointEntry]:
        seen = checkpoints_from_events(self._events)
        scored = [
            CheckpointEntry(
                job_id=1,
                job_name="hero-r16-lr1e-4",
                path=seen[1].path,
                step=2000,
                at=seen[1].at,
                score=0.812,
                rank=1,
                group="batch 1",
                best=True,
                metrics=(("clip_score", 0.312), ("fid", 48.1), ("sharpness", 0.74)),
            ),
            CheckpointEntry(
                job_id=1,
                job_name="hero-r16-lr1e-4",
                path=seen[2].path,
                step=1000,
                at=seen[2].at,
                score=0.655,
                rank=2,
                group="batch 1",
                metrics=(("clip_score", 0.298), ("fid", 55.7), ("sharpness", 0.69)),
            ),
        ]
        return [*scored, seen[0]]

    def attach_plan(self, job: Job, environ: Mapping[str, str]) -> AttachPlan:
        return AttachPlan(
            ("tmux", "attach-session", "-t", job.executor_ref or "loradeck"), True, None
        )

    def queued_count(self) -> int:
        return sum(job.state == JobState.PENDING for job in self._jobs.values())


def scene_app(*, theme: str | None = None, slurm: bool = False) -> LoradeckApp:
    """The app on the scene, its GPU history already filled; it never reads again. With
    ``slurm``, the GPU screen shows a Slurm cluster's nodes."""
    from loradeck.tui.app import LoradeckApp

    facade = SceneFacade(slurm=slurm)
    app = LoradeckApp(facade, theme=theme, machine_interval=3600.0, environ={})
    for reading in facade.history():
        app.deck.add_reading(reading)
    return app
