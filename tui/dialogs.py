"""Modal dialogs: confirm, submit a batch file, and what to do on quit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from loradeck.core.errors import LoradeckError, ValidationError
from loradeck.core.facade import SubmitOutcome

if TYPE_CHECKING:
    from loradeck.tui.app import LoradeckApp

QuitChoice = Literal["keep", "stop", "stay"]


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no; Enter or y says yes, Escape or n says no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button(f"{self.no} (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class SubmitDialog(ModalScreen[SubmitOutcome | None]):
    """A batch file path; problems are listed under it and nothing is submitted."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    @dataclass
    class Failed(Message):
        problems: list[str]

    def __init__(self, start: str = "") -> None:
        super().__init__()
        self.start = start

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="submit-dialog"):
            yield Label("Submit a batch file (TOML or YAML)")
            yield Input(value=self.start, placeholder="path/to/batch.toml", id="submit-path")
            yield Static("", id="submit-problems", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Submit (Enter)", id="submit", variant="primary")
                yield Button("Close (Esc)", id="close")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#submit")
    def _submit(self) -> None:
        text = self.query_one(Input).value.strip()
        if not text:
            self._show(["give the path of a batch file"])
            return
        path = Path(text).expanduser()
        self._show([f"checking {path}…"], busy=True)
        host = cast("LoradeckApp", self.app)

        def submit() -> SubmitOutcome | None:
            try:
                return host.facade.submit_batch(path)
            except ValidationError as err:
                self.post_message(self.Failed(err.problems))
            except LoradeckError as err:
                self.post_message(self.Failed([f"{err.title}: {err.message}"]))
            return None

        host.call_blocking(submit, self._done, description=f"submit {path}")

    def _done(self, outcome: SubmitOutcome | None) -> None:
        if outcome is not None:
            self.dismiss(outcome)

    @on(Failed)
    def _failed(self, message: Failed) -> None:
        self._show(message.problems)

    def _show(self, problems: list[str], *, busy: bool = False) -> None:
        widget = self.query_one("#submit-problems", Static)
        widget.set_class(not busy and bool(problems), "-error")
        widget.update(Text("\n".join(problems)))


class QuitDialog(ModalScreen[QuitChoice]):
    """Jobs are queued: keep scheduling them headless, or stop scheduling."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "choose('keep')", "Keep running"),
        Binding("s", "choose('stop')", "Stop scheduling"),
        Binding("escape", "choose('stay')", "Stay"),
    ]

    def __init__(self, queued: int, session: str) -> None:
        super().__init__()
        self.queued = queued
        self.session = session

    def compose(self) -> ComposeResult:
        jobs = f"{self.queued} job{'s' if self.queued != 1 else ''}"
        text = (
            f"{jobs} still queued. Running jobs continue either way.\n\n"
            f"Keep the engine running headless in tmux (session {self.session}) so the "
            "queue keeps starting jobs, or stop scheduling until loradeck runs again?"
        )
        with Vertical(classes="dialog"):
            yield Static(text, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Keep running (k)", id="keep", variant="primary")
                yield Button("Stop scheduling (s)", id="stop", variant="warning")
                yield Button("Stay (Esc)", id="stay")

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    def action_choose(self, choice: QuitChoice) -> None:
        self.dismiss(choice)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        choice = event.button.id
        self.dismiss(choice if choice in ("keep", "stop") else "stay")  # type: ignore[arg-type]
