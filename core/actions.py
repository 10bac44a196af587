"""What a person can do to a job, as pure functions on a :class:`Job` snapshot.

The CLI and the TUI apply them through :meth:`Store.update`, so each is one durable
transaction; the engine notices the change (it watches the store) and acts on it.
"""

from __future__ import annotations

from loradeck.core.errors import IllegalTransitionError
from loradeck.core.models import FailureClass, Job, JobState


def cancel_job(job: Job, now: float) -> Job:
    """PENDING/HELD jobs end at once; a running job is stopped by the engine."""
    if job.state == JobState.RUNNING:
        return job.evolve(cancel_requested_at=now, reason="cancel requested")
    return job.transition(
        JobState.CANCELLED,
        reason="cancelled by user",
        failure_class=FailureClass.CANCELLED,
        ended_at=now,
    )


def hold_job(job: Job, now: float) -> Job:
    return job.transition(JobState.HELD, reason="held by user")


def release_job(job: Job, now: float) -> Job:
    return job.transition(JobState.PENDING, reason="released by user")


def toggle_hold(job: Job, now: float) -> Job:
    return release_job(job, now) if job.state == JobState.HELD else hold_job(job, now)


def retry_job(job: Job, now: float) -> Job:
    """A finished job back in the queue, with its retry budget renewed."""
    return job.transition(
        JobState.PENDING,
        reason="retry requested by user",
        attempts=0,
        not_before=None,
        failure_class=None,
        exit_code=None,
        cancel_requested_at=None,
    )


def set_priority(job: Job, value: int) -> Job:
    if job.state.is_terminal:
        raise IllegalTransitionError(f"job {job.id} already ended ({job.state.value})")
    return job.evolve(spec=job.spec.model_copy(update={"priority": value}))
