"""What a person can do to a job: cancel, hold, release, retry, change its priority.

The pure functions (:func:`cancel_job`, :func:`hold_job`, ...) take a :class:`Job`
snapshot and return the changed job; the CLI and the TUI apply them through
:meth:`Store.update`, so each is one durable transaction, and the engine notices the
change (it watches the store) and acts on it.

A job already handed to Slurm is held, released and reprioritised in Slurm as well
(``scontrol``). :func:`apply_hold`, :func:`apply_release`, :func:`apply_toggle_hold` and
:func:`apply_priority` do that through a :class:`SlurmControl` (the Slurm executor):
Slurm first, the store only once Slurm agreed, so a refusal (a job Slurm is already
running, a negative nice asked by someone who is not a Slurm operator) leaves loradeck as
it was and the error carries Slurm's own words. Without Slurm they are the pure functions.

In Slurm mode RUNNING means *handed over*: waiting in Slurm's queue or running there. A
job that Slurm holds is HELD with its attempt still in Slurm (:func:`held_in_slurm`).
The store's state machine has no RUNNING-HELD edge, so those two moves go through
PENDING inside one transaction (:func:`into_slurm_hold`, :func:`out_of_slurm_hold`).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from loradeck.core.errors import ExecutorError, IllegalTransitionError, LoradeckError
from loradeck.core.models import FailureClass, Job, JobState

if TYPE_CHECKING:
    from loradeck.core.store import Store


class SlurmControl(Protocol):
    """What the actions need from the Slurm executor
    (:class:`~loradeck.core.executor.slurm.SlurmExecutor`)."""

    def hold(self, job: Job) -> str:
        """Hold the handed-over attempt in Slurm; Slurm's state afterwards, for people
        (``"slurm: PENDING (JobHeldUser)"``). Raises when Slurm is running it already."""
        ...

    def release(self, job: Job) -> tuple[str, str]:
        """Release it in Slurm; Slurm's state afterwards, and a problem to report that
        did not stop the release ("" when none)."""
        ...

    def set_priority(self, job: Job, priority: int) -> None:
        """Give the attempt the nice of ``priority`` where Slurm allows it; raises with
        Slurm's words when it refuses."""
        ...


# --------------------------------------------------------------------------- pure


def held_in_slurm(job: Job) -> bool:
    """HELD with its current attempt still in Slurm, held there: handed over
    (``executor_ref`` set) and not ended (``ended_at`` unset; every conclusion sets it).
    Any other HELD job waits in loradeck."""
    return job.state == JobState.HELD and job.executor_ref is not None and job.ended_at is None


def into_slurm_hold(job: Job, reason: str) -> Job:
    """A handed-over job (RUNNING) whose attempt Slurm now holds: HELD, attempt, Slurm
    id and hand-over time kept."""
    return job.transition(JobState.PENDING).transition(JobState.HELD, reason=reason)


def out_of_slurm_hold(job: Job, reason: str, **changes: Any) -> Job:
    """A job held in Slurm that Slurm may run again: handed over (RUNNING), as before."""
    held = job.transition(JobState.PENDING)
    return held.transition(JobState.RUNNING, reason=reason, **changes)


def cancel_job(job: Job, now: float) -> Job:
    """PENDING/HELD jobs end at once; a running job is stopped by the engine, and so is
    one held in Slurm (its attempt is there: the engine cancels it with scancel)."""
    if job.state == JobState.RUNNING:
        return job.evolve(cancel_requested_at=now, reason="cancel requested")
    if held_in_slurm(job):
        return out_of_slurm_hold(job, "cancel requested", cancel_requested_at=now)
    return job.transition(
        JobState.CANCELLED,
        reason="cancelled by user",
        failure_class=FailureClass.CANCELLED,
        ended_at=now,
    )


def hold_job(job: Job, now: float) -> Job:
    return job.transition(JobState.HELD, reason="held by user")


def release_job(job: Job, now: float) -> Job:
    if held_in_slurm(job):
        # Back to PENDING would hand it to Slurm a second time.
        raise IllegalTransitionError(
            f"job {job.id} ({job.name}) is held in Slurm (job {job.executor_ref}); release "
            "it with the slurm executor (executor.kind = 'slurm', or loradeck --executor "
            "slurm release), so that Slurm releases it too"
        )
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


# --------------------------------------------------------------------------- with Slurm


def apply_hold(store: Store, job_id: int, now: float, *, slurm: SlurmControl | None = None) -> Job:
    """Hold a job: in loradeck, or, for one handed over to Slurm, in Slurm too (only
    while Slurm has not started it). The job as stored."""
    job = store.get(job_id)
    if slurm is None or job.state != JobState.RUNNING:
        return store.update(job_id, partial(hold_job, now=now))
    if job.cancel_requested_at is not None:
        raise IllegalTransitionError(f"job {job.id} ({job.name}) is being cancelled")
    described = slurm.hold(job)
    try:
        return store.update(
            job_id, partial(_held, attempt=job.attempts, reason=f"held by user; {described}")
        )
    except LoradeckError:
        with contextlib.suppress(LoradeckError):
            slurm.release(job)  # loradeck did not take the hold: neither does Slurm
        raise


def apply_release(
    store: Store, job_id: int, now: float, *, slurm: SlurmControl | None = None
) -> Job:
    """Release a held job; one held in Slurm is released there and handed over again.

    Raises :class:`ExecutorError` when Slurm refuses; also, after the release, when
    Slurm refused the priority chosen while the job was held."""
    job = store.get(job_id)
    if slurm is None or not held_in_slurm(job):
        return store.update(job_id, partial(release_job, now=now))
    described, problem = slurm.release(job)
    stored = store.update(job_id, partial(_released, attempt=job.attempts, reason=described))
    if problem:
        raise ExecutorError(problem, title="priority not changed")
    return stored


def apply_toggle_hold(
    store: Store, job_id: int, now: float, *, slurm: SlurmControl | None = None
) -> Job:
    """Release a held job, hold any other (the TUI's one key)."""
    if store.get(job_id).state == JobState.HELD:
        return apply_release(store, job_id, now, slurm=slurm)
    return apply_hold(store, job_id, now, slurm=slurm)


def apply_priority(
    store: Store, job_id: int, value: int, *, slurm: SlurmControl | None = None
) -> Job:
    """Set a job's priority; for a job in Slurm, its nice too (``-value``), where Slurm
    allows it. A refusal changes nothing."""
    job = store.get(job_id)
    in_slurm = job.state == JobState.RUNNING or held_in_slurm(job)
    if slurm is not None and in_slurm and value != job.priority:
        slurm.set_priority(job, value)
    return store.update(job_id, partial(set_priority, value=value))


def _held(current: Job, *, attempt: int, reason: str) -> Job:
    if current.attempts == attempt and held_in_slurm(current):
        return current.evolve(reason=reason)  # the engine saw Slurm's hold first
    if (
        current.state != JobState.RUNNING
        or current.attempts != attempt
        or current.cancel_requested_at is not None
    ):
        raise IllegalTransitionError(
            f"job {current.id} ({current.name}) changed while Slurm held it "
            f"(now {current.state.value}: {current.reason or 'no reason'}); not held"
        )
    return into_slurm_hold(current, reason)


def _released(current: Job, *, attempt: int, reason: str) -> Job:
    if current.attempts != attempt or not held_in_slurm(current):
        return current  # the engine saw Slurm's release first
    return out_of_slurm_hold(current, reason)
