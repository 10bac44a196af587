"""Typed engine events, an in-process bus, and the ``events.jsonl`` log.

Events are frozen dataclasses, never dicts. ``EventBus.subscribe`` returns a function
that unsubscribes. Handlers run on the thread that publishes (the engine's); a TUI
bridges them to its own thread with ``post_message``. A failing handler is logged and
never breaks the engine or the other handlers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from loradeck.core.jobview import format_duration, one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of every event. ``kind`` names it in events.jsonl and in hooks."""

    kind: ClassVar[str] = "event"
    at: float = field(default_factory=time.time, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind
        return data


@dataclass(frozen=True)
class JobEvent(Event):
    job_id: int
    name: str


@dataclass(frozen=True)
class JobSubmitted(JobEvent):
    kind: ClassVar[str] = "job_submitted"


@dataclass(frozen=True)
class JobStarted(JobEvent):
    kind: ClassVar[str] = "job_started"
    gpu_ids: tuple[int, ...] = ()
    attempt: int = 1


@dataclass(frozen=True)
class JobCompleted(JobEvent):
    kind: ClassVar[str] = "job_completed"
    runtime_s: float | None = None


@dataclass(frozen=True)
class JobFailed(JobEvent):
    kind: ClassVar[str] = "job_failed"
    reason: str = ""
    failure_class: str = ""
    exit_code: int | None = None
    state: str = "FAILED"


@dataclass(frozen=True)
class JobCancelled(JobEvent):
    kind: ClassVar[str] = "job_cancelled"
    reason: str = ""


@dataclass(frozen=True)
class JobRetrying(JobEvent):
    kind: ClassVar[str] = "job_retrying"
    attempt: int = 0
    delay_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class JobHeld(JobEvent):
    kind: ClassVar[str] = "job_held"
    reason: str = ""


@dataclass(frozen=True)
class JobAdopted(JobEvent):
    """A running job found by a newly started engine and followed again."""

    kind: ClassVar[str] = "job_adopted"


@dataclass(frozen=True)
class JobProgress(JobEvent):
    kind: ClassVar[str] = "job_progress"
    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    loss: float | None = None
    lr: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class CheckpointSaved(JobEvent):
    kind: ClassVar[str] = "checkpoint_saved"
    path: str = ""
    step: int | None = None


@dataclass(frozen=True)
class JobWarning(JobEvent):
    kind: ClassVar[str] = "job_warning"
    message: str = ""


@dataclass(frozen=True)
class EngineMessage(Event):
    """Something the engine wants a person to know (lease taken, GPUs missing...)."""

    kind: ClassVar[str] = "engine_message"
    message: str = ""
    severity: str = "information"


@dataclass(frozen=True)
class GpuSampled(Event):
    """A new reading of every GPU (high rate: not logged, latest value wins)."""

    kind: ClassVar[str] = "gpu_sampled"
    samples: tuple[Any, ...] = ()


@dataclass(frozen=True)
class QueueChanged(Event):
    """The stored queue changed (any job); views should refresh."""

    kind: ClassVar[str] = "queue_changed"


def event_types() -> dict[str, type[Event]]:
    """Every concrete event class by its ``kind`` (to read events.jsonl back)."""
    found: dict[str, type[Event]] = {}
    pending: list[type[Event]] = [Event]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        found.setdefault(cls.kind, cls)
    found.pop(Event.kind, None)
    return found


#: Events written to events.jsonl and offered to hooks (not the high-rate ones).
LOGGED_KINDS = frozenset(
    {
        "job_submitted",
        "job_started",
        "job_completed",
        "job_failed",
        "job_cancelled",
        "job_retrying",
        "job_held",
        "job_adopted",
        "checkpoint_saved",
        "job_warning",
        "engine_message",
    }
)

Handler = Callable[[Event], None]


class EventBus:
    """Synchronous publish/subscribe; thread-safe subscription changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: list[tuple[type[Event], Handler]] = []

    def subscribe(self, handler: Handler, kind: type[Event] = Event) -> Callable[[], None]:
        entry = (kind, handler)
        with self._lock:
            self._handlers.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._handlers:
                    self._handlers.remove(entry)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            handlers = list(self._handlers)
        for kind, handler in handlers:
            if isinstance(event, kind):
                try:
                    handler(event)
                except Exception:
                    log.exception("event handler %r failed on %s", handler, event.kind)


class EventLog:
    """Appends events to ``events.jsonl`` (one JSON object a line, 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind not in LOGGED_KINDS:
            return
        line = json.dumps(event.to_json(), default=str, ensure_ascii=False) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)


def read_events(path: Path, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Events from an events.jsonl, oldest first; a torn last line is skipped."""
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for raw in handle:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
    return out[-limit:] if limit else out


def describe_event(event: Event) -> str:
    """The event in words, one line (the TUI's event log, headless output)."""
    if isinstance(event, EngineMessage):
        return f"{event.severity}: {event.message}"
    if not isinstance(event, JobEvent):
        return event.kind.replace("_", " ")
    who = f"job {event.job_id} {one_line(event.name)}"
    if isinstance(event, JobStarted):
        where = f"GPU {','.join(map(str, event.gpu_ids))}" if event.gpu_ids else "CPU"
        return f"{who} started on {where} (attempt {event.attempt})"
    if isinstance(event, JobCompleted):
        return f"{who} completed in {format_duration(event.runtime_s)}"
    if isinstance(event, JobFailed):
        return f"{who} {event.state.lower()}: {one_line(event.reason)}"
    if isinstance(event, JobCancelled | JobHeld):
        verb = "cancelled" if isinstance(event, JobCancelled) else "held"
        return f"{who} {verb}: {one_line(event.reason)}"
    if isinstance(event, JobRetrying):
        return f"{who} will retry (attempt {event.attempt}): {one_line(event.reason)}"
    if isinstance(event, JobWarning):
        return f"{who} warning: {one_line(event.message)}"
    if isinstance(event, CheckpointSaved):
        return f"{who} saved {one_line(event.path)}"
    if isinstance(event, JobAdopted):
        return f"{who} is still running; followed again"
    return f"{who} {event.kind.removeprefix('job_').replace('_', ' ')}"


def event_fields(event: Event) -> dict[str, str]:
    """The event as environment variables for hooks (LORADECK_EVENT, LORADECK_JOB_ID...)."""
    env = {"LORADECK_EVENT": event.kind}
    for item in fields(event):
        value = getattr(event, item.name)
        if value is None:
            continue
        key = "LORADECK_" + item.name.upper()
        if item.name == "name":
            key = "LORADECK_JOB_NAME"
        env[key] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return env
