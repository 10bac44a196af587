"""Screen 1: the job table with a filter, and the selected job's detail below it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.events import Resize
from textual.timer import Timer
from textual.widgets import Input, Static

from loradeck.core.facade import MetricPoint, SubmitOutcome
from loradeck.core.jobview import one_line
from loradeck.core.models import Job, JobState
from loradeck.tui.base import Change, DeckBar, DeckFooter, DeckScreen, Missed, app_closing, set_text
from loradeck.tui.dialogs import SubmitDialog
from loradeck.tui.job_actions import JobActions
from loradeck.tui.job_detail import JobDetail
from loradeck.tui.job_table import JobTable
from loradeck.tui.state import ProgressView

#: The state filters `f` cycles through: (label, states shown; None for all).
STATE_FILTERS: tuple[tuple[str, frozenset[JobState] | None], ...] = (
    ("all", None),
    ("active", frozenset({JobState.RUNNING, JobState.PENDING, JobState.HELD})),
    ("running", frozenset({JobState.RUNNING})),
    ("queued", frozenset({JobState.PENDING})),
    ("held", frozenset({JobState.HELD})),
    ("failed", frozenset({JobState.FAILED, JobState.TIMEOUT})),
    ("completed", frozenset({JobState.COMPLETED})),
    ("cancelled", frozenset({JobState.CANCELLED})),
)
#: Seconds between redraws for progress events (they may come many times a second).
PROGRESS_FLUSH_S = 0.25
#: Seconds between reloads of the selected job's log and curve while it runs.
DETAIL_REFRESH_S = 2.0
#: The cursor must rest this long on a job before its curve and log are read, so that
#: moving through the table stays quick.
DETAIL_DELAY_S = 0.15


def matches(job: Job, text: str) -> bool:
    """Whether ``job`` matches the filter text: id, part of the name, user or a tag."""
    if not text:
        return True
    needle = text.casefold()
    return (
        needle == str(job.id)
        or needle in job.name.casefold()
        or needle == (job.user or "").casefold()
        or any(needle == tag.casefold() for tag in job.spec.tags)
    )


class JobsScreen(DeckScreen, JobActions):
    """The job table, its filter and the detail of the selected job."""

    MODE = "jobs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("f", "cycle_state", "State"),
        Binding("o", "toggle_overlay", "Overlay"),
        Binding("s", "submit", "Submit"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.state_filter = 0
        self.text_filter = ""
        self.overlay = False
        self._pending_progress: set[int] = set()
        self._flush_timer: Timer | None = None
        self._shown_id: int | None = None
        self._shown_key: tuple[int, JobState, int] | None = None
        self._detail_timer: Timer | None = None
        self._series: dict[int, list[MetricPoint]] = {}

    def compose(self) -> ComposeResult:
        yield DeckBar(self.MODE)
        with Horizontal(id="filter-bar"):
            yield Static("", id="filter-state", markup=False)
            yield Input(placeholder="/ to filter by id, name, user or tag", id="filter-text")
        yield JobTable(id="jobs")
        yield JobDetail(id="detail")
        yield DeckFooter()

    def on_mount(self) -> None:
        if app_closing(self):
            return
        self._show_filter()
        self.set_interval(DETAIL_REFRESH_S, self._refresh_detail_data)
        self.query_one(JobTable).focus()

    # ------------------------------------------------------------------ data

    def visible_jobs(self) -> list[Job]:
        states = STATE_FILTERS[self.state_filter][1]
        jobs = self.deck_app.deck.jobs
        return [
            jobs[i]
            for i in sorted(jobs)
            if (states is None or jobs[i].state in states) and matches(jobs[i], self.text_filter)
        ]

    def selected_job(self) -> Job | None:
        selected = self.query_one(JobTable).selected_id
        return None if selected is None else self.deck_app.deck.jobs.get(selected)

    def deck_changed(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        super().deck_changed(change, job_ids)
        if change == "jobs":
            first = not self.query_one(JobTable).row_count
            self._sync(first=first, changed=None if first else set(job_ids))
        elif change == "progress":
            self._pending_progress.update(job_ids)
            if self._flush_timer is None:
                self._flush_timer = self.set_timer(PROGRESS_FLUSH_S, self._flush_progress)

    def catch_up(self, missed: Missed) -> None:
        """Rewrite only the rows of the jobs that changed while hidden."""
        if "jobs" not in missed and "progress" not in missed:
            return
        changed: set[int] | None = set()
        for change in ("jobs", "progress"):
            if change in missed:
                ids = missed[change]
                changed = None if ids is None or changed is None else changed | ids
        self._sync(changed=changed)

    def _sync(
        self, *, first: bool = False, rebuild: bool = False, changed: set[int] | None = None
    ) -> None:
        table = self.query_one(JobTable)
        table.sync(self.visible_jobs(), self.deck_app.deck, rebuild=rebuild, changed=changed)
        if first:
            running = [j.id for j in self.visible_jobs() if j.state == JobState.RUNNING]
            if running:
                table.select_job(running[0])
        self._show_detail()

    def _flush_progress(self) -> None:
        self._flush_timer = None
        ids, self._pending_progress = self._pending_progress, set()
        table = self.query_one(JobTable)
        deck = self.deck_app.deck
        for job_id in ids:
            job = deck.jobs.get(job_id)
            if job is not None:
                table.refresh_job(job, deck)
        if self._shown_id in ids:
            self._show_detail()

    # ------------------------------------------------------------------ detail

    @on(JobTable.Selected)
    def _selected(self) -> None:
        self.action_open_job()

    @on(JobTable.Highlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        job = self.selected_job()
        deck = self.deck_app.deck
        detail = self.query_one(JobDetail)
        if job is None:
            detail.show_job(None, ProgressView(), "")
            self._shown_id = self._shown_key = None
            return
        reason = self.deck_app.reason_of(job)
        detail.show_job(job, deck.progress_of(job), reason, self.deck_app.facade.now())
        key = (job.id, job.state, job.attempts)
        if key != self._shown_key:
            # another job, or this one started, ended or began another attempt
            self._shown_id, self._shown_key = job.id, key
            if self._detail_timer is not None:
                self._detail_timer.stop()
            self._detail_timer = self.set_timer(DETAIL_DELAY_S, self._load_selected)

    def _load_selected(self) -> None:
        self._detail_timer = None
        job = self.selected_job()
        if job is not None and job.id == self._shown_id:
            self._load_detail_data(job)

    def _refresh_detail_data(self) -> None:
        job = self.selected_job()
        if job is not None and job.state == JobState.RUNNING and self.is_current:
            self._load_detail_data(job)

    def _load_detail_data(self, job: Job) -> None:
        facade = self.deck_app.facade
        siblings = self.deck_app.deck.siblings(job) if self.overlay else []

        def load() -> tuple[Job, list[MetricPoint], dict[str, list[MetricPoint]], list[str]]:
            series = facade.metric_series(job)
            others = {f"#{s.id}": facade.metric_series(s) for s in siblings}
            return job, series, others, facade.log_tail(job, 60)

        self.deck_app.call_blocking(
            load, self._detail_loaded, group="detail", exclusive=True, description="job detail"
        )

    def _detail_loaded(
        self, result: tuple[Job, list[MetricPoint], dict[str, list[MetricPoint]], list[str]]
    ) -> None:
        job, series, others, lines = result
        if job.id != self._shown_id:
            return
        detail = self.query_one(JobDetail)
        detail.show_series(job, series, others)
        detail.show_log(lines)

    # ------------------------------------------------------------------ keys

    def action_open_job(self) -> None:
        job = self.selected_job()
        if job is not None:
            from loradeck.tui.job_screen import JobScreen

            self.app.push_screen(JobScreen(job.id))

    def action_focus_filter(self) -> None:
        self.query_one("#filter-text", Input).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter-text", Input)
        if field.value or self.text_filter:
            field.value = ""
            self.text_filter = ""
            self._sync()
        self.query_one(JobTable).focus()

    def action_cycle_state(self) -> None:
        self.state_filter = (self.state_filter + 1) % len(STATE_FILTERS)
        self._show_filter()
        self._sync()

    def action_toggle_overlay(self) -> None:
        self.overlay = not self.overlay
        self.notify("overlaying the sweep's other jobs" if self.overlay else "overlay off")
        job = self.selected_job()
        if job is not None:
            self._load_detail_data(job)

    def action_submit(self) -> None:
        def submitted(outcome: SubmitOutcome | None) -> None:
            if outcome is not None:
                self.notify(one_line(outcome.message), title="submitted")

        self.app.push_screen(SubmitDialog(), submitted)

    @on(Input.Changed, "#filter-text")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.text_filter = event.value.strip()
        self._sync()

    @on(Input.Submitted, "#filter-text")
    def _filter_done(self) -> None:
        self.query_one(JobTable).focus()

    def _show_filter(self) -> None:
        label = STATE_FILTERS[self.state_filter][0]
        set_text(self.query_one("#filter-state", Static), f"state: {label} (f) ", fixed=False)

    def on_resize(self, event: Resize) -> None:
        if self.query_one(JobTable).fit_width(event.size.width):
            self._sync(rebuild=True)
