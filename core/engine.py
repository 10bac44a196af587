"""The engine: the one process per home that starts, watches and ends jobs.

It holds the engine lease, watches the store (so submits, cancels and priority changes
from any shell are seen at once) and the job folders (so an exit is seen at once), and
runs one loop thread that does every state change itself (:meth:`Engine.tick`):

* a running job whose exit status appeared is concluded (completed, failed, retried);
* a running job whose window vanished without a status is "lost", its processes are
  killed, and it is retried by its policy;
* cancel requests and timeouts start the kill sequence in a worker thread;
* then the scheduler decides what starts where, and the executor launches it.

A job is marked RUNNING (attempt N) durably before its window is opened, and only
PENDING jobs are ever launched, so a crash at any point never runs a job twice: the next
engine finds attempt N's window (adopts it), its exit status (concludes it), or neither
(lost: killed and retried).

This module holds the lease, the threads, file watching and the pass; the work of a
pass is done by parts the engine builds and ties together:

* :mod:`loradeck.core.attempts`: what each running attempt is doing (polls, cancel
  requests, timeouts, Slurm's view of it);
* :mod:`loradeck.core.stops`: kill sequences in worker threads, and why each ran;
* :mod:`loradeck.core.conclusions`: ending attempts: the stored conclusion, its events,
  fair-share accounting, window closing;
* :mod:`loradeck.core.dispatch`: the GPUs as the scheduler sees them, scheduling, and
  crash-safe launching;
* :mod:`loradeck.core.guards`: the stall watchdog, divergence, the VRAM and RAM guards,
  out-of-memory handling.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from loradeck.core import events as ev
from loradeck.core.attempts import AttemptWatcher
from loradeck.core.clusterview import cluster_from_snapshot
from loradeck.core.conclusions import Concluder, UsageLedger
from loradeck.core.dispatch import ClusterReader, Dispatcher
from loradeck.core.errors import LoradeckError
from loradeck.core.eta import batch_eta
from loradeck.core.executor import AttemptStatus, Executor
from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.gpu import GpuInventory, InventorySnapshot
from loradeck.core.guards import Guards
from loradeck.core.home import Home
from loradeck.core.hooks import HookRunner
from loradeck.core.jobmonitor import GpuSampler, JobMonitor
from loradeck.core.lease import EngineLease
from loradeck.core.models import Job, JobState
from loradeck.core.scheduler import ClusterView
from loradeck.core.settings import Settings
from loradeck.core.stops import StopTracker
from loradeck.core.store import Store

log = logging.getLogger(__name__)


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
        self.passes = 0
        self.monitor: JobMonitor | None = None
        self.sampler: GpuSampler | None = None
        self._seen: set[int] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._last_failure: str | None = None
        self._exit_seen = threading.Event()
        self._kick = threading.Event()
        self._kick.set()
        self._polled_at = 0.0

        def monitor() -> JobMonitor | None:
            return self.monitor

        self._ledger = UsageLedger(settings.scheduler)
        self._cluster = ClusterReader(inventory, settings, executor, store=lambda: self.store)
        self._stops = StopTracker(executor, settings, on_done=self.wake)
        self._guards = Guards(
            settings, inventory, executor, self.bus, stops=self._stops, wake=self.wake
        )
        self._conclusions = Concluder(
            settings,
            executor,
            self.bus,
            store=self._require_store,
            monitor=monitor,
            gpus=self._cluster.gpus,
            ledger=self._ledger,
        )
        self._attempts = AttemptWatcher(
            executor,
            self.bus,
            slurm=self.slurm,
            store=self._require_store,
            monitor=monitor,
            stops=self._stops,
            conclusions=self._conclusions,
        )
        self._dispatcher = Dispatcher(
            settings,
            executor,
            self.bus,
            slurm=self.slurm,
            store=self._require_store,
            cluster=self._cluster,
            ledger=self._ledger,
            finish=self._conclusions.finish,
            after_start=self.after_start,
            stopping=self._stopping,
        )

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
                on_diverged=self._guards.diverged,
                clock=self.clock,
            )
            self.monitor.start()
            self.sampler = GpuSampler(
                self.inventory,
                self.bus,
                interval=self.settings.monitoring.gpu_sample_interval,
                sim_usage=self._cluster.sim_usage,
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
            self._conclusions.cancel_all_running(self.clock())
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
        return batch_eta(jobs, cluster, self.settings.scheduler, self._ledger.history, self.clock())

    def wake(self) -> None:
        """Ask for a full pass now (after a change the watcher cannot see)."""
        self._kick.set()
        self._wake.set()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def reasons(self) -> dict[int, str]:
        """Why each waiting job waits, as of the last pass (fresher than the store's)."""
        return self._dispatcher.reasons

    @property
    def last_snapshot(self) -> InventorySnapshot | None:
        """The GPU inventory as the last scheduling pass read it."""
        return self._cluster.last_snapshot

    def cluster_view(self, snapshot: InventorySnapshot, running: list[Job]) -> ClusterView:
        """GPUs as the scheduler sees them: foreign VRAM counted as taken."""
        return self._cluster.cluster_view(snapshot, running)

    def after_start(self, job: Job) -> None:
        """Follow the new (or adopted) attempt's log."""
        if self.monitor is not None:
            self.monitor.watch(job)

    # ------------------------------------------------------------------ bootstrap

    def _bootstrap(self) -> None:
        store = self._require_store()
        for job in store.jobs():
            self._seen.add(job.id)
            self._ledger.replay(job)
        self._attempts.refresh(store.jobs(active_only=True))
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

        # A change made before the watch is registered is not reported: the first quiet
        # second (an empty yield, after registration) wakes one pass to catch it.
        watching = False
        try:
            for _changes in watchfiles.watch(
                *paths,
                watch_filter=relevant,
                stop_event=self._stopping,
                debounce=200,
                step=10,
                rust_timeout=1000,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                if not _changes:
                    if not watching:
                        watching = True
                        self._wake.set()
                    continue
                watching = True
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
        deadlines.extend(self._conclusions.window_deadlines())
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
        self._conclusions.finish_stopped(self._stops.take_finished(), now)
        poll = (
            self._exit_seen.is_set() or time.monotonic() - self._polled_at >= self.liveness_interval
        )
        if poll:
            self._exit_seen.clear()
            self._polled_at = time.monotonic()
            self._attempts.refresh(jobs)
        for job in jobs:
            if job.state == JobState.RUNNING:
                self._attempts.check(job, now, poll=poll)
        running = [job for job in jobs if job.state == JobState.RUNNING]
        if running:
            self._guards.watchdog(self.monitor, now)
            self._guards.vram(running, now)
        self._conclusions.close_expired_windows(now)
        if not self._stopping.is_set():
            self._dispatcher.schedule(store.jobs(active_only=True), now)

    def _note_new(self, jobs: Iterable[Job]) -> None:
        fresh = [job for job in jobs if job.id not in self._seen]
        for job in fresh:
            self._seen.add(job.id)
            self._publish(ev.JobSubmitted(job_id=job.id, name=job.name))
        if fresh:
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
