"""The job screen (Enter on a job): its curve, facts, log and spec on the whole screen."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from loradeck.core.facade import MetricPoint
from loradeck.core.models import Job, JobState
from loradeck.tui.base import Change, DeckBar, DeckFooter, DeckScreen, app_closing
from loradeck.tui.job_actions import JobActions
from loradeck.tui.job_detail import JobDetail
from loradeck.tui.state import ProgressView

REFRESH_S = 2.0


class JobScreen(DeckScreen, JobActions):
    """One job in full; Escape goes back to the table."""

    MODE = "jobs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "back", "Back"),
        Binding("o", "toggle_overlay", "Overlay"),
    ]

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.overlay = False

    def compose(self) -> ComposeResult:
        yield DeckBar(self.MODE)
        yield JobDetail(id="detail", classes="-full")
        yield DeckFooter()

    def on_mount(self) -> None:
        if app_closing(self):
            return
        self.query_one("#detail-spec-box").focus()  # arrows scroll the spec
        self._show()
        self._load()
        self.set_interval(REFRESH_S, self._tick)

    def selected_job(self) -> Job | None:
        return self.deck_app.deck.jobs.get(self.job_id)

    def deck_changed(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        super().deck_changed(change, job_ids)
        if change == "jobs" or (change == "progress" and self.job_id in set(job_ids)):
            self._show()

    def _show(self) -> None:
        job = self.selected_job()
        detail = self.query_one(JobDetail)
        if job is None:
            detail.show_job(None, ProgressView(), "")
            return
        deck = self.deck_app.deck
        detail.show_job(
            job, deck.progress_of(job), self.deck_app.reason_of(job), self.deck_app.facade.now()
        )

    def _tick(self) -> None:
        job = self.selected_job()
        if job is not None and job.state == JobState.RUNNING and self.is_current:
            self._load()

    def _load(self) -> None:
        job = self.selected_job()
        if job is None:
            return
        facade = self.deck_app.facade
        siblings = self.deck_app.deck.siblings(job) if self.overlay else []

        def load() -> tuple[Job, list[MetricPoint], dict[str, list[MetricPoint]], list[str]]:
            others = {f"#{s.id}": facade.metric_series(s) for s in siblings}
            return job, facade.metric_series(job), others, facade.log_tail(job, 400)

        self.deck_app.call_blocking(
            load, self._loaded, group="job-screen", exclusive=True, description="job screen"
        )

    def _loaded(
        self, result: tuple[Job, list[MetricPoint], dict[str, list[MetricPoint]], list[str]]
    ) -> None:
        job, series, others, lines = result
        detail = self.query_one(JobDetail)
        detail.show_series(job, series, others)
        detail.show_log(lines)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_overlay(self) -> None:
        self.overlay = not self.overlay
        self._load()
