"""Screen 2: a panel per GPU (utilisation and memory history, temperature, power, the
loradeck jobs and foreign processes on it) and one for system RAM and CPU."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.events import Resize
from textual.widgets import Footer, Sparkline, Static

from loradeck.core.facade import GpuPanel
from loradeck.core.gpu import GpuRing
from loradeck.core.jobview import one_line
from loradeck.tui.base import Change, DeckBar, DeckScreen

#: Temperatures (°C) from which a GPU's title is drawn warm or hot.
WARM_C = 70.0
HOT_C = 83.0
#: Width below which panels stack in one column.
NARROW = 100


def _values(series: Sequence[float | None]) -> list[float]:
    return [0.0 if value is None else value for value in series]


def gpu_title(panel: GpuPanel) -> str:
    gpu = panel.gpu
    parts = [f"GPU {gpu.index}", gpu.name]
    if gpu.temperature_c is not None:
        parts.append(f"{gpu.temperature_c:.0f}°C")
    if gpu.power_w is not None:
        limit = f"/{gpu.power_limit_w:.0f}" if gpu.power_limit_w else ""
        parts.append(f"{gpu.power_w:.0f}{limit} W")
    return " · ".join(parts)


def heat_class(panel: GpuPanel) -> str:
    temperature = panel.gpu.temperature_c
    if temperature is None:
        return "-cool"
    return "-hot" if temperature >= HOT_C else "-warm" if temperature >= WARM_C else "-cool"


class Meter(Horizontal):
    """A label, a sparkline of history and the latest value."""

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="meter")
        self.label = label

    def compose(self) -> ComposeResult:
        yield Static(self.label, classes="meter-label", markup=False)
        yield Sparkline([], classes="meter-spark")
        yield Static("", classes="meter-value", markup=False)

    def show(self, history: Sequence[float], value: str) -> None:
        self.query_one(Sparkline).data = list(history)[-240:]
        self.query_one(".meter-value", Static).update(value)


class GpuCard(Vertical):
    """One GPU."""

    def __init__(self, index: int) -> None:
        super().__init__(id=f"gpu-{index}", classes="card")
        self.index = index

    def compose(self) -> ComposeResult:
        yield Static("", classes="card-title", markup=False)
        yield Meter("util", id=f"util-{self.index}")
        yield Meter("mem ", id=f"mem-{self.index}")
        yield Static("", classes="card-jobs", markup=False)
        yield Static("", classes="card-foreign", markup=False)

    def show(self, panel: GpuPanel, ring: GpuRing | None) -> None:
        gpu = panel.gpu
        title = self.query_one(".card-title", Static)
        title.update(gpu_title(panel))
        for name in ("-hot", "-warm", "-cool"):
            self.set_class(name == heat_class(panel), name)
        util = _values(ring.series("utilization")) if ring else []
        memory = _values(ring.series("memory_used_gb")) if ring else []
        shown_util = "n/a" if gpu.utilization is None else f"{gpu.utilization:3.0f}%"
        self.query_one(f"#util-{self.index}", Meter).show(util, shown_util)
        self.query_one(f"#mem-{self.index}", Meter).show(
            memory, f"{gpu.memory_used_gb:.1f}/{gpu.memory_total_gb:.0f} GiB"
        )
        jobs = ", ".join(f"#{job_id} {one_line(name)}" for job_id, name in panel.jobs)
        self.query_one(".card-jobs", Static).update(f"jobs: {jobs or '-'}")
        if gpu.simulated:
            foreign = "foreign: - (simulated GPU)"
        else:
            procs = ", ".join(f"{p.pid} {p.name} {p.used_gb:.1f} GiB" for p in panel.foreign)
            foreign = f"foreign: {procs or 'none'}"
        self.query_one(".card-foreign", Static).update(foreign)


class SystemCard(Vertical):
    """System RAM and CPU."""

    def __init__(self) -> None:
        super().__init__(id="system", classes="card")

    def compose(self) -> ComposeResult:
        yield Static("System", classes="card-title", markup=False)
        yield Meter("ram ", id="ram")
        yield Meter("cpu ", id="cpu")


class GpusScreen(DeckScreen):
    """Every GPU and the machine."""

    MODE = "gpus"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._building = False

    def compose(self) -> ComposeResult:
        yield DeckBar(self.MODE)
        with VerticalScroll(id="gpus-scroll"):
            yield Static("", id="gpus-message", markup=False)
            yield Grid(id="gpu-grid")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._draw()

    def deck_changed(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        super().deck_changed(change, job_ids)
        if change == "machine":
            self._draw()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._draw()

    def on_resize(self, event: Resize) -> None:
        self.query_one("#gpu-grid", Grid).set_class(event.size.width < NARROW, "-narrow")

    async def _build_cards(self, indices: list[int]) -> None:
        grid = self.query_one("#gpu-grid", Grid)
        await grid.remove_children()
        await grid.mount_all([*(GpuCard(i) for i in indices), SystemCard()])
        self._building = False
        self._draw()

    def action_scroll(self, lines: int) -> None:
        self.query_one("#gpus-scroll", VerticalScroll).scroll_relative(y=lines, animate=False)

    def _draw(self) -> None:
        deck = self.deck_app.deck
        reading = deck.machine
        message = self.query_one("#gpus-message", Static)
        if reading is None:
            message.update("reading the GPUs…")
            return
        message.update(reading.message or "")
        message.display = bool(reading.message)
        grid = self.query_one("#gpu-grid", Grid)
        cards = {card.index: card for card in grid.query(GpuCard)}
        wanted = [panel.gpu.index for panel in reading.gpus]
        if sorted(cards) != sorted(wanted) or not grid.query(SystemCard):
            if not self._building:
                self._building = True
                self.call_later(self._build_cards, wanted)
            return
        for panel in reading.gpus:
            cards[panel.gpu.index].show(panel, deck.rings.get(panel.gpu.index))
        ram = f"{reading.ram_used_gb:.1f}/{reading.ram_total_gb:.0f} GiB"
        self.query_one("#ram", Meter).show(list(deck.ram), ram)
        self.query_one("#cpu", Meter).show(list(deck.cpu), f"{reading.cpu_percent:3.0f}%")
