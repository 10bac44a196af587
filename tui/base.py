"""What every main screen shares: the top bar, navigation keys and the app's services."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from loradeck.core.models import JobState

if TYPE_CHECKING:
    from loradeck.tui.app import LoradeckApp

#: The main screens, in Tab order, with their number keys and titles.
SCREENS: tuple[tuple[str, str], ...] = (
    ("jobs", "Jobs"),
    ("gpus", "GPUs"),
    ("results", "Results"),
    ("events", "Events"),
)

Change = Literal["jobs", "progress", "events", "machine", "status"]


@dataclass
class WorkDone(Message):
    """A worker's result, handed to its callback on the UI thread."""

    callback: Callable[[Any], None]
    result: Any


class DeckBar(Static):
    """One line at the top: the screens (current one marked), job counts, engine banner."""

    def __init__(self, current: str) -> None:
        super().__init__("", markup=False)
        self.current = current

    def on_mount(self) -> None:
        self.refresh_bar()

    def refresh_bar(self) -> None:
        app = cast("LoradeckApp", self.app)
        text = Text(no_wrap=True, overflow="ellipsis")
        for number, (mode, title) in enumerate(SCREENS, 1):
            style = "reverse bold" if mode == self.current else ""
            text.append(f" {number} {title} ", style=style)
        counts = app.deck.counts()
        running = counts.get(JobState.RUNNING, 0)
        queued = counts.get(JobState.PENDING, 0)
        text.append(f"  {running} running · {queued} queued  ")
        text.append(app.deck.status.text, style="italic")
        self.update(text)


class DeckScreen(Screen[None]):
    """A main screen: Tab and 1-4 move between screens."""

    MODE: ClassVar[str] = "jobs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "app.next_screen(1)", "Next screen", show=False),
        Binding("shift+tab", "app.next_screen(-1)", "Previous screen", show=False),
    ]

    @property
    def deck_app(self) -> LoradeckApp:
        return cast("LoradeckApp", self.app)

    def deck_changed(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        """The app's state changed; redraw what depends on it."""
        if change in ("jobs", "status"):
            self.query_one(DeckBar).refresh_bar()

    def on_screen_resume(self) -> None:
        self.query_one(DeckBar).refresh_bar()
