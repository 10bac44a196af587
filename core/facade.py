"""The narrow facade a user interface drives: everything the TUI reads or does to a home.

:class:`Facade` is the protocol; :class:`LiveFacade` implements it on a real home. At
:meth:`LiveFacade.start` it hosts the engine in this process when no other loradeck holds
the engine lease, and otherwise *follows*: it reads the store and the event log that the
running engine writes, and acts through the store (the engine sees every change). Either
way the facade's :attr:`~LiveFacade.bus` carries the engine's typed events, so a user
interface subscribes once and never cares which.

Every method but :meth:`~LiveFacade.status` and :meth:`~LiveFacade.now` may block
(store, tmux, NVML, files): call them off a UI thread. No UI library is imported here,
and the engine, the scheduler and the store are imported only when the facade starts,
so that a user interface can draw its first frame before they load.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from loradeck.core import events as ev
from loradeck.core.actions import cancel_job, retry_job, set_priority, toggle_hold
from loradeck.core.clusterview import sim_usage
from loradeck.core.errors import EngineLockedError, ExecutorError, LoradeckError
from loradeck.core.gpu import GpuSnapshot, parse_gpu_spec, process_name
from loradeck.core.home import Home
from loradeck.core.lease import describe_holder, holder_info
from loradeck.core.models import Job, JobState
from loradeck.core.settings import Settings

if TYPE_CHECKING:
    from loradeck.core.engine import Engine
    from loradeck.core.store import Store

log = logging.getLogger(__name__)

#: Points of one job's loss/lr series kept in memory (older ones are thinned).
SERIES_POINTS = 20_000
#: Jobs whose series are kept in memory at once (the least recently used go first).
SERIES_JOBS = 32
#: The tmux window a headless engine is handed the queue in, on quit.
HANDOFF_WINDOW = "loradeck-engine"
#: The monitor's per-job metric history, in the job's folder.
METRICS_FILE = "metrics.jsonl"


# --------------------------------------------------------------------------- data


class FacadeMode(StrEnum):
    """How the facade reaches the queue."""

    STARTING = "starting"
    HOSTING = "hosting"
    """The engine runs in this process."""
    FOLLOWING = "following"
    """Another process holds the engine; this one reads and acts through the store."""
    STATIC = "static"
    """Fixed data (snapshots, screenshots); no home."""


@dataclass(frozen=True)
class EngineStatus:
    """What the banner says."""

    mode: FacadeMode
    text: str


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One observation of a job's training curve."""

    step: int
    loss: float | None
    lr: float | None


@dataclass(frozen=True)
class ForeignProcess:
    """A process loradeck did not start that holds memory on a GPU."""

    pid: int
    name: str
    used_gb: float


@dataclass(frozen=True)
class GpuPanel:
    """One GPU as its panel shows it: the reading, loradeck's jobs, foreign processes."""

    gpu: GpuSnapshot
    jobs: tuple[tuple[int, str], ...]
    """(job id, name) of the running loradeck jobs placed on it."""
    foreign: tuple[ForeignProcess, ...]


@dataclass(frozen=True)
class MachineReading:
    """GPUs, system RAM and CPU, read at one moment."""

    taken_at: float
    gpus: tuple[GpuPanel, ...]
    ram_used_gb: float
    ram_total_gb: float
    cpu_percent: float
    message: str | None = None


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint on the leaderboard; ``score`` is None until it is evaluated."""

    job_id: int
    job_name: str
    path: str
    step: int | None
    at: float
    score: float | None = None
    """Combined score, comparable within ``group`` (a sweep)."""
    rank: int | None = None
    """1 is the best of its group."""
    group: str = ""
    best: bool = False
    """The best checkpoint of its group."""
    metrics: tuple[tuple[str, float | None], ...] = ()


@dataclass(frozen=True)
class SubmitOutcome:
    """What a submitted (or resumed) batch became."""

    batch_id: int | None
    job_ids: tuple[int, ...]
    message: str


@dataclass(frozen=True)
class AttachPlan:
    """How to show a job's tmux window: run ``argv``; with ``suspend`` the terminal is
    handed to it (the UI suspends until it returns), else it returns at once."""

    argv: tuple[str, ...]
    suspend: bool
    env: Mapping[str, str] | None


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


# --------------------------------------------------------------------------- readers

_EVENT_TYPES = ev.event_types()


def event_from_json(data: Mapping[str, object]) -> ev.Event | None:
    """The typed event of one events.jsonl object; None for a kind or shape not known."""
    cls = _EVENT_TYPES.get(str(data.get("kind")))
    if cls is None:
        return None
    names = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    try:
        return cls(**values)  # type: ignore[arg-type]
    except TypeError:
        return None


def _decode_lines(lines: Sequence[bytes]) -> list[ev.Event]:
    out: list[ev.Event] = []
    for raw in lines:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        event = event_from_json(data) if isinstance(data, dict) else None
        if event is not None:
            out.append(event)
    return out


class EventTail:
    """Reads events.jsonl: the newest events, and the lines appended since last time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._lock = threading.Lock()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def skip_to_end(self) -> None:
        with self._lock:
            self._offset = self._size()

    def read_new(self) -> list[ev.Event]:
        """Events appended since the last call (whole lines only)."""
        with self._lock:
            size = self._size()
            if size < self._offset:  # replaced or truncated: start again
                self._offset = 0
            if size == self._offset:
                return []
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read(size - self._offset)
            complete = data[: data.rfind(b"\n") + 1]
            self._offset += len(complete)
        return _decode_lines(complete.splitlines())

    def recent(self, limit: int | None) -> list[ev.Event]:
        """Newest first; every event when ``limit`` is None."""
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError:
            return []
        if limit is not None:
            lines = lines[-limit:]
        return _decode_lines(lines)[::-1]


