"""Helpers for the TUI tests: waiting on conditions inside a Pilot, a recording terminal."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from textual.app import App
from textual.pilot import Pilot

from loradeck.tui.app import LoradeckApp


async def until(
    pilot: Pilot[Any], predicate: Callable[[], object], what: str, timeout: float = 20.0
) -> Any:
    """Let the app run until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await pilot.pause(0.05)


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until the app has its data and every worker has finished."""
    app = pilot.app
    assert isinstance(app, LoradeckApp)
    await until(pilot, lambda: app.deck.loaded and app.deck.machine is not None, "first data")
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()
    await pilot.wait_for_scheduled_animations()


class RecordingTerminal:
    """Stands in for the terminal: records the tmux commands attach would run."""

    def __init__(self) -> None:
        self.handed_over: list[list[str]] = []
        self.ran: list[list[str]] = []

    def hand_over(self, app: App[Any], argv: Sequence[str], env: Mapping[str, str] | None) -> int:
        self.handed_over.append(list(argv))
        return 0

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None) -> int:
        self.ran.append(list(argv))
        return 0
