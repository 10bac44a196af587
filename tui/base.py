"""What every main screen shares: the top bar, the footer, navigation keys, catching up.

The four main screens are built once and kept (see :class:`~loradeck.tui.app.LoradeckApp`),
so switching screens costs only what the switch itself must: a layout of the screen
being shown and one frame. Everything else is kept cheap here:

* a hidden screen only *remembers* what changed (:meth:`DeckScreen.remember`) and brings
  itself up to date after its first frame is on the terminal (:meth:`DeckScreen.catch_up`);
* Textual restyles a whole screen when it is shown again and rebuilds its footer; neither
  is needed when nothing the styles or the keys depend on changed, so both are skipped
  then (:meth:`DeckScreen._styles_are_current`, :class:`DeckFooter`);
* one-line texts are updated without a layout pass (:func:`set_text`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from rich.text import Text
from textual import events, on
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.message import Message
from textual.screen import Screen
from textual.visual import VisualType
from textual.widgets import Footer, Static

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

#: What a screen missed while hidden: per kind of change, the job ids (None: all).
Missed = dict[Change, set[int] | None]
#: Textual's count of CSS updates, on the app and on each screen (the CSS a screen's
#: widgets were styled with).
_CSS_COUNT = "_css_update_count"


@dataclass
class WorkDone(Message):
    """A worker's result, handed to its callback on the UI thread."""

    callback: Callable[[Any], None]
    result: Any


def app_closing(node: DOMNode) -> bool:
    """Whether the app is shutting down. A screen built just before (the hidden ones are
    built right after start) may then get its mount event after its widgets are gone,
    and must not look for them."""
    return not node.app.is_running


def set_text(widget: Static, content: VisualType, *, fixed: bool = True) -> None:
    """Show ``content`` in ``widget`` unless it shows it already. ``fixed``: the widget's
    size does not depend on its text (a height set in CSS), so no layout pass is needed
    (a layout pass arranges the whole screen)."""
    if _same(widget.content, content):
        return
    widget.update(content, layout=not fixed)


def _same(shown: VisualType, wanted: VisualType) -> bool:
    if isinstance(shown, str) and isinstance(wanted, str):
        return shown == wanted
    if isinstance(shown, Text) and isinstance(wanted, Text):
        return shown.plain == wanted.plain and shown.spans == wanted.spans
    return False


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
        set_text(self, text)


FooterKeys = tuple[tuple[str, str, str, bool, str], ...]


def footer_keys(screen: Screen[Any]) -> FooterKeys:
    """What a footer on ``screen`` shows: (key, description, action, enabled, tooltip)."""
    return tuple(
        (binding.key, binding.description, binding.action, enabled, tooltip)
        for _node, binding, enabled, tooltip in screen.active_bindings.values()
        if binding.show or binding.action == "app.command_palette"
    )


class DeckFooter(Footer):
    """Textual's footer, rebuilt only when the keys it shows change.

    Textual's own footer removes and mounts all its keys whenever the screen's bindings
    may have changed, which includes every time the screen is shown again: tens of
    milliseconds per screen switch for the same keys."""

    def __init__(self) -> None:
        super().__init__(compact=True)
        self._composed: FooterKeys | None = None

    def compose(self) -> Any:
        if getattr(self, "_bindings_ready", True):
            self._composed = footer_keys(self.screen)
        return super().compose()

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if self._composed is not None and footer_keys(screen) == self._composed:
            return
        super().bindings_changed(screen)


class DeckScreen(Screen[None]):
    """A main screen: Tab and 1-4 move between screens."""

    MODE: ClassVar[str] = "jobs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "app.next_screen(1)", "Next screen", show=False),
        Binding("shift+tab", "app.next_screen(-1)", "Previous screen", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._missed: Missed = {}
        self._styled_with: int | None = None

    @property
    def deck_app(self) -> LoradeckApp:
        return cast("LoradeckApp", self.app)

    def deck_changed(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        """The app's state changed; redraw what depends on it (the screen is shown)."""
        if change in ("jobs", "status"):
            self.query_one(DeckBar).refresh_bar()

    def remember(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        """The app's state changed while this screen is hidden: note it for later."""
        ids = set(job_ids)
        if change not in self._missed:
            self._missed[change] = ids if ids else None
        else:
            known = self._missed[change]
            if known is not None and ids:
                known.update(ids)
            else:
                self._missed[change] = None

    def catch_up(self, missed: Missed) -> None:
        """Redraw what changed while hidden. Runs after the screen's first frame (which
        shows what it showed when it was hidden); by default every change is replayed."""
        for change, ids in missed.items():
            self.deck_changed(change, () if ids is None else ids)

    @on(events.Compose)
    def _note_stylesheet(self) -> None:
        self._styled_with = getattr(self.app, _CSS_COUNT, None)

    @on(events.Mount)
    def _join_app(self) -> None:
        self.deck_app.deck_screens.append(self)
        # Textual re-parses and re-applies all CSS the first time a screen is shown, as
        # it cannot tell whether the CSS changed since the screen was built (a tenth of a
        # second). Every widget here was styled with the CSS of when composing began; if
        # that is still the app's CSS, say so. (Fails safe: without the attribute, or
        # after a theme change meanwhile, Textual refreshes as it always does.)
        if self._styled_with is not None and self._styled_with == getattr(
            self.app, _CSS_COUNT, None
        ):
            setattr(self, _CSS_COUNT, self._styled_with)

    @on(events.Unmount)
    def _leave_app(self) -> None:
        if self in self.deck_app.deck_screens:
            self.deck_app.deck_screens.remove(self)

    @on(events.ScreenResume)
    def _styles_are_current(self, event: events.ScreenResume) -> None:
        # Textual restyles every widget of a screen shown again (tens of milliseconds).
        # The styles of a hidden screen are kept current already: class changes restyle
        # at once, and a new theme or CSS is applied by switch_mode before this.
        event.refresh_styles = False

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self._catch_up_now)

    def _catch_up_now(self) -> None:
        missed, self._missed = self._missed, {}
        if self.is_current:
            self.query_one(DeckBar).refresh_bar()
            self.catch_up(missed)
        else:  # hidden again before its first frame
            for change, ids in missed.items():
                self.remember(change, () if ids is None else ids)
