"""Screen 3: the checkpoint leaderboard.

Scores come from checkpoint evaluation; until a checkpoint is scored it is listed as the
logs reported it (newest first), so a sweep's checkpoints are visible at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from loradeck.core.facade import CheckpointEntry
from loradeck.core.jobview import one_line
from loradeck.tui.base import Change, DeckBar, DeckFooter, DeckScreen, Missed, app_closing, set_text

#: Seconds between reloads of the leaderboard while the screen is shown.
RELOAD_S = 10.0
#: Short names of the metrics column.
SHORT = {"clip_score": "clip", "consistency": "cons", "sharpness": "sharp", "val_loss": "val"}


def ranked(entries: Iterable[CheckpointEntry]) -> list[CheckpointEntry]:
    """Scored checkpoints by group and rank, then unscored ones newest first."""
    scored = sorted(
        (e for e in entries if e.score is not None), key=lambda e: (e.group, e.rank or 0)
    )
    unscored = sorted((e for e in entries if e.score is None), key=lambda e: -e.at)
    return scored + unscored


def metrics_text(entry: CheckpointEntry) -> str:
    return " ".join(
        f"{SHORT.get(name, name)} {value:.3g}" for name, value in entry.metrics if value is not None
    )


class ResultsScreen(DeckScreen):
    """Checkpoints of every job, best first once evaluated."""

    MODE = "results"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor(1)", "Down", show=False),
        Binding("k", "cursor(-1)", "Up", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: list[CheckpointEntry] = []

    def compose(self) -> ComposeResult:
        yield DeckBar(self.MODE)
        yield Static("", id="results-note", markup=False)
        yield DataTable(id="results", cursor_type="row")
        yield DeckFooter()

    def on_mount(self) -> None:
        if app_closing(self):
            return
        table = self.query_one(DataTable)
        for key, label in (
            ("rank", "#"),
            ("score", "SCORE"),
            ("job", "JOB"),
            ("name", "NAME"),
            ("step", "STEP"),
            ("file", "CHECKPOINT"),
            ("metrics", "METRICS"),
            ("at", "SAVED"),
        ):
            table.add_column(label, key=key)
        self._draw()
        self.set_interval(RELOAD_S, self._reload)
        table.focus()

    def deck_changed(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        super().deck_changed(change, job_ids)
        if change == "events":
            self._draw()

    def catch_up(self, missed: Missed) -> None:
        if "events" in missed:
            self._draw()
        self._reload()

    def _reload(self) -> None:
        if self.is_current:
            self.deck_app.call_blocking(
                self.deck_app.facade.checkpoints,
                self._loaded,
                group="results",
                exclusive=True,
                description="read the leaderboard",
            )

    def _loaded(self, entries: list[CheckpointEntry]) -> None:
        self.deck_app.deck.checkpoints = entries
        self._draw()

    def action_cursor(self, delta: int) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(row=table.cursor_row + delta)

    def _draw(self) -> None:
        entries = ranked(self.deck_app.deck.checkpoints)
        scored = sum(e.score is not None for e in entries)
        note = f"{len(entries)} checkpoints"
        if scored:
            note += f", {scored} scored (* best of its sweep)"
        if len(entries) > scored:
            note += "; e on a job scores its checkpoints"
        set_text(self.query_one("#results-note", Static), note)
        if entries == self._shown:
            return
        self._shown = entries
        table = self.query_one(DataTable)
        table.clear()
        for entry in entries:
            best = "*" if entry.best else ""
            table.add_row(
                f"{entry.rank}{best}" if entry.rank is not None else "",
                f"{entry.score:.3f}" if entry.score is not None else "-",
                str(entry.job_id),
                one_line(entry.job_name)[:32],
                str(entry.step) if entry.step is not None else "-",
                one_line(Path(entry.path).name)[:40],
                metrics_text(entry),
                time.strftime("%H:%M:%S", time.localtime(entry.at)) if entry.at else "-",
                key=entry.path,
            )
