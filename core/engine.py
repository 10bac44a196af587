"""The engine: the one process per home that starts, watches and ends jobs.

It holds the engine lease, watches the store (so submits, cancels and priority changes
from any shell are seen at once) and the job folders (so an exit is seen at once), and
runs one loop thread that does every state change itself:

* a running job whose exit status appeared is concluded (completed, failed, retried);
* a running job whose window vanished without a status is "lost", its processes are
  killed, and it is retried by its policy;
* cancel requests and timeouts start the kill sequence in a worker thread;
* then the scheduler decides what starts where, and the executor launches it.

A job is marked RUNNING (attempt N) durably before its window is opened, and only
PENDING jobs are ever launched, so a crash at any point never runs a job twice: the next
engine finds attempt N's window (adopts it), its exit status (concludes it), or neither
(lost: killed and retried).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psutil

from loradeck.core import events as ev
from loradeck.core.clusterview import cluster_from_snapshot, sim_usage
from loradeck.core.configcopy import read_config_value, update_config_copy
from loradeck.core.errors import LoradeckError
from loradeck.core.eta import batch_eta
from loradeck.core.evaluation.leaderboard import EVALUATION_TAG
from loradeck.core.evaluation.results import read_summary
from loradeck.core.executor import AttemptResult, AttemptStatus, Executor
from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.gpu import GpuInventory, InventorySnapshot
from loradeck.core.home import Home
from loradeck.core.hooks import HookRunner
from loradeck.core.jobmonitor import GpuSampler, JobMonitor
from loradeck.core.lease import EngineLease
from loradeck.core.models import EvalSummary, FailureClass, Job, JobState
from loradeck.core.outcomes import AttemptEnd, Conclusion, conclude
from loradeck.core.scheduler import (
    ClusterView,
    Decision,
    FairShareUsage,
    QueueIndex,
    RuntimeHistory,
    SchedulerInput,
    Start,
    schedule,
)
from loradeck.core.settings import Settings
from loradeck.core.slurmmode import slurm_decision
from loradeck.core.store import Store

log = logging.getLogger(__name__)

#: How many changed pending reasons are written per pass (the rest follow next passes).
REASON_WRITES_PER_PASS = 500
#: Seconds between VRAM guard checks (an NVML snapshot and a process-tree walk per job).
VRAM_CHECK_INTERVAL = 5.0
#: Seconds between writes of changed pending reasons to the store.
REASON_WRITE_INTERVAL = 2.0
OOM_MARKERS = (b"CUDA out of memory", b"OutOfMemoryError", b"CUBLAS_STATUS_ALLOC_FAILED")


@dataclass
class _Stop:
    why: str  # "cancel", "timeout", "lost", "diverged", "stalled", "shutdown"
    done: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


def _with_evaluation(job: Job, *, summary: EvalSummary) -> Job:
    return job.evolve(evaluation=summary)


class Engine:
    """Runs the queue of one home. ``start()`` takes the lease; ``stop()`` gives it back."""

    def __init__(
        self,
        home: Home,
        settings: Settings,
        *,
        executor: Executor,
        inventory: GpuInventory,
        bus: ev.EventBus | None = None,
        clock: Callable[[], float] = time.time,
        liveness_interval: float = 2.0,
    ) -> None:
        self.home = home
        self.settings = settings
        self.executor = executor
        self.slurm = executor if isinstance(executor, SlurmExecutor) else None
        """Set in Slurm mode: Slurm places jobs and enforces their time limits; loradeck
        only hands jobs over (:mod:`loradeck.core.slurmmode`)."""
        self.inventory = inventory
        self.bus = bus or ev.EventBus()
        self.clock = clock
        self.liveness_interval = liveness_interval
        self.lease = EngineLease(home.engine_lock)
        self.store: Store | None = None
        self.reasons: dict[int, str] = {}
        self.last_snapshot: InventorySnapshot | None = None
        self._usage = FairShareUsage.empty(settings.scheduler.fair_share_half_life_hours * 3600)
        self._history = RuntimeHistory.empty()
        self._seen: set[int] = set()
        self._stops: dict[int, _Stop] = {}
        self._stops_lock = threading.Lock()
        self._close_at: dict[int, tuple[float, Job]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self.passes = 0
        self._last_failure: str | None = None
        self.monitor: JobMonitor | None = None
        self.sampler: GpuSampler | None = None
        self._vram_checked_at = 0.0
        self._vram_warned: set[tuple[int, int]] = set()
        self._index: QueueIndex | None = None
        self._exit_seen = threading.Event()
        self._kick = threading.Event()
        self._kick.set()
        self._polled_at = 0.0
        self._reasons_written_at = 0.0
        self._indexed: dict[int, Job] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Take the lease (or raise EngineLockedError), adopt running jobs, start the loop."""
        self.lease.acquire()
        try:
            self.store = Store(self.home.root)
            self._unsubscribe.append(self.bus.subscribe(ev.EventLog(self.home.events_file)))
            hooks = HookRunner(self.settings.hooks, on_error=self._hook_failed)
            self._unsubscribe.append(self.bus.subscribe(hooks))
            self.monitor = JobMonitor(
                self.store,
                self.bus,
                self.settings.monitoring,
                user_regexes=tuple(self.settings.parsers),
                on_diverged=self._diverged,
                clock=self.clock,
            )
            self.monitor.start()
            self.sampler = GpuSampler(
                self.inventory,
                self.bus,
                interval=self.settings.monitoring.gpu_sample_interval,
                sim_usage=self._sim_usage,
            )
            self.sampler.start()
            self._bootstrap()
        except BaseException:
            self._stop_monitoring()
            self.lease.release()
            raise
        for target, name in ((self._loop, "engine-loop"), (self._watch, "engine-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, cancel_running: bool = False, timeout: float = 30.0) -> None:
        """Stop scheduling. Running jobs keep running unless ``cancel_running``."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if cancel_running and self.store is not None:
            self._cancel_all_running()
        self._stop_monitoring()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.store is not None:
            self.store.close()
        self.lease.release()

    def _stop_monitoring(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None

    def eta(self, jobs: Sequence[Job]) -> float | None:
        """Seconds until every active job of ``jobs`` has ended (see core.eta)."""
        snapshot = self.last_snapshot or self.inventory.snapshot()
        cluster = cluster_from_snapshot(snapshot, self.settings)
        return batch_eta(jobs, cluster, self.settings.scheduler, self._history, self.clock())

    def wake(self) -> None:
        """Ask for a full pass now (after a change the watcher cannot see)."""
        self._kick.set()
        self._wake.set()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ bootstrap

    def _bootstrap(self) -> None:
        store = self._require_store()
        half_life = self.settings.scheduler.fair_share_half_life_hours * 3600
        for job in store.jobs():
            self._seen.add(job.id)
            if job.state.is_terminal and job.started_at and job.ended_at:
                runtime = job.ended_at - job.started_at
                self._usage = self._usage.charge(
                    job.user, job.spec.project, runtime * max(job.gpus, 0), job.ended_at, half_life
                )
                if job.state == JobState.COMPLETED:
                    self._history = self._history.record_job(job.spec, runtime)
        self._refresh_executor(store.jobs(active_only=True))
        for job in store.jobs(active_only=True):
            if job.state == JobState.RUNNING:
                status = self.executor.poll(job)
                if status.status == AttemptStatus.RUNNING:
                    self._publish(ev.JobAdopted(job_id=job.id, name=job.name))
                    self.after_start(job)

    # ------------------------------------------------------------------ threads

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
                self._last_failure = None
            except Exception as err:  # one bad pass must not kill the engine
                log.exception("engine pass failed")
                message = f"engine pass failed: {err}"
                # Say it once, not every pass (an unreachable slurmctld fails them all).
                if message != self._last_failure:
                    self._publish(ev.EngineMessage(message=message, severity="error"))
                self._last_failure = message
            if not self._wake.wait(self._sleep_for()):
                self._kick.set()  # a deadline or the periodic pass is due
            self._wake.clear()

    def _watch(self) -> None:
        import watchfiles

        store = self._require_store()
        paths = [*store.watch_paths, self.home.jobs_dir]
        self.home.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

        jobs_dir = str(self.home.jobs_dir) + os.sep

        def relevant(change: watchfiles.Change, path: str) -> bool:
            # Every store change matters; in job folders only a recorded exit status does
            # (logs are the monitor's business, and they change many times a second).
            if path.startswith(jobs_dir):
                return os.path.basename(path).startswith("exit_status")
            return True

        try:
            for _changes in watchfiles.watch(
                *paths,
                watch_filter=relevant,
                stop_event=self._stopping,
                debounce=200,
                step=10,
                rust_timeout=1000,
                yield_on_timeout=False,
                raise_interrupt=False,
            ):
                if any(path.startswith(jobs_dir) for _change, path in _changes):
                    self._exit_seen.set()
                self._wake.set()
        except Exception:  # inotify unavailable: the periodic pass still runs
            log.exception("file watching failed; falling back to periodic passes")

    def _sleep_for(self) -> float:
        now = self.clock()
        interval = self.settings.scheduler.check_interval
        deadlines: list[float] = []
        store = self.store
        if store is not None:
            for job in store.jobs(active_only=True):
                if job.state == JobState.RUNNING:
                    interval = min(interval, self.liveness_interval)
                    if job.spec.timeout and job.started_at and self.slurm is None:
                        deadlines.append(job.started_at + job.spec.timeout)
                elif job.state == JobState.PENDING and job.not_before:
                    deadlines.append(job.not_before)
        deadlines.extend(at for at, _ in self._close_at.values())
        soonest = min((d - now for d in deadlines), default=interval)
        return max(0.01, min(interval, soonest))

    # ------------------------------------------------------------------ the pass

    def tick(self) -> None:
        """One pass: conclude what ended, act on requests, schedule. Engine thread only."""
        store = self._require_store()
        changed = store.refresh()
        if not (
            changed
            or self._kick.is_set()
            or self._exit_seen.is_set()
            or time.monotonic() - self._polled_at >= self.liveness_interval
        ):
            # Woken by this engine's own commits (progress saves): nothing to do.
            return
        self._kick.clear()
        self.passes += 1
        now = self.clock()
        jobs = store.jobs(active_only=True)
        self._note_new(jobs)
        self._conclude_stops(now)
        poll = (
            self._exit_seen.is_set() or time.monotonic() - self._polled_at >= self.liveness_interval
        )
        if poll:
            self._exit_seen.clear()
            self._polled_at = time.monotonic()
            self._refresh_executor(jobs)
        for job in jobs:
            if job.state == JobState.RUNNING:
                self._check_running(job, now, poll=poll)
        running = [job for job in jobs if job.state == JobState.RUNNING]
        if running:
            self._watchdog(now)
            self._vram_guard(running, now)
        self._close_expired_windows(now)
        if not self._stopping.is_set():
            self._schedule(store.jobs(active_only=True), now)

    def _note_new(self, jobs: Iterable[Job]) -> None:
        fresh = [job for job in jobs if job.id not in self._seen]
        for job in fresh:
            self._seen.add(job.id)
            self._publish(ev.JobSubmitted(job_id=job.id, name=job.name))
        if fresh:
            self._publish(ev.QueueChanged())

    def _check_running(self, job: Job, now: float, *, poll: bool) -> None:
        with self._stops_lock:
            if job.id in self._stops:
                return
        if not poll:
            # Only what the store says: requests and the clock. The executor is asked at
            # most every liveness interval, or when an exit status appeared.
            if job.cancel_requested_at is not None:
                self._begin_stop(job, "cancel")
            elif self._past_timeout(job, now):
                self._begin_stop(job, "timeout")
            return
        result = self.executor.poll(job)
        if self.slurm is not None:
            job = self._note_slurm_state(job, now)
        if result.status == AttemptStatus.EXITED:
            if result.dependency_never_satisfied:
                self._give_back(job, result)
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
                oom=result.oom or (result.exit_code != 0 and self._log_shows_oom(job)),
                launch_error=result.launch_error,
                detail=result.reason if by_cluster else None,
            )
            self._finish(job, end, now)
        elif result.status == AttemptStatus.LOST:
            self._begin_stop(job, "cancel" if job.cancel_requested_at else "lost")
        elif job.cancel_requested_at is not None:
            self._begin_stop(job, "cancel")
        elif self._past_timeout(job, now):
            self._begin_stop(job, "timeout")

    def _past_timeout(self, job: Job, now: float) -> bool:
        """Whether the attempt ran past ``timeout``. Not with Slurm: it enforces
        ``--time`` itself, from when it started the job, not from the hand-over."""
        timeout = job.spec.timeout
        return bool(
            self.slurm is None and timeout and job.started_at and now - job.started_at >= timeout
        )

    def _refresh_executor(self, jobs: Iterable[Job]) -> None:
        """Slurm mode: one squeue for every running job, before they are polled."""
        if self.slurm is not None:
            self.slurm.refresh(job for job in jobs if job.state == JobState.RUNNING)

    def _note_slurm_state(self, job: Job, now: float) -> Job:
        """Keep Slurm's view of a handed-over job: its reason ("slurm: PENDING
        (Resources)") and, once Slurm has started it, when it really started (so that
        runtimes do not count the wait in Slurm's queue). The job as stored."""
        assert self.slurm is not None
        row = self.slurm.slurm_job(job)
        if row is None:
            return job
        if row.state == "PENDING" and self.monitor is not None:
            self.monitor.forgive_stall(job.id, now)  # waiting in Slurm's queue is no stall
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

        stored = self._require_store().update(job.id, apply)
        self._publish(ev.QueueChanged())
        return stored

    def _give_back(self, job: Job, result: AttemptResult) -> None:
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

        self._require_store().update(job.id, apply)
        self._publish(ev.QueueChanged())

    def _diverged(self, job: Job, step: int | None) -> None:
        """The monitor saw a non-finite loss (called on the monitor's thread)."""
        where = f" at step {step}" if step is not None else ""
        if self.settings.monitoring.on_nan == "warn":
            self._publish(
                ev.JobWarning(job_id=job.id, name=job.name, message=f"non-finite loss{where}")
            )
            return
        self._begin_stop(job, "diverged", step=step)
        self.wake()

    def _watchdog(self, now: float) -> None:
        """Stalled jobs: warn, restart (a retry by policy) or kill, per settings."""
        if self.monitor is None:
            return
        action = self.settings.monitoring.stall_action
        for job, idle in self.monitor.stalled(now):
            message = f"no progress for {idle / 60:.0f} min"
            if action == "warn":
                self._publish(ev.JobWarning(job_id=job.id, name=job.name, message=message))
                self.monitor.forgive_stall(job.id, now)
            else:
                self._publish(
                    ev.JobWarning(job_id=job.id, name=job.name, message=f"{message}; {action}")
                )
                self._begin_stop(job, "stalled", no_retry=action == "kill")

    def _vram_guard(self, running: list[Job], now: float) -> None:
        """A job using more VRAM than it declared (plus a margin) on a GPU it shares."""
        mode = self.settings.monitoring.vram_guard
        if mode == "off" or now - self._vram_checked_at < VRAM_CHECK_INTERVAL:
            return
        self._vram_checked_at = now
        declared = [j for j in running if j.spec.vram_gb is not None and j.gpu_ids]
        if not declared:
            return
        snapshot = self.inventory.snapshot()
        if all(g.simulated for g in snapshot.gpus):
            return
        sharing: dict[int, int] = {}
        for job in running:
            for gpu in job.gpu_ids:
                sharing[gpu] = sharing.get(gpu, 0) + 1
        margin = self.settings.monitoring.vram_guard_margin_gb
        by_index = {g.index: g for g in snapshot.gpus}
        for job in declared:
            pids = set(self.executor.pids(job))
            for gpu_index in job.gpu_ids:
                found = by_index.get(gpu_index)
                if found is None or sharing.get(gpu_index, 0) < 2:
                    continue
                used = sum(p.used_gb for p in found.processes if p.pid in pids)
                limit = (job.spec.vram_gb or 0.0) + margin
                if used <= limit:
                    continue
                message = (
                    f"uses {used:.1f} GiB on shared GPU {gpu_index}, "
                    f"declared {job.spec.vram_gb:g} (+{margin:g} margin)"
                )
                if mode == "kill":
                    self._publish(
                        ev.JobWarning(job_id=job.id, name=job.name, message=message + "; killed")
                    )
                    self._begin_stop(job, "vram", no_retry=True)
                elif (job.id, job.attempts) not in self._vram_warned:
                    self._vram_warned.add((job.id, job.attempts))
                    self._publish(ev.JobWarning(job_id=job.id, name=job.name, message=message))

    # ------------------------------------------------------------------ stopping

    def _begin_stop(self, job: Job, why: str, **detail: Any) -> None:
        with self._stops_lock:
            if job.id in self._stops:
                return
            entry = _Stop(why, detail=dict(detail))
            self._stops[job.id] = entry
        grace = self.settings.executor.kill_grace or 10.0

        def work() -> None:
            try:
                self.executor.stop(job, grace=grace)
            except Exception:
                log.exception("stopping job %s failed", job.id)
            finally:
                with self._stops_lock:
                    entry.done = True
                self.wake()

        threading.Thread(target=work, name=f"stop-{job.id}", daemon=True).start()

    def _conclude_stops(self, now: float) -> None:
        store = self._require_store()
        with self._stops_lock:
            finished = [(jid, s) for jid, s in self._stops.items() if s.done]
            for jid, _ in finished:
                del self._stops[jid]
        for job_id, entry in finished:
            job = store.get(job_id)
            if job.state != JobState.RUNNING:
                continue
            end = AttemptEnd(
                cancelled=entry.why == "cancel",
                timed_out=entry.why == "timeout",
                lost=entry.why == "lost",
                diverged=entry.why == "diverged",
                diverged_step=entry.detail.get("step"),
                stalled=entry.why == "stalled",
                vram_exceeded=entry.why == "vram",
                no_retry=bool(entry.detail.get("no_retry")),
            )
            self._finish(job, end, now)

    def _cancel_all_running(self) -> None:
        store = self._require_store()
        grace = self.settings.executor.kill_grace or 10.0
        now = self.clock()
        for job in store.jobs(active_only=True):
            if job.state == JobState.RUNNING:
                self.executor.stop(job, grace=grace)
                self._finish(job, AttemptEnd(cancelled=True), now)

    # ------------------------------------------------------------------ conclusions

    def _finish(self, job: Job, end: AttemptEnd, now: float) -> None:
        store = self._require_store()
        if self.monitor is not None:
            # Read the rest of the log and save the last progress while still RUNNING.
            self.monitor.unwatch(job)
        biggest = max((g.memory_total_gb for g in self._gpus()), default=None)
        outcome: list[Conclusion] = []

        def apply(current: Job) -> Job:
            if current.state != JobState.RUNNING or current.attempts != job.attempts:
                return current
            result = conclude(
                current,
                end,
                now,
                on_nan=self.settings.monitoring.on_nan,
                nan_lr_scale=self.settings.monitoring.nan_lr_scale,
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
            self._edit_config(stored, result.config_edits)
        self._account(job, stored, now)
        self._announce(stored, result)
        if stored.state == JobState.COMPLETED and self.settings.executor.close_on_success:
            self._close_window(stored)
        elif stored.executor_ref:
            delay = self.settings.executor.close_window_after or 3600.0
            self._close_at[stored.id] = (now + delay, stored)

    def _record_evaluation(self, evaluation_job: Job) -> None:
        """Put the evaluation's summary on the training job it scored."""
        store = self._require_store()
        for dep in evaluation_job.deps:
            try:
                trained = store.get(dep.job_id)
            except LoradeckError:
                continue
            summary = read_summary(trained.job_dir)
            if summary is not None:
                store.update(trained.id, partial(_with_evaluation, summary=summary))
                self._publish(ev.QueueChanged())

    def after_start(self, job: Job) -> None:
        """Follow the new (or adopted) attempt's log."""
        if self.monitor is not None:
            self.monitor.watch(job)

    def _announce(self, job: Job, result: Conclusion) -> None:
        if result.retrying:
            self._publish(
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
            self._publish(ev.JobCompleted(job_id=job.id, name=job.name, runtime_s=runtime))
        elif job.state == JobState.CANCELLED:
            self._publish(ev.JobCancelled(job_id=job.id, name=job.name, reason=job.reason))
        else:
            self._publish(
                ev.JobFailed(
                    job_id=job.id,
                    name=job.name,
                    reason=job.reason,
                    failure_class=job.failure_class.value if job.failure_class else "",
                    exit_code=job.exit_code,
                    state=job.state.value,
                )
            )
        self._publish(ev.QueueChanged())

    def _account(self, before: Job, after: Job, now: float) -> None:
        if before.started_at is None:
            return
        runtime = max(0.0, now - before.started_at)
        half_life = self.settings.scheduler.fair_share_half_life_hours * 3600
        self._usage = self._usage.charge(
            before.user, before.spec.project, runtime * max(before.gpus, 0), now, half_life
        )
        if after.state == JobState.COMPLETED:
            self._history = self._history.record_job(after.spec, runtime)

    def _edit_config(self, job: Job, edits: Mapping[str, float]) -> None:
        assert job.config_copy is not None
        preset = self.settings.trainer(job.spec.trainer) if job.spec.trainer else None
        keys = {
            "batch_size": preset.batch_size_key if preset else "train_batch_size",
            "grad_accum": preset.grad_accum_key if preset else "gradient_accumulation_steps",
            "lr": preset.lr_key if preset else "learning_rate",
        }
        values: dict[str, Any] = {}
        try:
            for what, factor in edits.items():
                key = keys[what]
                current = read_config_value(job.config_copy, key)
                if current is None and what == "grad_accum":
                    current = 1
                if not isinstance(current, int | float) or isinstance(current, bool):
                    continue
                if isinstance(current, int):
                    values[key] = max(1, round(current * factor))
                else:
                    values[key] = current * factor
            if values:
                update_config_copy(job.config_copy, values)
        except LoradeckError as err:
            self._publish(
                ev.JobWarning(
                    job_id=job.id, name=job.name, message=f"could not edit config copy: {err}"
                )
            )

    def _log_shows_oom(self, job: Job) -> bool:
        try:
            with job.log_file.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(0, size - 65536))
                tail = handle.read()
        except OSError:
            return False
        return any(marker in tail for marker in OOM_MARKERS)

    # ------------------------------------------------------------------ windows

    def _close_expired_windows(self, now: float) -> None:
        for job_id, (deadline, job) in list(self._close_at.items()):
            if deadline <= now:
                del self._close_at[job_id]
                self._close_window(job)

    def _close_window(self, job: Job) -> None:
        try:
            self.executor.close_window(job)
        except LoradeckError:
            log.debug("closing the window of job %s failed", job.id, exc_info=True)

    # ------------------------------------------------------------------ scheduling

    def _gpus(self) -> tuple[Any, ...]:
        return self.last_snapshot.gpus if self.last_snapshot is not None else ()

    def _sim_usage(self, running: list[Job] | None = None) -> dict[int, list[tuple[int, float]]]:
        """What simulated GPUs report (see clusterview.sim_usage); the running jobs are
        read from the store when not given (the sampler's thread)."""
        if not self.inventory.spec.simulated:
            return {}
        if running is None:
            store = self.store
            if store is None:
                return {}
            running = [j for j in store.jobs(active_only=True) if j.state == JobState.RUNNING]
        return sim_usage(self.inventory.spec, running)

    def _snapshot(self, running: list[Job]) -> InventorySnapshot:
        snapshot = self.inventory.snapshot(sim_usage=self._sim_usage(running))
        self.last_snapshot = snapshot
        return snapshot

    def cluster_view(self, snapshot: InventorySnapshot, running: list[Job]) -> ClusterView:
        """GPUs as the scheduler sees them: foreign VRAM counted as taken."""
        pids: set[int] = set()
        if not all(g.simulated for g in snapshot.gpus):
            for job in running:
                pids.update(self.executor.pids(job))
        return cluster_from_snapshot(snapshot, self.settings, loradeck_pids=pids)

    def _schedule(self, jobs: list[Job], now: float) -> None:
        store = self._require_store()
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
        if self.slurm is not None:
            # Slurm places jobs: loradeck only hands them over, in its policy's order.
            decision = slurm_decision(
                jobs,
                dep_states,
                max_submitted=self.settings.slurm.max_submitted,
                settings=self.settings.scheduler,
                now=now,
                usage=self._usage,
                history=self._history,
            )
            memory_note = None
        else:
            running = [job for job in jobs if job.state == JobState.RUNNING]
            decision = schedule(
                SchedulerInput(
                    jobs=self._queue_index(jobs),
                    dep_states=dep_states,
                    cluster=self.cluster_view(self._snapshot(running), running),
                    now=now,
                    usage=self._usage,
                    history=self._history,
                ),
                self.settings.scheduler,
            )
            memory_note = self._ram_guard()
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
            self._index = QueueIndex.build(jobs, self.settings.scheduler)
        else:
            changed = [job for job in jobs if self._indexed.get(job.id) is not job]
            current = {job.id for job in jobs}
            removed = [job_id for job_id in self._indexed if job_id not in current]
            if changed or removed:
                self._index = self._index.updated(changed, removed)
        self._indexed = {job.id: job for job in jobs}
        return self._index

    def _ram_guard(self) -> str | None:
        limit = self.settings.resources.max_system_ram
        if limit is None:
            return None
        used_gb = psutil.virtual_memory().used / 2**30
        if used_gb > limit:
            return f"waiting: system RAM in use {used_gb:.1f} GiB is above the {limit:g} GiB limit"
        return None

    def _apply_dependency_failures(self, decision: Decision, now: float) -> None:
        store = self._require_store()
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
                self._publish(ev.JobHeld(job_id=job.id, name=job.name, reason=job.reason))
            elif job.state == JobState.CANCELLED:
                self._publish(ev.JobCancelled(job_id=job.id, name=job.name, reason=job.reason))
        if decision.dependency_failures:
            self._publish(ev.QueueChanged())

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
        store = self._require_store()
        with store.transaction() as tx:
            for job_id, reason in changed:
                current = tx.get(job_id)
                if current.state in (JobState.PENDING, JobState.HELD):
                    tx.put(current.evolve(reason=reason))

    def _launch(self, starts: Sequence[Start], now: float) -> None:
        """Start a pass's decisions: all marked RUNNING in one durable transaction
        *before* any window opens (so a crash can never run a job twice), then the
        windows, then their handles in one more transaction."""
        store = self._require_store()
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
        for job, gpu_ids in marked:
            try:
                refs[job.id] = self.executor.launch(
                    job, gpu_ids, extra_env={"LORADECK_PYTHON": sys.executable}
                )
            except LoradeckError as err:
                self._finish(job, AttemptEnd(launch_error=err.message), now)
        if not refs:
            return
        launched: list[Job] = []
        with store.transaction() as tx:
            for job_id, ref in refs.items():
                current = tx.get(job_id)
                if current.state == JobState.RUNNING and current.started_at == now:
                    current = current.evolve(executor_ref=ref)
                    tx.put(current)
                    launched.append(current)
        for job in launched:
            self._publish(
                ev.JobStarted(
                    job_id=job.id, name=job.name, gpu_ids=job.gpu_ids, attempt=job.attempts
                )
            )
            self.after_start(job)
        self._publish(ev.QueueChanged())

    # ------------------------------------------------------------------ helpers

    def _publish(self, event: ev.Event) -> None:
        self.bus.publish(event)

    def _hook_failed(self, message: str) -> None:
        self._publish(ev.EngineMessage(message=message, severity="warning"))

    def _require_store(self) -> Store:
        if self.store is None:
            raise LoradeckError("the engine is not started", title="engine")
        return self.store
