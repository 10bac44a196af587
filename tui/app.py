"""The loradeck TUI: a Textual app over a :class:`~loradeck.core.facade.Facade`.

The app owns the state (:class:`~loradeck.tui.state.DeckState`), feeds it from the event
bridge and from workers, and tells the visible screen what changed. Every facade call
runs in a thread worker started by :meth:`LoradeckApp.call_blocking`; its result comes
back as a :class:`~loradeck.tui.base.WorkDone` message and its error as one notification.
"""

from __future__ import annotations

import logging
import os
import sys
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
from loradeck.core.facade import EngineStatus, Facade, FacadeMode, LiveFacade, SubmitOutcome
from loradeck.core.home import Home
from loradeck.core.models import Job, JobState
from loradeck.core.settings import Settings
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
from loradeck.tui.results_screen import ResultsScreen
from loradeck.tui.state import DeckState
from loradeck.tui.terminal import SystemTerminal, Terminal
from loradeck.tui.themes import APP_VARIABLES, THEME_ENV, ThemeCatalog, load_themes, next_theme

log = logging.getLogger(__name__)
T = TypeVar("T")

_SEVERITY = {"information": "information", "warning": "warning", "error": "error"}


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
        terminal: Terminal | None = None,
        environ: Mapping[str, str] | None = None,
        machine_interval: float = 1.0,
        demo_batch: Path | None = None,
    ) -> None:
        super().__init__()
        self.facade = facade
        self.deck = DeckState()
        self.catalog = themes or load_themes()
        self.wanted_theme = theme
        self.terminal: Terminal = terminal or SystemTerminal()
        self.environ: Mapping[str, str] = environ if environ is not None else os.environ
        self.machine_interval = machine_interval
        self.demo_batch = demo_batch
        self.exit_note: str | None = None
        self.closed = False
        self._bridge = EventBridge(facade.bus, self)
        self._loading = False
        self._reload_again = False
        self._reading = False
        for mode, screen in (
            ("jobs", JobsScreen),
            ("gpus", GpusScreen),
            ("results", ResultsScreen),
            ("events", EventsScreen),
        ):
            self.add_mode(mode, screen)
        for theme_obj in self.catalog.themes:
            self.register_theme(theme_obj)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(APP_VARIABLES)

    # ------------------------------------------------------------------ start

    def on_mount(self) -> None:
        name, note = self.catalog.pick(self.wanted_theme)
        self.theme = name
        problems = self.catalog.notification()
        if problems or note:
            text = "\n".join(part for part in (problems, note) if part)
            self.notify(text, title="themes", severity="warning", timeout=10)
        self.switch_mode("jobs")
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
        """Tell the visible screen what changed (others catch up when shown)."""
        try:
            screen = self.screen
        except ScreenStackError:
            return  # an engine event that arrived while the app is closing
        if isinstance(screen, DeckScreen):
            screen.deck_changed(change, job_ids)

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
        diff = self.deck.set_jobs(message.jobs)
        if diff or not message.jobs:
            self.tell("jobs", (*diff.added, *diff.changed, *diff.removed))
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
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_next_screen(self, step: int) -> None:
        modes = [mode for mode, _ in SCREENS]
        current = modes.index(self.current_mode) if self.current_mode in modes else 0
        self.switch_mode(modes[(current + step) % len(modes)])

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


def run_tui(
    home: Home,
    settings: Settings,
    *,
    gpus: str | None,
    tmux_session: str | None,
    tmux_socket: str | None,
    demo_batch: Path | None = None,
    config_path: Path | None = None,
) -> int:
    """Open the TUI on ``home``; returns the exit code. Raises LoradeckError for bad
    settings (unknown ``--gpus``, tmux missing) before the screen opens."""
    facade = LiveFacade(
        home,
        settings,
        gpus=gpus,
        tmux_session=tmux_session,
        tmux_socket=tmux_socket,
        config_path=config_path,
    )
    app = LoradeckApp(
        facade,
        theme=os.environ.get(THEME_ENV),
        machine_interval=settings.monitoring.gpu_sample_interval,
        demo_batch=demo_batch,
    )
    try:
        result = app.run()
    finally:
        if not app.closed:
            note = facade.close(keep_scheduling=False)
            app.exit_note = app.exit_note or note
    if app.exit_note:
        print(f"loradeck: {app.exit_note}", file=sys.stderr)
    return result if isinstance(result, int) else app.return_code or 0
