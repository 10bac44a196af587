"""The loradeck TUI: a Textual app over a :class:`~loradeck.core.facade.Facade`.

The app owns the state (:class:`~loradeck.tui.state.DeckState`), feeds it from the event
bridge and from workers, and tells the visible screen what changed. Every facade call
runs in a thread worker started by :meth:`LoradeckApp.call_blocking`; its result comes
back as a :class:`~loradeck.tui.base.WorkDone` message and its error as one notification.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from textual import on
from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from loradeck.core import events as ev
from loradeck.core.errors import LoradeckError
from loradeck.core.facade import EngineStatus, Facade, FacadeMode, SubmitOutcome
from loradeck.core.models import Job, JobState
from loradeck.tui.base import SCREENS, Change, DeckScreen, WorkDone
from loradeck.tui.bridge import EventBridge
from loradeck.tui.commands import palette_commands
from loradeck.tui.dialogs import QuitChoice, QuitDialog
from loradeck.tui.events_screen import EventsScreen
from loradeck.tui.gpus_screen import GpusScreen
from loradeck.tui.help_screen import HelpScreen, help_keys
from loradeck.tui.jobs_screen import JobsScreen
from loradeck.tui.messages import (
    EngineEvent,
    EngineStatusChanged,
    HistoryLoaded,
    JobProgressed,
    JobsLoaded,
    MachineRead,
    QueueChanged,
)
from loradeck.tui.navigation import Navigator
from loradeck.tui.results_screen import ResultsScreen
from loradeck.tui.state import DeckState
from loradeck.tui.terminal import SystemTerminal, Terminal
from loradeck.tui.themes import (
    APP_VARIABLES,
    ThemeCatalog,
    load_themes,
    next_theme,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_SEVERITY = {"information": "information", "warning": "warning", "error": "error"}

#: The main screens by mode; each is built on its first visit and then kept.
MAIN_SCREENS: Mapping[str, type[DeckScreen]] = {
    "jobs": JobsScreen,
    "gpus": GpusScreen,
    "results": ResultsScreen,
    "events": EventsScreen,
}


class LoradeckApp(App[int]):
    """Jobs, GPUs, results and events of one loradeck home."""

    # absolute: Textual resolves a relative path beside the module of a subclass
    CSS_PATH = Path(__file__).with_name("loradeck.tcss")
    TITLE = "loradeck"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(str(n), f"show_screen('{mode}')", title, show=False)
            for n, (mode, title) in enumerate(SCREENS, 1)
        ),
        Binding("t", "cycle_theme", "Theme"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        facade: Facade,
        *,
        themes: ThemeCatalog | None = None,
        theme: str | None = None,
        theme_source: str = "",
        terminal: Terminal | None = None,
        environ: Mapping[str, str] | None = None,
        machine_interval: float = 1.0,
        demo_batch: Path | None = None,
        freeze_gc: bool = False,
    ) -> None:
        """``theme`` is the theme to start with and ``theme_source`` who asked for it (for
        the note when it cannot be used; see :func:`~loradeck.tui.themes.starting_theme`).
        ``freeze_gc`` (the real app, not tests): once the first jobs are shown, exempt
        everything loaded so far from the garbage collector's full passes, which
        otherwise walk every loaded job and stall keys for a tenth of a second."""
        super().__init__()
        self.facade = facade
        self.deck = DeckState()
        self.catalog = themes or load_themes()
        self.wanted_theme = theme
        self.theme_source = theme_source
        self.terminal: Terminal = terminal or SystemTerminal()
        self.environ: Mapping[str, str] = environ if environ is not None else os.environ
        self.machine_interval = machine_interval
        self.demo_batch = demo_batch
        self.freeze_gc = freeze_gc
        self.exit_note: str | None = None
        self.closed = False
        self._bridge = EventBridge(facade.bus, self)
        self._loading = False
        self._reload_again = False
        self._reading = False
        self.deck_screens: list[DeckScreen] = []
        """Every mounted main screen (and job screen), shown or hidden."""
        for mode, screen in MAIN_SCREENS.items():
            self.add_mode(mode, screen)
        self.navigator = Navigator(self, [mode for mode, _ in SCREENS])
        for theme_obj in self.catalog.themes:
            self.register_theme(theme_obj)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(APP_VARIABLES)

    # ------------------------------------------------------------------ start

    def on_mount(self) -> None:
        name, note = self.catalog.pick(self.wanted_theme, self.theme_source)
        self.theme = name
        problems = self.catalog.notification()
        if problems or note:
            text = "\n".join(part for part in (problems, note) if part)
            self.notify(text, title="themes", severity="warning", timeout=10)
        self.navigator.show("jobs")
        self._bridge.start()
        self.call_blocking(
            self.facade.start, self._started, group="start", description="start the engine"
        )

    def _started(self, status: EngineStatus) -> None:
        self.post_message(EngineStatusChanged(status))
        self.reload_jobs()
        facade = self.facade
        self.call_blocking(
            lambda: HistoryLoaded(facade.recent_events()),
            self.post_message,
            description="read the event log",
        )
        self.read_machine()
        self.set_interval(self.machine_interval, self.read_machine)
        if self.demo_batch is not None:
            batch = self.demo_batch
            self.call_blocking(
                lambda: facade.submit_batch(batch, resume=True),
                self._demo_submitted,
                description="submit the demo batch",
            )

    def _demo_submitted(self, outcome: SubmitOutcome) -> None:
        self.notify(outcome.message, title="demo")

    # ------------------------------------------------------------------ workers

    def call_blocking(
        self,
        fn: Callable[[], T],
        done: Callable[[T], Any] | None = None,
        *,
        group: str = "default",
        exclusive: bool = False,
        description: str = "",
    ) -> Worker[T]:
        """Run ``fn`` in a thread; ``done(result)`` then runs on the UI thread."""

        def work() -> T:
            result = fn()
            if done is not None:
                self.post_message(WorkDone(done, result))
            return result

        return self.run_worker(
            work,
            group=group,
            exclusive=exclusive,
            thread=True,
            exit_on_error=False,
            description=description or group,
        )

    @on(WorkDone)
    def _work_done(self, message: WorkDone) -> None:
        owner = getattr(message.callback, "__self__", None)
        if isinstance(owner, DOMNode) and owner is not self and not owner.is_attached:
            return  # its screen was closed while the work ran
        message.callback(message.result)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state not in (WorkerState.ERROR, WorkerState.CANCELLED):
            return
        group = event.worker.group
        if group == "jobs":
            self._loading = False
        elif group == "machine":
            self._reading = False
        error = event.worker.error
        if event.state == WorkerState.CANCELLED or error is None:
            return
        if group == "start":
            # nothing works without the store: say so where the engine's state is shown
            why = error.message if isinstance(error, LoradeckError) else str(error)
            self.deck.status = EngineStatus(FacadeMode.STARTING, f"cannot start: {why}")
            self.tell("status")
        if isinstance(error, LoradeckError):
            self.notify(error.message, title=error.title, severity="error", timeout=8)
        else:
            log.error("%s failed", event.worker.description, exc_info=error)
            self.notify(
                f"{type(error).__name__}: {error}",
                title=f"{event.worker.description} failed",
                severity="error",
                timeout=8,
            )

    # ------------------------------------------------------------------ state

    def tell(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        """Tell the visible screen what changed; hidden ones note it and catch up when
        they are shown again."""
        try:
            current = self.screen
        except ScreenStackError:
            return  # an engine event that arrived while the app is closing
        ids = tuple(job_ids)
        for screen in self.deck_screens:
            if screen is current:
                screen.deck_changed(change, ids)
            else:
                screen.remember(change, ids)

    def reload_jobs(self) -> None:
        """Read the job list again (at most one read at a time; one more if asked meanwhile)."""
        if self._loading:
            self._reload_again = True
            return
        self._loading = True
        facade = self.facade
        self.call_blocking(
            lambda: JobsLoaded(facade.jobs()), self.post_message, group="jobs", description="jobs"
        )

    def read_machine(self) -> None:
        if self._reading:
            return
        self._reading = True
        facade = self.facade
        self.call_blocking(
            lambda: MachineRead(facade.read_machine()),
            self.post_message,
            group="machine",
            description="read the GPUs",
        )

    def reason_of(self, job: Job) -> str:
        return self.facade.pending_reason(job)

    @on(EngineStatusChanged)
    def _status(self, message: EngineStatusChanged) -> None:
        self.deck.status = message.status
        self.tell("status")

    @on(QueueChanged)
    def _queue_changed(self) -> None:
        self.reload_jobs()

    @on(JobsLoaded)
    def _jobs_loaded(self, message: JobsLoaded) -> None:
        self._loading = False
        first = not self.deck.loaded
        diff = self.deck.set_jobs(message.jobs)
        if diff or not message.jobs:
            self.tell("jobs", (*diff.added, *diff.changed, *diff.removed))
        if first:  # once the table is drawn, build the other screens unseen
            self.call_after_refresh(self.navigator.build_hidden)
            if self.freeze_gc:
                self.call_after_refresh(gc.freeze)
        if self._reload_again:
            self._reload_again = False
            self.reload_jobs()

    @on(JobProgressed)
    def _progressed(self, message: JobProgressed) -> None:
        if self.deck.apply_progress(message.event):
            self.tell("progress", (message.event.job_id,))

    @on(EngineEvent)
    def _engine_event(self, message: EngineEvent) -> None:
        event = message.event
        self.deck.add_events([event])
        if isinstance(event, ev.EngineMessage):
            severity = _SEVERITY.get(event.severity, "information")
            self.notify(event.message, title="engine", severity=severity)  # type: ignore[arg-type]
        self.tell("events")

    @on(HistoryLoaded)
    def _history(self, message: HistoryLoaded) -> None:
        self.deck.add_events(reversed(message.events))
        self.tell("events")

    @on(MachineRead)
    def _machine(self, message: MachineRead) -> None:
        self._reading = False
        self.deck.add_reading(message.reading)
        self.tell("machine")

    # ------------------------------------------------------------------ keys

    def action_show_screen(self, mode: str) -> None:
        self.navigator.show(mode)

    def action_next_screen(self, step: int) -> None:
        self.navigator.step(step)

    def delay_update(self, delay: float = 0.05) -> None:
        """Textual holds back the frame after a screen switch to hide a screen still
        being composed; a main screen built before has nothing to hide."""
        if not self.navigator.quick:
            super().delay_update(delay)

    def action_cycle_theme(self) -> None:
        self.theme = next_theme(self.catalog.names, self.theme)
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_help(self) -> None:
        title = next((t for m, t in SCREENS if m == self.current_mode), "loradeck")
        self.push_screen(HelpScreen(help_keys(self), f"{title} keys"))

    async def action_quit(self) -> None:
        status = self.deck.status
        queued = self.deck.counts().get(JobState.PENDING, 0)
        if status.mode == FacadeMode.HOSTING and queued:
            session = getattr(self.facade, "tmux_session", "loradeck")
            self.push_screen(QuitDialog(queued, str(session)), self._quit_answer)
            return
        self.shut_down(keep_scheduling=False)

    def _quit_answer(self, choice: QuitChoice | None) -> None:
        if choice in ("keep", "stop"):
            self.shut_down(keep_scheduling=choice == "keep")

    def shut_down(self, *, keep_scheduling: bool) -> None:
        """Stop following (and a hosted engine), then exit."""
        self.notify("stopping…", timeout=30)
        self.navigator.stopped = True
        self._bridge.stop()
        self.call_blocking(
            lambda: self.facade.close(keep_scheduling=keep_scheduling),
            self._on_closed,
            group="close",
            exclusive=True,
            description="stop the engine",
        )

    def _on_closed(self, note: str) -> None:
        self.closed = True
        self.exit_note = note
        self.exit(0)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self, screen)
