"""The narrow facade a user interface drives: everything the TUI reads or does to a home.

:class:`Facade` is the protocol; :class:`LiveFacade` implements it on a real home. At
:meth:`LiveFacade.start` it hosts the engine in this process when no other loradeck holds
the engine lease, and otherwise *follows*: it reads the store and the event log that the
running engine writes, and acts through the store (the engine sees every change). Either
way the facade's :attr:`~LiveFacade.bus` carries the engine's typed events, so a user
interface subscribes once and never cares which.

Every method but :meth:`~LiveFacade.status` and :meth:`~LiveFacade.now` may block
(store, tmux, NVML, Slurm, files): call them off a UI thread. No UI library is imported
here, and the engine, the scheduler and the store are imported only when the facade
starts, so that a user interface can draw its first frame before they load.

The values it hands out are in :mod:`~loradeck.core.facadeviews`, the file readers in
:mod:`~loradeck.core.filetails`, the GPU screen's reading in
:mod:`~loradeck.core.machineview`, submitting, evaluating and the leaderboard in
:mod:`~loradeck.core.facadeops`, the hand-off to a headless engine in
:mod:`~loradeck.core.handoff`; their public names are re-exported here.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from loradeck.core import events as ev
from loradeck.core.actions import apply_priority, apply_toggle_hold, cancel_job, retry_job
from loradeck.core.errors import EngineLockedError, ExecutorError, LoradeckError
from loradeck.core.facadeops import (
    FitCheck,
    attach_plan,
    leaderboard_entries,
    queue_evaluation,
    submit_batch_file,
)
from loradeck.core.facadeviews import (
    AttachPlan,
    CheckpointEntry,
    EngineStatus,
    FacadeMode,
    ForeignProcess,
    GpuPanel,
    MachineReading,
    MetricPoint,
    NodePanel,
    SubmitOutcome,
)
from loradeck.core.filetails import (
    METRICS_FILE,
    SERIES_JOBS,
    SERIES_POINTS,
    EventTail,
    MetricsTail,
    ProgressSeries,
    checkpoints_from_events,
    event_from_json,
    log_tail,
)
from loradeck.core.gpu import parse_gpu_spec
from loradeck.core.handoff import HANDOFF_WINDOW, hand_off_engine
from loradeck.core.home import Home
from loradeck.core.lease import describe_holder
from loradeck.core.machineview import ClusterSource, MachineReader, foreign_processes
from loradeck.core.models import Job, JobSpec, JobState
from loradeck.core.settings import Settings

if TYPE_CHECKING:
    from loradeck.core.engine import Engine
    from loradeck.core.store import Store

__all__ = [
    "HANDOFF_WINDOW",
    "METRICS_FILE",
    "SERIES_JOBS",
    "SERIES_POINTS",
    "AttachPlan",
    "CheckpointEntry",
    "ClusterSource",
    "EngineStatus",
    "EventTail",
    "Facade",
    "FacadeMode",
    "ForeignProcess",
    "GpuPanel",
    "LiveFacade",
    "MachineReading",
    "MetricPoint",
    "MetricsTail",
    "NodePanel",
    "SubmitOutcome",
    "checkpoints_from_events",
    "event_from_json",
    "foreign_processes",
    "log_tail",
]

log = logging.getLogger(__name__)


class Facade(Protocol):
    """What a user interface may read and do. Every method may block."""

    bus: ev.EventBus

    def status(self) -> EngineStatus: ...
    def now(self) -> float: ...
    def start(self) -> EngineStatus: ...
    def close(self, *, keep_scheduling: bool = False) -> str: ...
    def jobs(self) -> list[Job]: ...
    def job(self, job_id: int) -> Job: ...
    def cancel(self, job_id: int) -> Job: ...
    def toggle_hold(self, job_id: int) -> Job: ...
    def retry(self, job_id: int) -> Job: ...
    def change_priority(self, job_id: int, delta: int) -> Job: ...
    def submit_batch(self, path: Path, *, resume: bool = False) -> SubmitOutcome: ...
    def evaluate(self, job_id: int) -> str: ...
    def pending_reason(self, job: Job) -> str: ...
    def read_machine(self) -> MachineReading: ...
    def log_tail(self, job: Job, lines: int = 200) -> list[str]: ...
    def metric_series(self, job: Job) -> list[MetricPoint]: ...
    def recent_events(self, limit: int = 500) -> list[ev.Event]: ...
    def checkpoints(self) -> list[CheckpointEntry]: ...
    def attach_plan(self, job: Job, environ: Mapping[str, str]) -> AttachPlan: ...
    def queued_count(self) -> int: ...


class LiveFacade:
    """The facade of one real home (see the module docstring)."""

    def __init__(
        self,
        home: Home,
        settings: Settings,
        *,
        gpus: str | None = None,
        tmux_session: str | None = None,
        tmux_socket: str | None = None,
        config_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 1.0,
        engine: Engine | None = None,
    ) -> None:
        """Checks the settings (raises LoradeckError for a bad ``--gpus`` or a missing
        tmux); the engine is built (unless given) and started by :meth:`start`."""
        self.home = home
        self.settings = settings
        self.bus = engine.bus if engine is not None else ev.EventBus()
        self.gpus_spec = gpus or settings.resources.gpus
        self.tmux_session = tmux_session or settings.executor.tmux_session
        self.tmux_socket = tmux_socket or settings.executor.tmux_socket
        self.config_path = config_path
        parse_gpu_spec(self.gpus_spec, source="--gpus" if gpus else "resources.gpus")
        if engine is None and settings.executor.kind == "tmux" and shutil.which("tmux") is None:
            raise ExecutorError(
                "tmux is not installed or not on PATH; install it (apt install tmux, "
                "brew install tmux)",
                title="tmux missing",
            )
        self._engine = engine
        self._clock = clock
        self._poll_interval = poll_interval
        self._mode = FacadeMode.STARTING
        self._store: Store | None = None
        self._tail = EventTail(home.events_file)
        self._metrics = MetricsTail()
        self._seen = ProgressSeries()
        self._reader: MachineReader | None = None
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def engine(self) -> Engine:
        """The engine: hosted, or (when following) used for its GPU inventory and executor."""
        if self._engine is None:
            raise LoradeckError("the facade is not started", title="facade")
        return self._engine

    def status(self) -> EngineStatus:
        if self._mode == FacadeMode.HOSTING:
            text = f"engine: running in this window (pid {os.getpid()}, GPUs {self.gpus_spec})"
        elif self._mode == FacadeMode.FOLLOWING:
            holder = describe_holder(self.home.engine_lock)
            text = f"engine: another loradeck runs the queue ({holder}); acting through the store"
        else:
            text = "engine: starting…"
        return EngineStatus(self._mode, text)

    def now(self) -> float:
        return self._clock()

    def start(self) -> EngineStatus:
        """Host the engine, or follow the one that runs; open the store; start following."""
        from loradeck.core.runtime import build_engine
        from loradeck.core.store import Store

        if self._engine is None:
            self._engine = build_engine(
                self.home,
                self.settings,
                gpus=self.gpus_spec,
                tmux_session=self.tmux_session,
                tmux_socket=self.tmux_socket,
                bus=self.bus,
            )
        self._unsubscribe = self.bus.subscribe(self._seen.add, ev.JobProgress)
        self._store = Store(self.home.root)
        self._tail.skip_to_end()
        try:
            self._engine.start()
            self._mode = FacadeMode.HOSTING
        except EngineLockedError:
            self._mode = FacadeMode.FOLLOWING
        self._follower = threading.Thread(target=self._follow, name="facade-follow", daemon=True)
        self._follower.start()
        return self.status()

    def close(self, *, keep_scheduling: bool = False) -> str:
        """Stop following and stop a hosted engine (running jobs keep running); with
        ``keep_scheduling``, hand the queue to a headless engine in a tmux window."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(5.0)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        where = "Slurm" if self.settings.executor.kind == "slurm" else "tmux"
        note = f"running jobs keep running in {where}"
        if self._mode == FacadeMode.HOSTING:
            self.engine.stop()
            if keep_scheduling:
                note = self._hand_off() + "; " + note
            else:
                note = "scheduling stopped; " + note
        if self._store is not None:
            self._store.close()
            self._store = None
        return note

    def _follow(self) -> None:
        """Turn store commits (by any process) and, when following, logged events into
        events on the bus."""
        store = self._require_store()
        last = store.revision
        while not self._stop.wait(self._poll_interval):
            try:
                revision = store.revision
                if self._mode == FacadeMode.FOLLOWING:
                    for event in self._tail.read_new():
                        self.bus.publish(event)
                if revision != last:
                    last = revision
                    self.bus.publish(ev.QueueChanged())
            except LoradeckError as err:
                log.warning("following the store failed: %s", err)

    def _require_store(self) -> Store:
        if self._store is None:
            raise LoradeckError("the facade is not started", title="facade")
        return self._store

    # ------------------------------------------------------------------ jobs

    def jobs(self) -> list[Job]:
        return self._require_store().jobs()

    def job(self, job_id: int) -> Job:
        return self._require_store().get(job_id)

    def _changed(self) -> None:
        if self._mode == FacadeMode.HOSTING:
            self.engine.wake()
        self.bus.publish(ev.QueueChanged())

    def _apply(self, job_id: int, change: Callable[[Job], Job]) -> Job:
        job = self._require_store().update(job_id, change)
        self._changed()
        return job

    def cancel(self, job_id: int) -> Job:
        return self._apply(job_id, lambda job: cancel_job(job, self.now()))

    def toggle_hold(self, job_id: int) -> Job:
        """Hold or release; a job already in Slurm is held or released there (Slurm's
        refusal raises :class:`ExecutorError` with Slurm's words)."""
        try:
            return apply_toggle_hold(
                self._require_store(), job_id, self.now(), slurm=self.engine.slurm
            )
        finally:
            self._changed()  # a release can fail in Slurm after the store changed

    def retry(self, job_id: int) -> Job:
        return self._apply(job_id, lambda job: retry_job(job, self.now()))

    def change_priority(self, job_id: int, delta: int) -> Job:
        """Change the priority by ``delta``; for a job in Slurm, its nice too, where
        Slurm allows it (a refusal changes nothing)."""
        store = self._require_store()
        try:
            value = store.get(job_id).priority + delta
            return apply_priority(store, job_id, value, slurm=self.engine.slurm)
        finally:
            self._changed()

    def submit_batch(self, path: Path, *, resume: bool = False) -> SubmitOutcome:
        """Validate and submit a batch file (see
        :func:`~loradeck.core.facadeops.submit_batch_file`): nothing is stored when it
        is invalid. Jobs that can never fit this machine's GPUs are refused, except with
        Slurm, where the GPUs are the cluster's, not this (login) node's."""
        from loradeck.core.scheduler import never_fits

        fit_check: FitCheck | None = None
        if self.settings.executor.kind != "slurm":
            cluster = self.engine.cluster_view(self.engine.inventory.snapshot(), [])

            def fit_check(spec: JobSpec) -> str | None:
                return never_fits(spec, cluster)

        outcome = submit_batch_file(
            self._require_store(),
            self.home,
            self.settings,
            path,
            resume=resume,
            fit_check=fit_check,
            config_path=self.config_path,
        )
        self._changed()
        return outcome

    def evaluate(self, job_id: int) -> str:
        """Queue an evaluation job for the job's checkpoints: it starts as soon as a GPU is
        free (for a job still running: once it completes)."""
        store = self._require_store()
        done = queue_evaluation(
            store, self.home, self.settings, self.job(job_id), config_path=self.config_path
        )
        self._changed()
        return done

    def pending_reason(self, job: Job) -> str:
        """Why the job waits (the hosted engine's latest word), failed or was held."""
        if (
            self._mode == FacadeMode.HOSTING
            and self._engine is not None
            and job.state == JobState.PENDING
        ):
            return self._engine.reasons.get(job.id) or job.reason
        return job.reason

    def queued_count(self) -> int:
        active = self._require_store().jobs(active_only=True)
        return sum(job.state == JobState.PENDING for job in active)

    # ------------------------------------------------------------------ machine

    def read_machine(self) -> MachineReading:
        """The GPUs with their jobs and foreign processes, and system RAM and CPU; in
        Slurm mode the cluster's nodes instead of the GPUs."""
        store = self._require_store()
        running = [job for job in store.jobs(active_only=True) if job.state == JobState.RUNNING]
        return self._machine_reader().read(running)

    def _machine_reader(self) -> MachineReader:
        if self._reader is None:
            engine = self.engine
            partition = self.settings.slurm.partition
            self._reader = MachineReader(
                engine.inventory,
                engine.executor,
                cluster=engine.slurm,
                cluster_label=f"Slurm partition {partition}" if partition else "Slurm",
                clock=self._clock,
            )
        return self._reader

    # ------------------------------------------------------------------ per job

    def log_tail(self, job: Job, lines: int = 200) -> list[str]:
        return log_tail(job.log_file, lines)

    def metric_series(self, job: Job) -> list[MetricPoint]:
        """The job's loss and learning rate: its metrics file, else what this process saw."""
        stored = self._metrics.read(job)
        return stored if stored is not None else self._seen.series(job.id)

    def recent_events(self, limit: int = 500) -> list[ev.Event]:
        """The newest ``limit`` logged events, newest first."""
        return self._tail.recent(limit)

    def checkpoints(self) -> list[CheckpointEntry]:
        """Evaluated checkpoints (ranked within their sweep), then the ones only seen in
        the logs so far, newest first."""
        jobs = self._require_store().jobs()
        return leaderboard_entries(jobs, self._tail.recent(None), self.settings)

    def attach_plan(self, job: Job, environ: Mapping[str, str]) -> AttachPlan:
        """Inside a client of the jobs' tmux server: switch it to the job's window.
        Anywhere else: an attach command to run in the terminal (outside any tmux)."""
        return attach_plan(self.engine.executor, job, environ)

    # ------------------------------------------------------------------ hand-off

    def _hand_off(self) -> str:
        """Start ``loradeck serve`` for this home in a tmux window (see
        :func:`~loradeck.core.handoff.hand_off_engine`)."""
        return hand_off_engine(
            self.home,
            gpus_spec=self.gpus_spec,
            tmux_session=self.tmux_session,
            tmux_socket=self.tmux_socket,
            config_path=self.config_path,
        )