def checkpoints_from_events(events: Sequence[ev.Event]) -> list[CheckpointEntry]:
    """Every saved checkpoint the events mention, in the given order, each path once."""
    seen: set[str] = set()
    out: list[CheckpointEntry] = []
    for event in events:
        if isinstance(event, ev.CheckpointSaved) and event.path not in seen:
            seen.add(event.path)
            out.append(CheckpointEntry(event.job_id, event.name, event.path, event.step, event.at))
    return out


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class MetricsTail:
    """Reads jobs' ``metrics.jsonl`` incrementally: only the bytes appended since."""

    def __init__(self, max_points: int = SERIES_POINTS, max_jobs: int = SERIES_JOBS) -> None:
        self._max = max(8, max_points)  # thinning needs a few points to make progress
        self._max_jobs = max_jobs
        self._cache: OrderedDict[int, tuple[int, list[MetricPoint]]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, job: Job) -> list[MetricPoint] | None:
        """The job's curve, or None when it has no metrics file."""
        path = job.job_dir / METRICS_FILE
        try:
            size = path.stat().st_size
        except OSError:
            return None
        with self._lock:
            offset, points = self._cache.get(job.id, (0, []))
            if size < offset:  # a new attempt started the file again
                offset, points = 0, []
            if size > offset:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read(size - offset)
                complete = data[: data.rfind(b"\n") + 1]
                offset += len(complete)
                points = self._fold(points, complete.splitlines())
            self._cache[job.id] = (offset, points)
            self._cache.move_to_end(job.id)
            while len(self._cache) > self._max_jobs:
                self._cache.popitem(last=False)
            return list(points)

    def _fold(self, points: list[MetricPoint], lines: Sequence[bytes]) -> list[MetricPoint]:
        for raw in lines:
            try:
                row = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            step = row.get("step") if isinstance(row, dict) else None
            if isinstance(step, bool) or not isinstance(step, int | float):
                continue
            point = MetricPoint(int(step), _number(row.get("loss")), _number(row.get("lr")))
            if points and points[-1].step == point.step:
                points[-1] = point  # the last line of a step wins
            else:
                points.append(point)
        while len(points) > self._max:
            # keep the newer half whole and every other point of the older half
            half = len(points) // 2
            points = points[:half:2] + points[half:]
        return points


# CSI, OSC (ended by BEL or ST, or cut off), other escapes, a lone ESC, and the other
# control characters but tab (as the monitor's splitter cleans lines).
_ANSI_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f]"
)


def log_tail(path: Path, lines: int, *, max_bytes: int = 65_536) -> list[str]:
    """The last ``lines`` lines of a log as a terminal shows them: a progress bar
    redrawn with ``\\r`` is its last state, escapes are removed."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    shown = []
    for line in data.decode("utf-8", "replace").split("\n"):
        last = line.rstrip("\r").rsplit("\r", 1)[-1]
        shown.append(_ANSI_RE.sub("", last).replace("\t", "    "))
    if shown and not shown[-1]:
        shown.pop()
    return shown[-lines:]


def foreign_processes(gpu: GpuSnapshot, loradeck_pids: set[int]) -> tuple[ForeignProcess, ...]:
    """The processes on ``gpu`` that are not loradeck's (none on a simulated GPU)."""
    if gpu.simulated:
        return ()
    return tuple(
        ForeignProcess(p.pid, process_name(p.pid) or "?", p.used_gb)
        for p in gpu.processes
        if p.pid not in loradeck_pids
    )


