"""The command palette's loradeck commands: every key's action, by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from textual.app import SystemCommand
from textual.screen import Screen

from loradeck.tui.base import SCREENS
from loradeck.tui.job_actions import JobActions
from loradeck.tui.jobs_screen import JobsScreen

if TYPE_CHECKING:
    from loradeck.tui.app import LoradeckApp


def _show(app: LoradeckApp, mode: str) -> Callable[[], None]:
    return lambda: app.action_show_screen(mode)


def palette_commands(app: LoradeckApp, screen: Screen[Any]) -> Iterable[SystemCommand]:
    """The app's commands, and those of ``screen`` (the one under the palette)."""
    for mode, title in SCREENS:
        yield SystemCommand(f"{title} screen", f"Show the {title} screen", _show(app, mode))
    yield SystemCommand("Cycle theme", "Next loradeck theme (t)", app.action_cycle_theme)
    yield SystemCommand("Help", "Every key of this screen (?)", app.action_help)
    if isinstance(screen, JobsScreen):
        yield SystemCommand("Submit batch file", "Validate and submit (s)", screen.action_submit)
        yield SystemCommand("Filter jobs", "Filter by text (/)", screen.action_focus_filter)
        yield SystemCommand("State filter", "Cycle state filter (f)", screen.action_cycle_state)
    if isinstance(screen, JobActions):
        actions: tuple[tuple[str, str, Callable[[], object]], ...] = (
            ("Attach to job", "Show its tmux window (a)", screen.action_attach),
            ("Cancel job", "Cancel the selected job (c)", screen.action_cancel_job),
            ("Raise priority", "Priority + 1 (+)", lambda: screen.action_priority(1)),
            ("Lower priority", "Priority - 1 (-)", lambda: screen.action_priority(-1)),
            ("Hold or release job", "Toggle hold (h)", screen.action_hold),
            ("Retry job", "Queue a finished job again (r)", screen.action_retry),
            ("Evaluate job", "Score its checkpoints now (e)", screen.action_evaluate),
        )
        for title, help_text, action in actions:
            yield SystemCommand(title, help_text, action)
