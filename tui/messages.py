"""Messages the bridge and the workers post to the app.

Latest-value messages define ``can_replace``: when several wait in the queue only the
newest is handled (Textual drops the older one of two adjacent messages that it may
replace).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from loradeck.core import events as ev
from loradeck.core.facade import EngineStatus, MachineReading, MetricPoint
from loradeck.core.models import Job


@dataclass
class QueueChanged(Message):
    """The stored queue changed; the job list should be read again."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, QueueChanged)


@dataclass
class JobProgressed(Message):
    """A running job reported progress (high rate)."""

    event: ev.JobProgress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobProgressed) and message.event.job_id == self.event.job_id


@dataclass
class EngineEvent(Message):
    """Any other engine event (for the Events screen, checkpoints, notifications)."""

    event: ev.Event


@dataclass
class JobsLoaded(Message):
    """A fresh job list read from the store by a worker."""

    jobs: list[Job]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobsLoaded)


@dataclass
class MachineRead(Message):
    """A GPU, RAM and CPU reading (once a second)."""

    reading: MachineReading

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MachineRead)


@dataclass
class EngineStatusChanged(Message):
    """The engine was started, or found running elsewhere."""

    status: EngineStatus


@dataclass
class HistoryLoaded(Message):
    """Events logged before the app started (newest first)."""

    events: list[ev.Event]


@dataclass
class SeriesLoaded(Message):
    """The training curves of a job and, when overlaid, of its sweep siblings."""

    job_id: int
    series: dict[int, list[MetricPoint]]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SeriesLoaded) and message.job_id == self.job_id


@dataclass
class LogLoaded(Message):
    """The tail of a job's log."""

    job_id: int
    lines: list[str]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogLoaded) and message.job_id == self.job_id
