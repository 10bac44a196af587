"""When will a batch be done? Its running jobs' own ETAs, then the rest of its queue run
through the scheduler's simulator on the same GPUs."""

from __future__ import annotations

from collections.abc import Sequence

from loradeck.core.models import DependencyRef, Job, JobState
from loradeck.core.scheduler import ClusterView, RuntimeHistory, expected_seconds, simulate
from loradeck.core.settings import SchedulerSettings

#: Running jobs go first in the simulation: they already hold their GPUs.
_RUNNING_PRIORITY = 1_000_000


def batch_eta(
    jobs: Sequence[Job],
    cluster: ClusterView,
    settings: SchedulerSettings,
    history: RuntimeHistory,
    now: float,
) -> float | None:
    """Seconds until every active job of ``jobs`` has ended; 0 when none is active, None
    when there are no GPUs to simulate on and GPU jobs are waiting."""
    active = [job for job in jobs if job.state.is_active]
    if not active:
        return 0.0
    if not cluster.gpus and any(job.spec.gpus for job in active):
        return None
    default_s = settings.default_est_minutes * 60
    names = {job.id: job.name for job in active}
    specs = []
    durations: list[float] = []
    for job in active:
        expected = expected_seconds(job.spec, history, default_s)
        deps = [
            DependencyRef(job=names[dep.job_id], condition=dep.condition)
            for dep in job.deps
            if dep.job_id in names
        ]
        update: dict[str, object] = {"depends_on": deps, "timeout": None}
        if job.state == JobState.RUNNING:
            progress_eta = job.progress.eta_s if job.progress else None
            elapsed = now - job.started_at if job.started_at else 0.0
            remaining = progress_eta if progress_eta is not None else expected - elapsed
            durations.append(max(1.0, remaining))
            update.update(depends_on=[], priority=_RUNNING_PRIORITY)
        else:
            durations.append(max(1.0, expected))
        if job.state == JobState.HELD:
            update["priority"] = -_RUNNING_PRIORITY
        specs.append(job.spec.model_copy(update=update))
    report = simulate(specs, durations, cluster, settings)
    return report.makespan_s
