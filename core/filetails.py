"""Reading what the engine and the jobs write, incrementally: the event log, each job's
metric history, the tail of a log as a terminal would show it; and, for jobs that write
no metric history, the curve made of the progress events this process saw.

Plain file readers for the facade; each remembers how far it read, so that a reader
polled every second costs what was appended since, not the whole file.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from loradeck.core import events as ev
from loradeck.core.facadeviews import CheckpointEntry, MetricPoint
from loradeck.core.models import Job

#: Points of one job's loss/lr series kept in memory (older ones are thinned).
SERIES_POINTS = 20_000
#: Jobs whose series are kept in memory at once (the least recently used go first).
SERIES_JOBS = 32
#: The monitor's per-job metric history, in the job's folder.
METRICS_FILE = "metrics.jsonl"

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


class ProgressSeries:
    """Loss and learning rate from the progress events seen on the bus, per job (the
    least recently updated jobs are forgotten first)."""

    def __init__(self, max_points: int = SERIES_POINTS, max_jobs: int = SERIES_JOBS) -> None:
        self._max_points = max_points
        self._max_jobs = max_jobs
        self._series: OrderedDict[int, deque[MetricPoint]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, event: ev.Event) -> None:
        """Keep a :class:`~loradeck.core.events.JobProgress` with a step; others are ignored."""
        if not isinstance(event, ev.JobProgress) or event.step is None:
            return
        point = MetricPoint(step=event.step, loss=event.loss, lr=event.lr)
        with self._lock:
            series = self._series.get(event.job_id)
            if series is None or (series and event.step < series[-1].step):
                # a new attempt counts its steps again
                series = self._series[event.job_id] = deque(maxlen=self._max_points)
            series.append(point)
            self._series.move_to_end(event.job_id)
            while len(self._series) > self._max_jobs:
                self._series.popitem(last=False)

    def series(self, job_id: int) -> list[MetricPoint]:
        with self._lock:
            return list(self._series.get(job_id, ()))


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
