"""The selected job: loss curve, learning rate, facts, why it waits or failed, log tail.

The widget only shows what it is given; the screen that owns it loads the series and
the log in workers and passes them in. ``-full`` (the job screen) adds the spec.
"""

from __future__ import annotations

import math
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from loradeck.core.facade import MetricPoint
from loradeck.core.jobview import elapsed, format_duration, job_details, one_line
from loradeck.core.models import Job, JobState
from loradeck.tui.base import set_text
from loradeck.tui.loss_plot import LossPlot
from loradeck.tui.state import ProgressView

_WHY_LABEL = {
    JobState.PENDING: "waiting",
    JobState.HELD: "held",
    JobState.FAILED: "failed",
    JobState.TIMEOUT: "timed out",
    JobState.CANCELLED: "cancelled",
}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def facts(job: Job, progress: ProgressView, reason: str, now: float) -> Text:
    """The few lines beside the plot (each fits 38 columns)."""
    text = Text()
    where = ""
    if job.gpu_ids:
        where = f" on GPU {','.join(map(str, job.gpu_ids))}"
    elif job.state == JobState.RUNNING:
        where = " on CPU"
    text.append(f"{job.state.value}{where}", style="bold")
    if job.attempts:
        text.append(f" (try {job.attempts}/{job.spec.retries + 1})")
    step = "-"
    if progress.step is not None:
        step = f"{progress.step}" + (f"/{progress.total_steps}" if progress.total_steps else "")
    eta = format_duration(progress.eta_s) if job.state == JobState.RUNNING else "-"
    vram = f" x {job.spec.vram_gb:g} GiB" if job.spec.vram_gb else ""
    text.append(f"\nstep {step}  loss {_fmt(progress.loss, '.4g')}")
    text.append(f"\nlr {_fmt(progress.lr, '.2e')}  eta {eta}")
    text.append(f"\nran {format_duration(elapsed(job, now))}  priority {job.priority}")
    text.append(f"\n{one_line(job.user or '-')}  {job.gpus} GPU{vram}")
    label = _WHY_LABEL.get(job.state)
    if label and reason:
        text.append(f"\n{label}: ", style="bold")
        text.append(one_line(reason))
    return text


class Facts(Widget):
    """Text of a fixed height: a new text repaints it without a layout pass (a Static's
    update re-lays out the screen, too costly several times a second)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text = Text()

    def show(self, text: Text) -> None:
        if text.plain != self._text.plain or text.spans != self._text.spans:
            self._text = text
            self.refresh()

    def render(self) -> Text:
        return self._text


class JobDetail(Widget):
    """Everything about one job that fits beside the table (or fills the job screen)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._log: list[str] = []
        self._shown: tuple[str, str] = ("", "")

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-title", markup=False)
        with Horizontal(id="detail-body"):
            yield LossPlot(id="loss-plot")
            with Vertical(id="detail-side"):
                yield Facts(id="detail-facts")
                with Horizontal(id="lr-row"):
                    yield Static("lr curve ", id="lr-label", markup=False)
                    yield Sparkline([], id="lr-spark")
                yield Static("", id="detail-log", markup=False)
        with VerticalScroll(id="detail-spec-box"):
            yield Static("", id="detail-spec", markup=False)

    def show_job(
        self, job: Job | None, progress: ProgressView, reason: str, now: float | None = None
    ) -> None:
        title = self.query_one("#detail-title", Static)
        if job is None:
            self._shown = ("", "")
            set_text(title, "no job selected")
            self.query_one(Facts).show(Text())
            return
        title_text = f"#{job.id} {one_line(job.name)}"
        at = time.time() if now is None else now
        text = facts(job, progress, reason, at)
        if (title_text, text.plain) == self._shown:
            return  # an update costs a layout pass: skip it when nothing changed
        set_text(title, title_text)
        self._shown = (title_text, text.plain)
        self.query_one(Facts).show(text)
        if self.has_class("-full"):
            spec = job_details(job)
            set_text(self.query_one("#detail-spec", Static), Text(spec), fixed=False)

    def show_series(
        self, job: Job, series: list[MetricPoint], others: dict[str, list[MetricPoint]]
    ) -> None:
        self.query_one(LossPlot).show(f"#{job.id} loss", series, others)
        lrs = [p.lr for p in series if p.lr is not None and math.isfinite(p.lr)]
        self.query_one("#lr-spark", Sparkline).data = lrs[-200:]

    def show_log(self, lines: list[str]) -> None:
        """The newest lines that fit (a tail shows its end)."""
        self._log = lines
        log = self.query_one("#detail-log", Static)
        height = max(1, log.size.height)
        set_text(log, Text("\n".join(lines[-height:]), no_wrap=True, overflow="ellipsis"))

    def on_resize(self) -> None:
        if self._log:
            self.call_after_refresh(self.show_log, self._log)
