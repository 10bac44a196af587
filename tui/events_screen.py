"""Screen 4: the event log, newest first."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.timer import Timer
from textual.widgets import DataTable

from loradeck.core import events as ev
from loradeck.tui.base import Change, DeckBar, DeckFooter, DeckScreen, Missed, app_closing

#: Rows shown (the newest).
SHOWN = 500
REDRAW_S = 0.5


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
        yield DeckFooter()

    def on_mount(self) -> None:
        if app_closing(self):
            return
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

    def catch_up(self, missed: Missed) -> None:
        if "events" in missed:
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
                ev.describe_event(event),
            )
