"""Screen 4: the event log, newest first."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.timer import Timer
from textual.widgets import DataTable, Footer

from loradeck.core import events as ev
from loradeck.core.jobview import format_duration, one_line
from loradeck.tui.base import Change, DeckBar, DeckScreen

#: Rows shown (the newest).
SHOWN = 500
REDRAW_S = 0.5


def describe(event: ev.Event) -> str:
    """The event in words."""
    if isinstance(event, ev.EngineMessage):
        return f"{event.severity}: {event.message}"
    if not isinstance(event, ev.JobEvent):
        return event.kind.replace("_", " ")
    who = f"job {event.job_id} {one_line(event.name)}"
    if isinstance(event, ev.JobStarted):
        where = f"GPU {','.join(map(str, event.gpu_ids))}" if event.gpu_ids else "CPU"
        return f"{who} started on {where} (attempt {event.attempt})"
    if isinstance(event, ev.JobCompleted):
        return f"{who} completed in {format_duration(event.runtime_s)}"
    if isinstance(event, ev.JobFailed):
        return f"{who} {event.state.lower()}: {one_line(event.reason)}"
    if isinstance(event, ev.JobCancelled | ev.JobHeld):
        verb = "cancelled" if isinstance(event, ev.JobCancelled) else "held"
        return f"{who} {verb}: {one_line(event.reason)}"
    if isinstance(event, ev.JobRetrying):
        return f"{who} will retry (attempt {event.attempt}): {one_line(event.reason)}"
    if isinstance(event, ev.JobWarning):
        return f"{who} warning: {one_line(event.message)}"
    if isinstance(event, ev.CheckpointSaved):
        return f"{who} saved {one_line(event.path)}"
    if isinstance(event, ev.JobAdopted):
        return f"{who} is still running; followed again"
    return f"{who} {event.kind.removeprefix('job_').replace('_', ' ')}"


class EventsScreen(DeckScreen):
    """Everything the engine logged."""

    MODE = "events"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor(1)", "Down", show=False),
        Binding("k", "cursor(-1)", "Up", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[ev.Event, ...] = ()
        self._redraw: Timer | None = None

    def compose(self) -> ComposeResult:
        yield DeckBar(self.MODE)
        yield DataTable(id="events", cursor_type="row")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("TIME", key="time")
        table.add_column("EVENT", key="kind")
        table.add_column("JOB", key="job")
        table.add_column("WHAT", key="what")
        self._draw()
        table.focus()

    def deck_changed(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        super().deck_changed(change, job_ids)
        if change == "events" and self._redraw is None:
            self._redraw = self.set_timer(REDRAW_S, self._draw)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._draw()

    def action_cursor(self, delta: int) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(row=table.cursor_row + delta)

    def _draw(self) -> None:
        self._redraw = None
        events = tuple(list(self.deck_app.deck.events)[:SHOWN])
        if events == self._shown:
            return
        self._shown = events
        table = self.query_one(DataTable)
        table.clear()
        for event in events:
            job = str(event.job_id) if isinstance(event, ev.JobEvent) else ""
            table.add_row(
                time.strftime("%H:%M:%S", time.localtime(event.at)),
                event.kind.replace("_", " "),
                job,
                describe(event),
            )
