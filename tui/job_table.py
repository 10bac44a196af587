"""The jobs table: a line-API widget with one cached line per job.

A progress update rewrites one row's text and repaints that line only, so a thousand
jobs with eight of them reporting progress cost next to nothing; the cursor stays on its
job whatever is added, removed or filtered. State colours come from the theme through
component classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.events import Click
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from loradeck.core.jobview import format_duration, one_line
from loradeck.core.models import Job, JobState
from loradeck.tui.state import DeckState, ProgressView

COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"),
    ("name", "NAME"),
    ("state", "STATE"),
    ("gpus", "GPU"),
    ("bar", "PROG"),
    ("step", "STEP"),
    ("loss", "LOSS"),
    ("eta", "ETA"),
    ("pri", "PRI"),
    ("user", "USER"),
)
BAR_WIDTH = 6
#: Widths of every column but the name (content only; each column adds its gap).
FIXED_WIDTHS = {"id": 4, "state": 9, "gpus": 3, "bar": BAR_WIDTH, "step": 9, "loss": 6}
FIXED_WIDTHS |= {"eta": 6, "pri": 3, "user": 6}
#: Columns whose text is aligned right (numbers).
RIGHT = frozenset({"id", "step", "loss", "eta", "pri"})
#: Columns drawn in the job's state colour.
COLOURED = frozenset({"state", "bar"})
#: Spaces before each column: one when narrow (80 columns), two from this width on.
WIDE = 110
STATE_CLASS = {
    JobState.RUNNING: "job-table--running",
    JobState.PENDING: "job-table--queued",
    JobState.HELD: "job-table--held",
    JobState.COMPLETED: "job-table--completed",
    JobState.FAILED: "job-table--failed",
    JobState.TIMEOUT: "job-table--failed",
    JobState.CANCELLED: "job-table--cancelled",
}
STATE_LABEL = {JobState.PENDING: "QUEUED"}

Cells = tuple[str, ...]


def _bar(fraction: float | None, width: int = BAR_WIDTH) -> str:
    if fraction is None:
        return ""
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part and full < width else "")
    return text.ljust(width, "·")


def job_cells(job: Job, progress: ProgressView) -> Cells:
    """The row's text, one string per column (not yet fitted to widths)."""
    gpus = str(job.gpus) if job.gpus else "cpu"
    if job.gpu_ids:
        gpus = ",".join(map(str, job.gpu_ids))
    step = ""
    if progress.step is not None:
        total = f"/{progress.total_steps}" if progress.total_steps else ""
        step = f"{progress.step}{total}"
    fraction = 1.0 if job.state == JobState.COMPLETED else progress.fraction
    running = job.state == JobState.RUNNING
    return (
        str(job.id),
        one_line(job.name),
        STATE_LABEL.get(job.state, job.state.value),
        gpus,
        _bar(fraction) if running or job.state == JobState.COMPLETED else "",
        step,
        f"{progress.loss:.4g}" if progress.loss is not None else "",
        format_duration(progress.eta_s) if running and progress.eta_s else "",
        str(job.priority),
        one_line(job.user or "-"),
    )


