"""Scheduling and launching: what starts where, and starting it crash-safely.

:class:`ClusterReader` reads the GPUs (real, or simulated with the running jobs' usage)
into the scheduler's :class:`~loradeck.core.scheduler.ClusterView`. Each pass,
:class:`Dispatcher` runs the scheduler (in Slurm mode
:func:`~loradeck.core.slurmmode.slurm_decision`, since Slurm places jobs), cancels or
holds the jobs whose dependencies failed, launches the starts, and keeps every waiting
job's reason.

A part of :class:`~loradeck.core.engine.Engine`, which builds it and calls it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loradeck.core import events as ev
from loradeck.core.clusterview import cluster_from_snapshot, sim_usage
from loradeck.core.conclusions import UsageLedger
from loradeck.core.errors import LoradeckError
from loradeck.core.executor import Executor, launch_all
from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.gpu import GpuInventory, GpuSnapshot, InventorySnapshot
from loradeck.core.guards import ram_guard
from loradeck.core.models import FailureClass, Job, JobState
from loradeck.core.outcomes import AttemptEnd
from loradeck.core.scheduler import (
    ClusterView,
    Decision,
    QueueIndex,
    SchedulerInput,
    Start,
    schedule,
)
from loradeck.core.settings import Settings
from loradeck.core.slurmmode import slurm_decision
from loradeck.core.store import Store

#: How many changed pending reasons are written per pass (the rest follow next passes).
REASON_WRITES_PER_PASS = 500
#: Seconds between writes of changed pending reasons to the store.
REASON_WRITE_INTERVAL = 2.0


class ClusterReader:
    """The engine's GPUs, as read and as the scheduler sees them."""

    def __init__(
        self,
        inventory: GpuInventory,
        settings: Settings,
        executor: Executor,
        *,
        store: Callable[[], Store | None],
    ) -> None:
        self._inventory = inventory
        self._settings = settings
        self._executor = executor
        self._store = store
        self.last_snapshot: InventorySnapshot | None = None
        """The inventory as the last scheduling pass read it."""

    def gpus(self) -> tuple[GpuSnapshot, ...]:
        """The GPUs of the last snapshot (none before the first pass)."""
        return self.last_snapshot.gpus if self.last_snapshot is not None else ()

    def sim_usage(self, running: list[Job] | None = None) -> dict[int, list[tuple[int, float]]]:
        """What simulated GPUs report (see clusterview.sim_usage); the running jobs are
        read from the store when not given (the sampler's thread)."""
        if not self._inventory.spec.simulated:
            return {}
        if running is None:
            store = self._store()
            if store is None:
                return {}
            running = [j for j in store.jobs(active_only=True) if j.state == JobState.RUNNING]
        return sim_usage(self._inventory.spec, running)

    def snapshot(self, running: list[Job]) -> InventorySnapshot:
        """Read the GPUs now (and keep the snapshot as :attr:`last_snapshot`)."""
        snapshot = self._inventory.snapshot(sim_usage=self.sim_usage(running))
        self.last_snapshot = snapshot
        return snapshot

    def cluster_view(self, snapshot: InventorySnapshot, running: list[Job]) -> ClusterView:
        """GPUs as the scheduler sees them: foreign VRAM counted as taken."""
        pids: set[int] = set()
        if not all(g.simulated for g in snapshot.gpus):
            for job in running:
                pids.update(self._executor.pids(job))
        return cluster_from_snapshot(snapshot, self._settings, loradeck_pids=pids)


