"""Ending attempts: the conclusion stored, then everything that follows from it.

:meth:`Concluder.finish` is the one place where an attempt ends. It stores the
conclusion (:func:`~loradeck.core.outcomes.conclude`: completed, failed, cancelled, or
a retry) only if the attempt is still the one running, then puts an evaluation's
scores on the job it scored, edits the config copy for an out-of-memory retry, charges
the attempt's GPU time (:class:`UsageLedger`), announces the end on the bus, and closes
the job's window now or after ``executor.close_window_after``.

A part of :class:`~loradeck.core.engine.Engine`, which builds it and calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from loradeck.core import events as ev
from loradeck.core.errors import LoradeckError
from loradeck.core.evaluation.leaderboard import EVALUATION_TAG
from loradeck.core.evaluation.results import read_summary
from loradeck.core.executor import AttemptResult, Executor
from loradeck.core.gpu import GpuSnapshot
from loradeck.core.guards import edit_config
from loradeck.core.jobmonitor import JobMonitor
from loradeck.core.models import EvalSummary, Job, JobState
from loradeck.core.outcomes import AttemptEnd, Conclusion, conclude
from loradeck.core.scheduler import FairShareUsage, RuntimeHistory
from loradeck.core.settings import SchedulerSettings, Settings
from loradeck.core.store import Store

log = logging.getLogger(__name__)


def _with_evaluation(job: Job, *, summary: EvalSummary) -> Job:
    return job.evolve(evaluation=summary)


class UsageLedger:
    """GPU time charged per user and project (fair share), and the runtimes of
    completed jobs (the scheduler's backfill estimates and ETAs)."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self._settings = settings
        self.usage = FairShareUsage.empty(self._half_life())
        self.history = RuntimeHistory.empty()

    def _half_life(self) -> float:
        return self._settings.fair_share_half_life_hours * 3600

    def replay(self, job: Job) -> None:
        """Charge a job that ended before this engine started, as the store has it."""
        if job.state.is_terminal and job.started_at and job.ended_at:
            runtime = job.ended_at - job.started_at
            gpu_seconds = runtime * max(job.gpus, 0)
            self.usage = self.usage.charge(
                job.user, job.spec.project, gpu_seconds, job.ended_at, self._half_life()
            )
            if job.state == JobState.COMPLETED:
                self.history = self.history.record_job(job.spec, runtime)

    def charge(self, before: Job, after: Job, now: float) -> None:
        """Charge the attempt that ``before`` ran and that ended as ``after``."""
        if before.started_at is None:
            return
        runtime = max(0.0, now - before.started_at)
        self.usage = self.usage.charge(
            before.user, before.spec.project, runtime * max(before.gpus, 0), now, self._half_life()
        )
        if after.state == JobState.COMPLETED:
            self.history = self.history.record_job(after.spec, runtime)


class Concluder:
    """Ends the attempts of one engine's store, and closes their windows."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        bus: ev.EventBus,
        *,
        store: Callable[[], Store],
        monitor: Callable[[], JobMonitor | None],
        gpus: Callable[[], Sequence[GpuSnapshot]],
        ledger: UsageLedger,
    ) -> None:
        self._settings = settings
        self._executor = executor
        self._bus = bus
        self._store = store
        self._monitor = monitor
        self._gpus = gpus
        self._ledger = ledger
        self._close_at: dict[int, tuple[float, Job]] = {}

    def finish(self, job: Job, end: AttemptEnd, now: float) -> None:
        """End ``job``'s attempt as ``end`` says, unless it already ended (or another
        attempt runs by now): a second report of one end concludes nothing."""
        store = self._store()
        monitor = self._monitor()
        if monitor is not None:
            # Read the rest of the log and save the last progress while still RUNNING.
            monitor.unwatch(job)
        biggest = max((g.memory_total_gb for g in self._gpus()), default=None)
        outcome: list[Conclusion] = []

        def apply(current: Job) -> Job:
            if current.state != JobState.RUNNING or current.attempts != job.attempts:
                return current
            result = conclude(
                current,
                end,
                now,
                on_nan=self._settings.monitoring.on_nan,
                nan_lr_scale=self._settings.monitoring.nan_lr_scale,
                gpu_total_gb=biggest,
            )
            outcome.append(result)
            return result.job

        stored = store.update(job.id, apply)
        if not outcome:
            return
        result = outcome[0]
        if EVALUATION_TAG in stored.spec.tags and stored.state.is_terminal:
            self._record_evaluation(stored)
        if result.config_edits and stored.config_copy is not None:
            edit_config(stored, result.config_edits, self._settings, self._bus)
        self._ledger.charge(job, stored, now)
        self._announce(stored, result)
        if stored.state == JobState.COMPLETED and self._settings.executor.close_on_success:
            self._close_window(stored)
        elif stored.executor_ref:
            delay = self._settings.executor.close_window_after or 3600.0
            self._close_at[stored.id] = (now + delay, stored)

    def finish_stopped(self, stopped: Iterable[tuple[int, AttemptEnd]], now: float) -> None:
        """Conclude attempts whose kill sequence is over (those still RUNNING)."""
        store = self._store()
        for job_id, end in stopped:
            job = store.get(job_id)
            if job.state != JobState.RUNNING:
                continue
            self.finish(job, end, now)

    def cancel_all_running(self, now: float) -> None:
        """Kill every running attempt and conclude it cancelled (engine shutdown)."""
        store = self._store()
        grace = self._settings.executor.kill_grace or 10.0
        for job in store.jobs(active_only=True):
            if job.state == JobState.RUNNING:
                self._executor.stop(job, grace=grace)
                self.finish(job, AttemptEnd(cancelled=True), now)

    def give_back(self, job: Job, result: AttemptResult) -> None:
        """An attempt that Slurm dropped before it ran (its dependency can never be
        satisfied) goes back to PENDING, uncounted; loradeck's dependency rules (cancel
        or hold) then decide, as for any job."""

        def apply(current: Job) -> Job:
            if current.state != JobState.RUNNING or current.attempts != job.attempts:
                return current
            return current.transition(
                JobState.PENDING,
                attempts=current.attempts - 1,
                executor_ref=None,
                reason=result.reason or "slurm: its dependency can never be satisfied",
            )

        self._store().update(job.id, apply)
        self._bus.publish(ev.QueueChanged())

    def _record_evaluation(self, evaluation_job: Job) -> None:
        """Put the evaluation's summary on the training job it scored."""
        store = self._store()
        for dep in evaluation_job.deps:
            try:
                trained = store.get(dep.job_id)
            except LoradeckError:
                continue
            summary = read_summary(trained.job_dir)
            if summary is not None:
                store.update(trained.id, partial(_with_evaluation, summary=summary))
                self._bus.publish(ev.QueueChanged())

    def _announce(self, job: Job, result: Conclusion) -> None:
        publish = self._bus.publish
        if result.retrying:
            publish(
                ev.JobRetrying(
                    job_id=job.id,
                    name=job.name,
                    attempt=job.attempts + 1,
                    delay_s=result.delay_s,
                    reason=job.reason,
                )
            )
        elif job.state == JobState.COMPLETED:
            runtime = (job.ended_at or 0) - (job.started_at or 0)
            publish(ev.JobCompleted(job_id=job.id, name=job.name, runtime_s=runtime))
        elif job.state == JobState.CANCELLED:
            publish(ev.JobCancelled(job_id=job.id, name=job.name, reason=job.reason))
        else:
            publish(
                ev.JobFailed(
                    job_id=job.id,
                    name=job.name,
                    reason=job.reason,
                    failure_class=job.failure_class.value if job.failure_class else "",
                    exit_code=job.exit_code,
                    state=job.state.value,
                )
            )
        publish(ev.QueueChanged())

    # ------------------------------------------------------------------ windows

    def window_deadlines(self) -> list[float]:
        """When the windows of ended attempts are due to close (the loop wakes then)."""
        return [at for at, _ in self._close_at.values()]

    def close_expired_windows(self, now: float) -> None:
        """Close the windows whose ``close_window_after`` has passed."""
        for job_id, (deadline, job) in list(self._close_at.items()):
            if deadline <= now:
                del self._close_at[job_id]
                self._close_window(job)

    def _close_window(self, job: Job) -> None:
        try:
            self._executor.close_window(job)
        except LoradeckError:
            log.debug("closing the window of job %s failed", job.id, exc_info=True)
