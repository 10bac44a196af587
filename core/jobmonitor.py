"""Watching running jobs: their logs become progress, and the machine is sampled.

:class:`JobMonitor` follows each running attempt's log (one inotify follower thread
for all of them) through a :class:`~loradeck.core.monitor.LogPipeline`, publishes
``job_progress`` and ``checkpoint_saved`` events as lines arrive, and writes the summary
(step, loss, ETA...) and the parse offset to the store at most every two seconds per job,
so a restarted engine resumes the log where this one stopped.

It also raises what the engine must act on: a non-finite loss (divergence) and a job
whose progress stalled. :class:`GpuSampler` reads the GPUs every
``monitoring.gpu_sample_interval`` seconds into ring buffers, for the TUI and the VRAM
guard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from loradeck.core import events as ev
from loradeck.core.errors import LoradeckError
from loradeck.core.executor.logtee import tail_offset
from loradeck.core.gpu import GpuInventory, GpuRing, GpuSample
from loradeck.core.models import FailureClass, Job, JobState
from loradeck.core.monitor import LogEvent, LogFollower, LogPipeline, make_parser
from loradeck.core.settings import MonitoringSettings, UserRegex
from loradeck.core.store import Store

log = logging.getLogger(__name__)

#: Seconds between durable progress writes for one job (other processes see progress
#: this stale at most; the in-process TUI gets every event at once).
STORE_INTERVAL = 2.0
#: Seconds between job_progress events for one job (the TUI shows ~5 frames a second).
EVENT_INTERVAL = 0.2


@dataclass
class _Watched:
    job: Job
    pipeline: LogPipeline
    stored_at: float = 0.0
    evented_at: float = 0.0
    dirty: bool = False
    last_step: int | None = None
    last_advance: float = 0.0
    diverged_reported: bool = False


class JobMonitor:
    """Follows the logs of running jobs. Thread-safe; callbacks run on its threads."""

    def __init__(
        self,
        store: Store,
        bus: ev.EventBus,
        settings: MonitoringSettings,
        *,
        user_regexes: tuple[UserRegex, ...] = (),
        on_diverged: Callable[[Job, int | None], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self.user_regexes = user_regexes
        self.on_diverged = on_diverged
        self.clock = clock
        self._lock = threading.Lock()
        self._watched: dict[int, _Watched] = {}
        self._by_path: dict[str, int] = {}
        self._follower = LogFollower(
            self._on_data, on_reset=self._on_reset, reopen_offset=tail_offset
        )
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick_loop, name="monitor-timer", daemon=True)

    def start(self) -> None:
        self._follower.start()
        self._timer.start()

    def stop(self) -> None:
        self._stop.set()
        self._follower.stop()
        if self._timer.is_alive():
            self._timer.join(5)
        with self._lock:
            watched = list(self._watched.values())
        for item in watched:
            self._save(item, force=True)
            item.pipeline.close()

    # ------------------------------------------------------------------ jobs

    def watch(self, job: Job) -> None:
        """Follow ``job``'s current attempt from its saved offset."""
        try:
            parser = make_parser(job.spec.parser, user_regexes=self.user_regexes, job_name=job.name)
        except LoradeckError as err:
            self.bus.publish(
                ev.JobWarning(job_id=job.id, name=job.name, message=f"no log parsing: {err}")
            )
            return
        offset = job.log_offset
        pipeline = LogPipeline(
            parser,
            metrics_path=job.job_dir / "metrics.jsonl",
            on_event=partial(self._on_log_event, job.id),
            start_offset=offset,
            clock=self.clock,
        )
        now = self.clock()
        with self._lock:
            self._watched[job.id] = _Watched(job, pipeline, last_advance=now)
            self._by_path[str(job.log_file)] = job.id
        self._follower.follow(job.log_file, offset)

    def unwatch(self, job: Job) -> None:
        """Read what is left of the log, save the summary, stop following."""
        with self._lock:
            item = self._watched.get(job.id)
        if item is None:
            return
        self._follower.unfollow(job.log_file)
        item.pipeline.finish()
        self._save(item, force=True)
        item.pipeline.close()
        with self._lock:
            self._watched.pop(job.id, None)
            self._by_path.pop(str(job.log_file), None)

    def series(self, job_id: int) -> dict[str, list[tuple[float, float]]]:
        """The in-memory loss/lr/val_loss series of a followed job (x = step)."""
        with self._lock:
            item = self._watched.get(job_id)
        if item is None:
            return {}
        return {name: s.points() for name, s in item.pipeline.series.items()}

    def stalled(self, now: float) -> list[tuple[Job, float]]:
        """Followed jobs whose step has not advanced for their stall limit."""
        out: list[tuple[Job, float]] = []
        with self._lock:
            items = list(self._watched.values())
        for item in items:
            limit = item.job.spec.stall_minutes or self.settings.stall_minutes
            if limit and now - item.last_advance >= limit * 60:
                out.append((item.job, now - item.last_advance))
        return out

    def forgive_stall(self, job_id: int, now: float) -> None:
        """Restart the stall clock (after a warning, so it warns once per period)."""
        with self._lock:
            item = self._watched.get(job_id)
            if item is not None:
                item.last_advance = now

    # ------------------------------------------------------------------ callbacks

    def _on_data(self, path: object, data: bytes) -> None:
        with self._lock:
            job_id = self._by_path.get(str(path))
            item = self._watched.get(job_id) if job_id is not None else None
        if item is None:
            return
        item.pipeline.feed(data)
        self._after_feed(item)

    def _on_reset(self, path: object, why: object) -> None:
        with self._lock:
            job_id = self._by_path.get(str(path))
            item = self._watched.get(job_id) if job_id is not None else None
        if item is not None:
            item.pipeline.reset()

    def _after_feed(self, item: _Watched) -> None:
        now = self.clock()
        state = item.pipeline.state
        step = state.step
        if step is not None and step != item.last_step:
            item.last_step = step
            item.last_advance = now
            item.dirty = True
        if state.failure_class == FailureClass.DIVERGED and not item.diverged_reported:
            item.diverged_reported = True
            self.on_diverged(item.job, state.divergence.step if state.divergence else None)
        if item.dirty and now - item.evented_at >= EVENT_INTERVAL:
            item.evented_at = now
            metrics = state.metrics  # not state.progress: no validated model per event
            self.bus.publish(
                ev.JobProgress(
                    job_id=item.job.id,
                    name=item.job.name,
                    step=metrics.step,
                    total_steps=metrics.total_steps,
                    epoch=metrics.epoch,
                    loss=metrics.loss,
                    lr=metrics.lr,
                    eta_s=metrics.eta_s,
                )
            )
        self._save(item)

    def _on_log_event(self, job_id: int, event: LogEvent) -> None:
        with self._lock:
            item = self._watched.get(job_id)
        if item is None:
            return
        item.dirty = True
        if event.kind == "checkpoint_saved" and event.path:
            self.bus.publish(
                ev.CheckpointSaved(
                    job_id=job_id, name=item.job.name, path=event.path, step=event.step
                )
            )

    def _save(self, item: _Watched, *, force: bool = False) -> None:
        """Write the summary and the parse offset (durably, at most every STORE_INTERVAL)."""
        now = self.clock()
        if not force and (not item.dirty or now - item.stored_at < STORE_INTERVAL):
            return
        item.stored_at = now
        item.dirty = False
        progress = item.pipeline.state.progress
        offset = item.pipeline.offset
        attempt = item.job.attempts

        def apply(current: Job) -> Job:
            if current.attempts != attempt or current.state != JobState.RUNNING:
                return current
            return current.evolve(progress=progress, log_offset=offset)

        try:
            self.store.update(item.job.id, apply, durable=False)
        except LoradeckError:
            log.exception("saving progress of job %s failed", item.job.id)

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                items = list(self._watched.values())
            for item in items:
                try:
                    item.pipeline.flush_if_due()
                    self._after_feed(item)
                except Exception:  # a bad log must not stop monitoring the others
                    log.exception("monitoring job %s failed", item.job.id)


class GpuSampler:
    """Samples the GPUs at a fixed interval into one ring buffer per GPU."""

    def __init__(
        self,
        inventory: GpuInventory,
        bus: ev.EventBus,
        *,
        interval: float,
        sim_usage: Callable[[], dict[int, list[tuple[int, float]]]],
        capacity: int = 600,
    ) -> None:
        self.inventory = inventory
        self.bus = bus
        self.interval = interval
        self.sim_usage = sim_usage
        self.capacity = capacity
        self.rings: dict[int, GpuRing] = {}
        self._latest: dict[int, GpuSample] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def latest(self) -> dict[int, GpuSample]:
        with self._lock:
            return dict(self._latest)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                samples = self.inventory.sample(sim_usage=self.sim_usage())
            except LoradeckError as err:
                self.bus.publish(ev.EngineMessage(message=str(err), severity="warning"))
                samples = ()
            with self._lock:
                for sample in samples:
                    ring = self.rings.get(sample.index)
                    if ring is None:
                        ring = self.rings[sample.index] = GpuRing(sample.index, self.capacity)
                    ring.append(sample)
                    self._latest[sample.index] = sample
            if samples:
                self.bus.publish(ev.GpuSampled(samples=tuple(samples)))
            self._stop.wait(self.interval)