class Dispatcher:
    """Decides and launches each pass's starts; the engine thread only."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        bus: ev.EventBus,
        *,
        slurm: SlurmExecutor | None,
        store: Callable[[], Store],
        cluster: ClusterReader,
        ledger: UsageLedger,
        finish: Callable[[Job, AttemptEnd, float], None],
        after_start: Callable[[Job], None],
        stopping: threading.Event,
    ) -> None:
        self._settings = settings
        self._executor = executor
        self._bus = bus
        self._slurm = slurm
        self._store = store
        self._cluster = cluster
        self._ledger = ledger
        self._finish = finish
        self._after_start = after_start
        self._stopping = stopping
        self.reasons: dict[int, str] = {}
        """Why each waiting job waits, as of the last pass (written to the store less
        often, see :meth:`_store_reasons`)."""
        self._index: QueueIndex | None = None
        self._indexed: dict[int, Job] = {}
        self._reasons_written_at = 0.0

    def schedule(self, jobs: list[Job], now: float) -> None:
        """Decide what of the active ``jobs`` starts where, and start it."""
        store = self._store()
        if not any(job.state == JobState.PENDING for job in jobs):
            return
        active_ids = {job.id for job in jobs}
        dep_states: dict[int, JobState] = {job.id: job.state for job in jobs}
        for job in jobs:
            for dep in job.deps:
                if dep.job_id not in active_ids and dep.job_id not in dep_states:
                    try:
                        dep_states[dep.job_id] = store.get(dep.job_id).state
                    except LoradeckError:
                        dep_states[dep.job_id] = JobState.CANCELLED
        if self._slurm is not None:
            # Slurm places jobs: loradeck only hands them over, in its policy's order.
            decision = slurm_decision(
                jobs,
                dep_states,
                max_submitted=self._settings.slurm.max_submitted,
                settings=self._settings.scheduler,
                now=now,
                usage=self._ledger.usage,
                history=self._ledger.history,
            )
            memory_note = None
        else:
            running = [job for job in jobs if job.state == JobState.RUNNING]
            decision = schedule(
                SchedulerInput(
                    jobs=self._queue_index(jobs),
                    dep_states=dep_states,
                    cluster=self._cluster.cluster_view(self._cluster.snapshot(running), running),
                    now=now,
                    usage=self._ledger.usage,
                    history=self._ledger.history,
                ),
                self._settings.scheduler,
            )
            memory_note = ram_guard(self._settings.resources.max_system_ram)
        self._apply_dependency_failures(decision, now)
        if memory_note is None and decision.starts and not self._stopping.is_set():
            self._launch(decision.starts, now)
        reasons = dict(decision.reasons)
        if memory_note is not None:
            reasons.update({s.job_id: memory_note for s in decision.starts})
        self._store_reasons(jobs, reasons)

    def _queue_index(self, jobs: list[Job]) -> QueueIndex:
        """The scheduler's pre-ordered queue, updated with only the jobs that changed.

        The store hands back the same Job object while a job is unchanged, so an
        identity check finds the changes without comparing 10,000 jobs field by field.
        """
        if self._index is None:
            self._index = QueueIndex.build(jobs, self._settings.scheduler)
        else:
            changed = [job for job in jobs if self._indexed.get(job.id) is not job]
            current = {job.id for job in jobs}
            removed = [job_id for job_id in self._indexed if job_id not in current]
            if changed or removed:
                self._index = self._index.updated(changed, removed)
        self._indexed = {job.id: job for job in jobs}
        return self._index

    def _apply_dependency_failures(self, decision: Decision, now: float) -> None:
        store = self._store()
        for failure in decision.dependency_failures:

            def apply(current: Job, failure: Any = failure) -> Job:
                if current.state != JobState.PENDING:
                    return current
                if failure.action == "hold":
                    return current.transition(JobState.HELD, reason=failure.reason)
                return current.transition(
                    JobState.CANCELLED,
                    reason=failure.reason,
                    failure_class=FailureClass.DEPENDENCY,
                    ended_at=now,
                )

            job = store.update(failure.job_id, apply)
            if job.state == JobState.HELD:
                self._bus.publish(ev.JobHeld(job_id=job.id, name=job.name, reason=job.reason))
            elif job.state == JobState.CANCELLED:
                self._bus.publish(ev.JobCancelled(job_id=job.id, name=job.name, reason=job.reason))
        if decision.dependency_failures:
            self._bus.publish(ev.QueueChanged())

    def _store_reasons(self, jobs: list[Job], reasons: Mapping[int, str]) -> None:
        """Keep every reason in memory (for an in-process TUI) and write the changed
        ones to the store at most every REASON_WRITE_INTERVAL seconds: reasons are for
        people, and rewriting them on every pass would cost a durable write per pass."""
        self.reasons = dict(reasons)
        now = time.monotonic()
        if now - self._reasons_written_at < REASON_WRITE_INTERVAL:
            return
        self._reasons_written_at = now
        changed = [
            (job.id, reasons[job.id])
            for job in jobs
            if job.state in (JobState.PENDING, JobState.HELD)
            and job.id in reasons
            and reasons[job.id] != job.reason
            and not job.reason.startswith("retry ")
        ][:REASON_WRITES_PER_PASS]
        if not changed:
            return
        store = self._store()
        with store.transaction() as tx:
            for job_id, reason in changed:
                current = tx.get(job_id)
                if current.state in (JobState.PENDING, JobState.HELD):
                    tx.put(current.evolve(reason=reason))

    def _launch(self, starts: Sequence[Start], now: float) -> None:
        """Start a pass's decisions: all marked RUNNING in one durable transaction
        *before* any window opens (so a crash can never run a job twice), then the
        windows, then their handles in one more transaction."""
        store = self._store()
        marked: list[tuple[Job, tuple[int, ...]]] = []
        with store.transaction() as tx:
            for start in starts:
                current = tx.get(start.job_id)
                if current.state != JobState.PENDING:
                    continue
                running = current.transition(
                    JobState.RUNNING,
                    started_at=now,
                    ended_at=None,
                    attempts=current.attempts + 1,
                    gpu_ids=start.gpu_ids,
                    executor_ref=None,
                    reason="",
                    not_before=None,
                    exit_code=None,
                    cancel_requested_at=None,
                    progress=None,
                    log_offset=0,
                )
                tx.put(running)
                marked.append((running, start.gpu_ids))
        refs: dict[int, str] = {}
        outcomes = launch_all(self._executor, marked, extra_env={"LORADECK_PYTHON": sys.executable})
        for (job, _), outcome in zip(marked, outcomes, strict=True):
            if isinstance(outcome, LoradeckError):
                self._finish(job, AttemptEnd(launch_error=outcome.message), now)
            else:
                refs[job.id] = outcome
        if not refs:
            return
        launched: list[Job] = []
        # tmux: lost in a crash of the machine (the line is written, not yet synced), a
        # window is found again by its options. A Slurm job id is kept durably.
        with store.transaction(durable=self._slurm is not None) as tx:
            for job_id, ref in refs.items():
                current = tx.get(job_id)
                if current.state == JobState.RUNNING and current.started_at == now:
                    current = current.evolve(executor_ref=ref)
                    tx.put(current)
                    launched.append(current)
        for job in launched:
            self._bus.publish(
                ev.JobStarted(
                    job_id=job.id, name=job.name, gpu_ids=job.gpu_ids, attempt=job.attempts
                )
            )
            self._after_start(job)
        self._bus.publish(ev.QueueChanged())
