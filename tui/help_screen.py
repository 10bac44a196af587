"""The help screen (``?``): every key of the screen it was opened from, and the app's."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Static

#: Keys that bindings do not list (they are the widgets' own).
EXTRA_KEYS: tuple[tuple[str, str], ...] = (
    ("↑ ↓ / j k", "move in a list"),
    ("Tab / Shift+Tab", "next / previous screen"),
    ("1 2 3 4", "Jobs, GPUs, Results, Events"),
    ("Ctrl+P", "command palette: every action by name"),
)


class HelpScreen(ModalScreen[None]):
    """A table of keys; any of Escape, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close"),
    ]

    def __init__(self, keys: list[tuple[str, str]], title: str) -> None:
        super().__init__()
        self.keys = keys
        self.title_text = title

    def compose(self) -> ComposeResult:
        table = Table(title=self.title_text, show_header=False, box=None, expand=False)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("does")
        seen: set[str] = set()
        for key, description in [*self.keys, *EXTRA_KEYS]:
            if description in seen:
                continue
            seen.add(description)
            table.add_row(key, description)
        with VerticalScroll(classes="dialog", id="help"):
            yield Static(table)
            yield Static("Escape closes this help.", classes="dialog-hint", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)


def loradeck_bindings(node: DOMNode) -> list[Binding]:
    """The bindings that loradeck's own classes give ``node`` (not Textual's widgets')."""
    out: list[Binding] = []
    for cls in reversed(type(node).__mro__):
        if cls.__module__.startswith("loradeck.") and "BINDINGS" in vars(cls):
            out.extend(Binding.make_bindings(vars(cls)["BINDINGS"]))
    return out


def help_keys(app: App[Any]) -> list[tuple[str, str]]:
    """(key, what it does) for every loradeck key of the focused widget, the screen and
    the app, in that order."""
    keys: list[tuple[str, str]] = []
    nodes: list[DOMNode] = []
    node: DOMNode | None = app.screen.focused
    while node is not None and node is not app.screen:
        nodes.append(node)
        node = node.parent
    for owner in (*nodes, app.screen, app):
        for binding in loradeck_bindings(owner):
            if binding.description:
                shown = binding.key_display or app.get_key_display(binding)
                keys.append((shown, binding.description))
    return keys
