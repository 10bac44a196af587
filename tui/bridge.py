"""The one place where core events become Textual messages.

The engine publishes on its own thread; ``post_message`` is thread-safe, so the bridge
only picks the message type. High-rate events (progress) become messages that replace
each other in the queue; GPU samples are dropped (the app reads the machine itself, and
they are not for the event log).
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message_pump import MessagePump

from loradeck.core import events as ev
from loradeck.tui.messages import EngineEvent, JobProgressed, QueueChanged


class EventBridge:
    """Subscribes to a bus and posts each event to ``target`` as a message."""

    def __init__(self, bus: ev.EventBus, target: MessagePump) -> None:
        self._bus = bus
        self._target = target
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self._bus.subscribe(self._on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.JobProgress):
            self._target.post_message(JobProgressed(event))
        elif isinstance(event, ev.QueueChanged):
            self._target.post_message(QueueChanged())
        elif isinstance(event, ev.GpuSampled):
            return
        else:
            self._target.post_message(EngineEvent(event))
            if isinstance(event, ev.JobEvent):
                # a job's state changed: the row must follow even if no QueueChanged comes
                self._target.post_message(QueueChanged())