class JobTable(ScrollView, can_focus=True):
    """The live job list: a header line and one line per job."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "job-table--header",
        "job-table--cursor",
        *STATE_CLASS.values(),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=False),
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
    ]

    cursor = reactive(0, always_update=True, repaint=False)
    """Index of the selected row."""

    @dataclass
    class Highlighted(Message):
        """The cursor moved to another job."""

        job_id: int | None

    @dataclass
    class Selected(Message):
        """Enter on a job."""

        job_id: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._order: list[int] = []
        self._index: dict[int, int] = {}
        self._cells: dict[int, Cells] = {}
        self._states: dict[int, JobState] = {}
        self._lines: dict[int, Strip] = {}
        self._name_width = 20
        self._gap = 1
        self._highlighted: int | None = None

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())

    # ------------------------------------------------------------------ geometry

    def fit_width(self, total: int) -> bool:
        """Give the name column what the other columns leave; True if it changed."""
        gap = 2 if total >= WIDE else 1
        # two columns for the vertical scrollbar
        rest = total - sum(FIXED_WIDTHS.values()) - gap * len(COLUMNS) - 2
        width = max(8, min(40, rest))
        if (width, gap) == (self._name_width, self._gap):
            return False
        self._name_width, self._gap = width, gap
        self._lines.clear()
        self.refresh()
        return True

    def _width(self, key: str) -> int:
        return self._name_width if key == "name" else FIXED_WIDTHS[key]

    def _update_size(self) -> None:
        width = sum(self._width(key) + self._gap for key, _ in COLUMNS)
        self.virtual_size = Size(width, len(self._order) + 1)

    # ------------------------------------------------------------------ rows

    @property
    def selected_id(self) -> int | None:
        if 0 <= self.cursor < len(self._order):
            return self._order[self.cursor]
        return None

    @property
    def row_count(self) -> int:
        return len(self._order)

    def row_text(self, job_id: int) -> Cells:
        """The row's text as shown (for tests and benchmarks)."""
        return self._cells[job_id]

    def select_job(self, job_id: int) -> None:
        """Put the cursor on ``job_id`` if it is shown."""
        index = self._index.get(job_id)
        if index is not None:
            self.cursor = index

    def sync(
        self,
        jobs: Sequence[Job],
        state: DeckState,
        *,
        rebuild: bool = False,
        changed: set[int] | None = None,
    ) -> None:
        """Show ``jobs`` in this order; only the lines whose text changed are repainted.
        ``changed`` (when the order stays) limits the rows looked at. The cursor stays on
        its job while that job is shown."""
        selected = self.selected_id
        order = [job.id for job in jobs]
        if rebuild:
            self._lines.clear()
        if order != self._order or rebuild:
            changed = None
            self._order = order
            self._index = {job_id: i for i, job_id in enumerate(order)}
            kept = set(order)
            for gone in [i for i in self._cells if i not in kept]:
                del self._cells[gone]
                self._states.pop(gone, None)
                self._lines.pop(gone, None)
            self._update_size()
            self.refresh()
        for job in jobs if changed is None else (j for j in jobs if j.id in changed):
            self.refresh_job(job, state)
        if selected is not None and selected in self._index:
            self.cursor = self._index[selected]
        else:
            self.cursor = min(self.cursor, max(0, len(order) - 1))

    def refresh_job(self, job: Job, state: DeckState) -> None:
        """Rewrite one row if its text changed, and repaint its line."""
        index = self._index.get(job.id)
        if index is None:
            return
        cells = job_cells(job, state.progress_of(job))
        if self._cells.get(job.id) == cells and self._states.get(job.id) == job.state:
            return
        self._cells[job.id] = cells
        self._states[job.id] = job.state
        self._lines.pop(job.id, None)
        self.refresh_line(index + 1)

    def _restyle(self) -> None:
        self._lines.clear()
        self.refresh()

    # ------------------------------------------------------------------ drawing

    def _fit(self, key: str, text: str) -> str:
        width = self._width(key)
        if len(text) > width:
            text = set_cell_size(text, width - 1) + "…" if width > 1 else text[:width]
        body = text.rjust(width) if key in RIGHT else set_cell_size(text, width)
        return " " * self._gap + body

    def _strip(self, cells: Cells, base: Style, coloured: Style) -> Strip:
        segments = [
            Segment(self._fit(key, cell), base + coloured if key in COLOURED else base)
            for (key, _), cell in zip(COLUMNS, cells, strict=True)
        ]
        return Strip(segments)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if y == 0:
            header = base + self.get_component_rich_style("job-table--header", partial=True)
            labels = tuple(label for _, label in COLUMNS)
            return self._strip(labels, header, Style()).extend_cell_length(width, header)
        index = int(self.scroll_offset.y) + y - 1
        if index >= len(self._order):
            return Strip.blank(width, base)
        job_id = self._order[index]
        selected = index == self.cursor
        line = None if selected else self._lines.get(job_id)
        if line is None:
            state = self._states.get(job_id, JobState.PENDING)
            coloured = self.get_component_rich_style(STATE_CLASS[state], partial=True)
            row_style = base
            if selected:
                cursor = self.get_component_rich_style("job-table--cursor", partial=True)
                row_style, coloured = base + cursor, Style(bold=True)
            cells = self._cells.get(job_id, ("",) * len(COLUMNS))
            line = self._strip(cells, row_style, coloured).extend_cell_length(width, row_style)
            if not selected:
                self._lines[job_id] = line
        return line.crop(0, width)

    # ------------------------------------------------------------------ cursor

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh_line(old + 1)
        self.refresh_line(new + 1)
        self._scroll_to_cursor()
        job_id = self.selected_id
        if job_id != self._highlighted:
            self._highlighted = job_id
            self.post_message(self.Highlighted(job_id))

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self._order) - 1))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False, immediate=True)

    def refresh_line(self, y: int) -> None:
        """Repaint line ``y`` (0 is the header, row i is line i + 1) if it is visible."""
        top = int(self.scroll_offset.y)
        if y == 0:
            self.refresh(Region(0, 0, self.size.width, 1))
        elif top < y <= top + self.size.height:
            self.refresh(Region(0, y - top, self.size.width, 1))

    def action_move(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(1, self.scrollable_content_region.height - 2)

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = len(self._order) - 1

    def action_open(self) -> None:
        job_id = self.selected_id
        if job_id is not None:
            self.post_message(self.Selected(job_id))

    def on_click(self, event: Click) -> None:
        if event.y >= 1:
            self.cursor = int(self.scroll_offset.y) + event.y - 1