# --------------------------------------------------------------------------- the facade


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
        self._series: OrderedDict[int, deque[MetricPoint]] = OrderedDict()
        self._series_lock = threading.Lock()
        self._pids: tuple[float, set[int]] = (float("-inf"), set())
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
        self._unsubscribe = self.bus.subscribe(self._remember_progress, ev.JobProgress)
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
        note = "running jobs keep running in tmux"
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
        return self._apply(job_id, lambda job: toggle_hold(job, self.now()))

    def retry(self, job_id: int) -> Job:
        return self._apply(job_id, lambda job: retry_job(job, self.now()))

    def change_priority(self, job_id: int, delta: int) -> Job:
        return self._apply(job_id, lambda job: set_priority(job, job.priority + delta))

    def submit_batch(self, path: Path, *, resume: bool = False) -> SubmitOutcome:
        """Validate and submit a batch file; ValidationError lists every problem and then
        nothing is stored. With ``resume``, an unfinished earlier submission of the same
        file is followed instead of submitting it again."""
        from loradeck.core.batch import load_batch
        from loradeck.core.scheduler import never_fits
        from loradeck.core.submit import find_previous_batch, submit_with_evaluation

        store = self._require_store()
        plan = load_batch(path.expanduser().absolute(), self.settings)
        if resume:
            previous = find_previous_batch(store, plan)
            if previous is not None and any(store.get(i).state.is_active for i in previous.job_ids):
                return SubmitOutcome(
                    previous.id, previous.job_ids, f"following batch {previous.id} again"
                )
        cluster = self.engine.cluster_view(self.engine.inventory.snapshot(), [])
        batch, jobs = submit_with_evaluation(
            store,
            self.home,
            plan,
            self.settings,
            # With Slurm the GPUs are the cluster's, not this (login) node's.
            fit_check=None
            if self.settings.executor.kind == "slurm"
            else lambda spec: never_fits(spec, cluster),
            settings_file=self.config_path,
        )
        self._changed()
        ids = tuple(job.id for job in jobs)
        label = f"batch {batch.id}" if batch is not None else "batch"
        return SubmitOutcome(
            batch.id if batch else None, ids, f"{label}: {len(ids)} jobs submitted from {path}"
        )

    def evaluate(self, job_id: int) -> str:
        """Queue an evaluation job for the job's checkpoints: it starts as soon as a GPU is
        free (for a job still running: once it completes)."""
        from loradeck.core.batch import plan_single
        from loradeck.core.evaluation.commands import evaluation_job_fields
        from loradeck.core.evaluation.leaderboard import is_evaluation_job
        from loradeck.core.submit import submit_plan

        job = self.job(job_id)
        if is_evaluation_job(job):
            raise LoradeckError(
                f"job {job.id} is an evaluation job; evaluate its training job", title="evaluate"
            )
        fields = evaluation_job_fields(
            job, home=self.home.root, settings=self.settings, settings_file=self.config_path
        )
        if job.state.is_terminal:
            fields["depends_on"] = []  # run as soon as a GPU is free
        plan = plan_single(fields, base_dir=job.job_dir, settings=self.settings)
        _, queued = submit_plan(self._require_store(), self.home, plan)
        self._changed()
        return f"evaluation of job {job.id} queued as job {queued[0].id}"

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
        """The GPUs with their jobs and foreign processes, and system RAM and CPU."""
        store = self._require_store()
        running = [job for job in store.jobs(active_only=True) if job.state == JobState.RUNNING]
        inventory = self.engine.inventory
        jobs_by_gpu: dict[int, list[tuple[int, str]]] = {}
        for job in running:
            for gpu in job.gpu_ids:
                jobs_by_gpu.setdefault(gpu, []).append((job.id, job.name))
        snapshot = inventory.snapshot(sim_usage=sim_usage(inventory.spec, running))
        pids = set() if inventory.spec.simulated else self._loradeck_pids(running)
        memory = psutil.virtual_memory()
        return MachineReading(
            taken_at=snapshot.taken_at,
            gpus=tuple(
                GpuPanel(gpu, tuple(jobs_by_gpu.get(gpu.index, ())), foreign_processes(gpu, pids))
                for gpu in snapshot.gpus
            ),
            ram_used_gb=(memory.total - memory.available) / 2**30,
            ram_total_gb=memory.total / 2**30,
            cpu_percent=psutil.cpu_percent(interval=None),
            message=snapshot.message,
        )

    def _loradeck_pids(self, running: Sequence[Job]) -> set[int]:
        # Finding process trees scans /proc; a few seconds old is good enough to tell
        # loradeck's processes from foreign ones.
        at, pids = self._pids
        if self.now() - at < 5.0:
            return pids
        found: set[int] = set()
        for job in running:
            try:
                found.update(self.engine.executor.pids(job))
            except LoradeckError:
                continue
        self._pids = (self.now(), found)
        return found

    # ------------------------------------------------------------------ per job

    def log_tail(self, job: Job, lines: int = 200) -> list[str]:
        return log_tail(job.log_file, lines)

    def metric_series(self, job: Job) -> list[MetricPoint]:
        """The job's loss and learning rate: its metrics file, else what this process saw."""
        stored = self._metrics.read(job)
        if stored is not None:
            return stored
        with self._series_lock:
            return list(self._series.get(job.id, ()))

    def _remember_progress(self, event: ev.Event) -> None:
        if not isinstance(event, ev.JobProgress) or event.step is None:
            return
        point = MetricPoint(step=event.step, loss=event.loss, lr=event.lr)
        with self._series_lock:
            series = self._series.get(event.job_id)
            if series is None or (series and event.step < series[-1].step):
                # a new attempt counts its steps again
                series = self._series[event.job_id] = deque(maxlen=SERIES_POINTS)
            series.append(point)
            self._series.move_to_end(event.job_id)
            while len(self._series) > SERIES_JOBS:
                self._series.popitem(last=False)

    def recent_events(self, limit: int = 500) -> list[ev.Event]:
        """The newest ``limit`` logged events, newest first."""
        return self._tail.recent(limit)

    def checkpoints(self) -> list[CheckpointEntry]:
        """Evaluated checkpoints (ranked within their sweep), then the ones only seen in
        the logs so far, newest first."""
        from loradeck.core.evaluation.leaderboard import load_leaderboard

        seen = checkpoints_from_events(self._tail.recent(None))
        evaluation = self.settings.evaluation
        board = load_leaderboard(
            self._require_store().jobs(), metrics=evaluation.metrics, weights=evaluation.weights
        )
        at = {entry.path: entry.at for entry in seen}
        scored = [
            CheckpointEntry(
                job_id=row.job_id or 0,
                job_name=row.job_name,
                path=str(row.checkpoint or row.key),
                step=row.step,
                at=at.get(str(row.checkpoint), 0.0),
                score=row.combined,
                rank=row.rank,
                group=row.group,
                best=row.best_in_group,
                metrics=tuple(row.metrics.items()),
            )
            for row in board.rows
        ]
        listed = {entry.path for entry in scored}
        return scored + [entry for entry in seen if entry.path not in listed]

    def attach_plan(self, job: Job, environ: Mapping[str, str]) -> AttachPlan:
        """Inside a client of the jobs' tmux server: switch it to the job's window.
        Anywhere else: an attach command to run in the terminal (outside any tmux)."""
        from loradeck.core.executor import TmuxExecutor

        executor = self.engine.executor
        if not isinstance(executor, TmuxExecutor):
            # No window to attach to (Slurm): follow the job's output instead.
            return AttachPlan(tuple(executor.attach_command(job)), suspend=True, env=None)
        if job.state != JobState.RUNNING and not job.executor_ref:
            raise LoradeckError(
                f"job {job.id} has no tmux window ({job.state.value.lower()})", title="attach"
            )
        if executor.inside_same_server(environ):
            return AttachPlan(tuple(executor.switch_command(job)), suspend=False, env=None)
        env = {k: v for k, v in environ.items() if k not in ("TMUX", "TMUX_PANE")}
        return AttachPlan(tuple(executor.attach_command(job)), suspend=True, env=env)

    # ------------------------------------------------------------------ hand-off

    def _hand_off(self) -> str:
        """Start ``loradeck serve`` for this home in a tmux window and wait until it holds
        the engine lease."""
        from loradeck.core.executor.tmux_server import TmuxServer

        argv = [sys.executable, "-m", "loradeck.core.cli", "--home", str(self.home.root)]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        argv += ["--gpus", self.gpus_spec, "--tmux-session", self.tmux_session]
        if self.tmux_socket:
            argv += ["--tmux-socket", self.tmux_socket]
        argv.append("serve")
        env_args: list[str] = []
        for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "LORADECK_HOME", "PYTHONPATH"):
            if os.environ.get(key):
                env_args += ["-e", f"{key}={os.environ[key]}"]
        server = TmuxServer(self.tmux_socket)
        window = ["-d", "-P", "-F", "#{window_id}", "-n", HANDOFF_WINDOW, *env_args, *argv]
        out = server.try_run("new-window", "-t", f"={self.tmux_session}:", *window)
        if out is None:  # no server or no session yet
            out = server.run("new-session", "-s", self.tmux_session, *window)
        if out:
            # keep the window if serve fails at once, so that its message can be read
            server.try_run("set-option", "-w", "-t", out[0], "remain-on-exit", "on")
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            info = holder_info(self.home.engine_lock)
            if info and info.get("pid") not in (None, os.getpid()):
                return f"engine handed to tmux window {HANDOFF_WINDOW} (pid {info['pid']})"
            time.sleep(0.1)
        return (
            f"started the engine in tmux window {HANDOFF_WINDOW}, but it has not taken the "
            f"queue yet; look at that window (tmux session {self.tmux_session})"
        )
