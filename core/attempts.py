"""Watching running attempts: has each ended, vanished, run too long, or been cancelled?

The executor is asked about running attempts at most every liveness interval, or when an
exit status appeared; in between only the store (cancel requests) and the clock
(timeouts) are acted on. What an answer means:

* an exit status: the attempt is concluded (completed, failed, retried);
* the window vanished without one: the attempt is "lost", its processes are killed, and
  it is retried by its policy;
* a cancel request or a timeout: the kill sequence starts (:mod:`loradeck.core.stops`).

In Slurm mode one ``squeue`` serves the whole pass (:meth:`AttemptWatcher.refresh`), and
Slurm's view of each handed-over job (its reason, its real start) is kept on the job.

A part of :class:`~loradeck.core.engine.Engine`, which builds it and calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from loradeck.core import events as ev
from loradeck.core.conclusions import Concluder
from loradeck.core.executor import AttemptStatus, Executor
from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.guards import log_shows_oom
from loradeck.core.jobmonitor import JobMonitor
from loradeck.core.models import Job, JobState
from loradeck.core.outcomes import AttemptEnd
from loradeck.core.stops import StopTracker
from loradeck.core.store import Store


class AttemptWatcher:
    """Acts on what the executor, the store and the clock say of running attempts."""

    def __init__(
        self,
        executor: Executor,
        bus: ev.EventBus,
        *,
        slurm: SlurmExecutor | None,
        store: Callable[[], Store],
        monitor: Callable[[], JobMonitor | None],
        stops: StopTracker,
        conclusions: Concluder,
    ) -> None:
        self._executor = executor
        self._bus = bus
        self._slurm = slurm
        self._store = store
        self._monitor = monitor
        self._stops = stops
        self._conclusions = conclusions

    def refresh(self, jobs: Sequence[Job]) -> None:
        """Slurm mode: one squeue for every running job, before they are polled; then
        holds made or lifted in Slurm itself (``scontrol hold``) are taken into the store."""
        if self._slurm is not None:
            self._slurm.refresh(job for job in jobs if job.state == JobState.RUNNING)
            self._slurm.sync_holds(jobs, self._store(), self._monitor())

    def check(self, job: Job, now: float, *, poll: bool) -> None:
        """Act on running ``job``; ``poll``: ask the executor too."""
        if self._stops.stopping(job.id):
            return
        if not poll:
            # Only what the store says: requests and the clock. The executor is asked at
            # most every liveness interval, or when an exit status appeared.
            if job.cancel_requested_at is not None:
                self._stops.begin(job, "cancel")
            elif self.past_timeout(job, now):
                self._stops.begin(job, "timeout")
            return
        result = self._executor.poll(job)
        if self._slurm is not None:
            job = self._note_slurm_state(job, now)
        if result.status == AttemptStatus.EXITED:
            if result.dependency_never_satisfied:
                self._conclusions.give_back(job, result)
                return
            # Slurm's words for an end loradeck did not ask for (scancel by an admin...).
            by_cluster = job.cancel_requested_at is None and (
                result.lost or result.cancelled or result.oom
            )
            end = AttemptEnd(
                exit_code=result.exit_code,
                signal=result.signal,
                cancelled=job.cancel_requested_at is not None or result.cancelled,
                timed_out=result.timed_out,
                lost=result.lost,
                oom=result.oom or (result.exit_code != 0 and log_shows_oom(job)),
                launch_error=result.launch_error,
                detail=result.reason if by_cluster else None,
            )
            self._conclusions.finish(job, end, now)
        elif result.status == AttemptStatus.LOST:
            self._stops.begin(job, "cancel" if job.cancel_requested_at else "lost")
        elif job.cancel_requested_at is not None:
            self._stops.begin(job, "cancel")
        elif self.past_timeout(job, now):
            self._stops.begin(job, "timeout")

    def past_timeout(self, job: Job, now: float) -> bool:
        """Whether the attempt ran past ``timeout``. Not with Slurm: it enforces
        ``--time`` itself, from when it started the job, not from the hand-over."""
        timeout = job.spec.timeout
        return bool(
            self._slurm is None and timeout and job.started_at and now - job.started_at >= timeout
        )

    def _note_slurm_state(self, job: Job, now: float) -> Job:
        """Keep Slurm's view of a handed-over job: its reason ("slurm: PENDING
        (Resources)") and, once Slurm has started it, when it really started (so that
        runtimes do not count the wait in Slurm's queue). The job as stored."""
        assert self._slurm is not None
        row = self._slurm.slurm_job(job)
        if row is None:
            return job
        monitor = self._monitor()
        if row.state == "PENDING" and monitor is not None:
            monitor.forgive_stall(job.id, now)  # waiting in Slurm's queue is no stall
        # An ended job's reason is about to be its conclusion's.
        reason = job.reason if row.ended else row.describe()
        started = row.start if row.ran and row.state != "PENDING" else None
        moved = started is not None and job.started_at is not None and started > job.started_at
        if reason == job.reason and not moved:
            return job

        def apply(current: Job) -> Job:
            if current.state != JobState.RUNNING or current.attempts != job.attempts:
                return current
            changes: dict[str, Any] = {"reason": reason}
            if moved:
                changes["started_at"] = started
            return current.evolve(**changes)

        stored = self._store().update(job.id, apply)
        self._bus.publish(ev.QueueChanged())
        return stored
