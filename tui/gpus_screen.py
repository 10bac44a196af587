"""Screen 2: a panel per GPU (utilisation and memory history, temperature, power, the
loradeck jobs and foreign processes on it) and one for system RAM and CPU. In Slurm mode
a panel per node of the cluster instead (GPUs, CPUs and memory Slurm gave out, its
state, the loradeck jobs Slurm runs on it), since the GPUs are the cluster's.

Panels keep the data they were last given and draw it once they are composed, so a
reading that arrives while they are still being mounted is never lost or misapplied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical, VerticalScroll
from textual.events import Resize
from textual.renderables.sparkline import Sparkline as SparklineRenderable
from textual.widget import Widget
from textual.widgets import Static

from loradeck.core.facade import GpuPanel, MachineReading, NodePanel
from loradeck.core.gpu import GpuRing
from loradeck.core.jobview import one_line
from loradeck.tui.base import Change, DeckBar, DeckFooter, DeckScreen, Missed, app_closing, set_text
from loradeck.tui.state import NodeRing

#: Temperatures (°C) from which a GPU's title is drawn warm or hot.
WARM_C = 70.0
HOT_C = 83.0
#: Width below which panels stack in one column.
NARROW = 100
#: Node states (sinfo's words, any suffix) drawn hot: the node takes no jobs.
NODE_DOWN = ("down", "drain", "fail", "inval", "not_responding", "unknown")
#: Samples of history a meter shows.
SHOWN_SAMPLES = 240
#: Columns of a meter's label and of its value.
LABEL_WIDTH = 5
VALUE_WIDTH = 16
HEAT_CLASSES = ("-hot", "-warm", "-cool")


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


def node_title(node: NodePanel) -> str:
    parts = [node.name, node.state or "?"]
    if node.partition:
        parts.append(f"partition {node.partition}")
    if node.gres:
        parts.append(node.gres)
    return " · ".join(parts)


def node_class(node: NodePanel) -> str:
    """Hot when the node takes no jobs, warm when all its GPUs are given out."""
    state = node.state.lower()
    if any(word in state for word in NODE_DOWN):
        return "-hot"
    if node.gpus_total and node.gpus_used >= node.gpus_total:
        return "-warm"
    return "-cool"


def jobs_line(jobs: Sequence[tuple[int, str]]) -> str:
    return "jobs: " + (", ".join(f"#{job_id} {one_line(name)}" for job_id, name in jobs) or "-")


def cluster_summary(reading: MachineReading) -> str:
    """One line over the node panels: what they are and how busy."""
    nodes = reading.nodes
    used = sum(n.gpus_used for n in nodes)
    total = sum(n.gpus_total for n in nodes)
    count = f"{len(nodes)} node" + ("" if len(nodes) == 1 else "s")
    return f"{reading.cluster}: {count}, {used}/{total} GPUs given out (sinfo)"


class Meter(Widget):
    """One line: a label, a sparkline of history and the latest value.

    One widget rather than three: a GPU screen has a dozen meters, and each widget costs
    its share of every layout and of the first drawing of the screen."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "meter--label",
        "meter--min-color",
        "meter--max-color",
    }

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self._history: list[float] = []
        self._value = ""

    def show(self, history: Sequence[float], value: str) -> None:
        history = list(history)[-SHOWN_SAMPLES:]
        if (history, value) != (self._history, self._value):
            self._history, self._value = history, value
            self.refresh()

    def render(self) -> RenderResult:
        spark_width = max(0, self.size.width - LABEL_WIDTH - VALUE_WIDTH)
        _, base = self.background_colors
        low = base + self.get_component_styles("meter--min-color").color
        high = base + self.get_component_styles("meter--max-color").color
        label = base + self.get_component_styles("meter--label").color
        grid = Table.grid(expand=True)
        grid.add_column(width=LABEL_WIDTH, no_wrap=True)
        grid.add_column(width=spark_width, no_wrap=True)
        grid.add_column(width=VALUE_WIDTH, justify="right", no_wrap=True, overflow="crop")
        grid.add_row(
            Text(self.label, style=Style(color=label.rich_color)),
            SparklineRenderable(
                self._history,
                width=spark_width,
                min_color=low.rich_color,
                max_color=high.rich_color,
            ),
            Text(self._value),
        )
        return grid


class GpuCard(Vertical):
    """One GPU."""

    def __init__(self, index: int) -> None:
        super().__init__(id=f"gpu-{index}", classes="card")
        self.index = index
        self._data: tuple[GpuPanel, GpuRing | None] | None = None
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static("", classes="card-title", markup=False)
        yield Meter("util", id=f"util-{self.index}")
        yield Meter("mem ", id=f"mem-{self.index}")
        yield Static("", classes="card-jobs", markup=False)
        yield Static("", classes="card-foreign", markup=False)

    def on_mount(self) -> None:
        if app_closing(self):
            return
        self._ready = True
        self._apply()

    def show(self, panel: GpuPanel, ring: GpuRing | None) -> None:
        self._data = (panel, ring)
        if self._ready:
            self._apply()

    def _apply(self) -> None:
        if self._data is None:
            return
        panel, ring = self._data
        gpu = panel.gpu
        set_text(self.query_one(".card-title", Static), gpu_title(panel))
        heat = heat_class(panel)
        for name in HEAT_CLASSES:
            self.set_class(name == heat, name)
        util = _values(ring.series("utilization")) if ring else []
        memory = _values(ring.series("memory_used_gb")) if ring else []
        shown_util = "n/a" if gpu.utilization is None else f"{gpu.utilization:3.0f}%"
        self.query_one(f"#util-{self.index}", Meter).show(util, shown_util)
        self.query_one(f"#mem-{self.index}", Meter).show(
            memory, f"{gpu.memory_used_gb:.1f}/{gpu.memory_total_gb:.0f} GiB"
        )
        set_text(self.query_one(".card-jobs", Static), jobs_line(panel.jobs), fixed=False)
        if gpu.simulated:
            foreign = "foreign: - (simulated GPU)"
        else:
            procs = ", ".join(f"{p.pid} {p.name} {p.used_gb:.1f} GiB" for p in panel.foreign)
            foreign = f"foreign: {procs or 'none'}"
        set_text(self.query_one(".card-foreign", Static), foreign, fixed=False)


class NodeCard(Vertical):
    """One node of the Slurm cluster."""

    def __init__(self, number: int) -> None:
        super().__init__(id=f"node-{number}", classes="card node-card")
        self.number = number
        self._data: tuple[NodePanel, NodeRing | None] | None = None
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static("", classes="card-title", markup=False)
        yield Meter("gpus", id=f"node-gpus-{self.number}")
        yield Meter("cpus", id=f"node-cpus-{self.number}")
        yield Meter("mem ", id=f"node-mem-{self.number}")
        yield Static("", classes="card-jobs", markup=False)

    def on_mount(self) -> None:
        if app_closing(self):
            return
        self._ready = True
        self._apply()

    def show(self, node: NodePanel, ring: NodeRing | None) -> None:
        self._data = (node, ring)
        if self._ready:
            self._apply()

    def _apply(self) -> None:
        if self._data is None:
            return
        node, ring = self._data
        set_text(self.query_one(".card-title", Static), node_title(node))
        heat = node_class(node)
        for name in HEAT_CLASSES:
            self.set_class(name == heat, name)
        n = self.number
        self.query_one(f"#node-gpus-{n}", Meter).show(
            list(ring.gpus) if ring else [], f"{node.gpus_used}/{node.gpus_total} in use"
        )
        self.query_one(f"#node-cpus-{n}", Meter).show(
            list(ring.cpus) if ring else [], f"{node.cpus_used}/{node.cpus_total} in use"
        )
        self.query_one(f"#node-mem-{n}", Meter).show(
            list(ring.mem) if ring else [],
            f"{node.mem_used_gb:.0f}/{node.mem_total_gb:.0f} GiB",
        )
        text = jobs_line(node.jobs)
        if node.reason:
            text += f"\nreason: {one_line(node.reason)}"
        set_text(self.query_one(".card-jobs", Static), text, fixed=False)


class SystemCard(Vertical):
    """System RAM and CPU of the machine loradeck runs on."""

    def __init__(self, title: str = "System") -> None:
        super().__init__(id="system", classes="card")
        self.title_text = title

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, classes="card-title", markup=False)
        yield Meter("ram ", id="ram")
        yield Meter("cpu ", id="cpu")


CardKey = tuple[str, ...]


def card_keys(reading: MachineReading) -> CardKey:
    """Which panels a reading needs, in order (the system panel last)."""
    if reading.cluster:
        return (*(f"node:{node.name}" for node in reading.nodes), "system:this machine")
    return (*(f"gpu:{panel.gpu.index}" for panel in reading.gpus), "system")


class GpusScreen(DeckScreen):
    """Every GPU (or node) and the machine."""

    MODE = "gpus"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._cards: CardKey = ()
        self._building = False

    def compose(self) -> ComposeResult:
        yield DeckBar(self.MODE)
        with VerticalScroll(id="gpus-scroll"):
            yield Static("", id="gpus-message", markup=False)
            yield Static("", id="gpus-cluster", markup=False)
            yield Grid(id="gpu-grid")
        yield DeckFooter()

    def on_mount(self) -> None:
        if app_closing(self):
            return
        self.query_one("#gpus-cluster").display = False
        self._draw()

    def deck_changed(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        super().deck_changed(change, job_ids)
        if change == "machine":
            self._draw()

    def remember(self, change: Change, job_ids: Iterable[int] = ()) -> None:
        super().remember(change, job_ids)
        reading = self.deck_app.deck.machine
        if change == "machine" and reading is not None and card_keys(reading) != self._cards:
            # Build the panels while hidden (rare: the GPUs or nodes changed), so that
            # the screen, when shown, only needs to draw.
            self._rebuild(reading)

    def catch_up(self, missed: Missed) -> None:
        if "machine" in missed:
            self._draw()

    def on_resize(self, event: Resize) -> None:
        self.query_one("#gpu-grid", Grid).set_class(event.size.width < NARROW, "-narrow")

    def action_scroll(self, lines: int) -> None:
        self.query_one("#gpus-scroll", VerticalScroll).scroll_relative(y=lines, animate=False)

    def _rebuild(self, reading: MachineReading) -> None:
        wanted = card_keys(reading)
        if self._building or wanted == self._cards:
            return
        self._building = True
        self._cards = wanted
        self.call_later(self._build_cards, reading)

    async def _build_cards(self, reading: MachineReading) -> None:
        grid = self.query_one("#gpu-grid", Grid)
        cards: list[Vertical] = []
        if reading.cluster:
            cards += [NodeCard(n) for n in range(len(reading.nodes))]
            cards.append(SystemCard("This machine"))
        else:
            cards += [GpuCard(panel.gpu.index) for panel in reading.gpus]
            cards.append(SystemCard())
        await grid.remove_children()
        await grid.mount_all(cards)
        self._building = False
        self._draw()

    def _draw(self) -> None:
        deck = self.deck_app.deck
        reading = deck.machine
        message = self.query_one("#gpus-message", Static)
        if reading is None:
            set_text(message, "reading the GPUs…", fixed=False)
            return
        set_text(message, reading.message or "", fixed=False)
        message.display = bool(reading.message)
        cluster = self.query_one("#gpus-cluster", Static)
        cluster.display = bool(reading.cluster)
        if reading.cluster:
            set_text(cluster, cluster_summary(reading), fixed=False)
        if card_keys(reading) != self._cards or self._building:
            self._rebuild(reading)
            return
        grid = self.query_one("#gpu-grid", Grid)
        if reading.cluster:
            for card, node in zip(grid.query(NodeCard), reading.nodes, strict=False):
                card.show(node, deck.node_rings.get(node.name))
        else:
            cards = {card.index: card for card in grid.query(GpuCard)}
            for panel in reading.gpus:
                cards[panel.gpu.index].show(panel, deck.rings.get(panel.gpu.index))
        ram = f"{reading.ram_used_gb:.1f}/{reading.ram_total_gb:.0f} GiB"
        for meter_id, history, value in (
            ("#ram", deck.ram, ram),
            ("#cpu", deck.cpu, f"{reading.cpu_percent:3.0f}%"),
        ):
            meters = grid.query(meter_id)
            if meters:
                meters.first(Meter).show(list(history), value)
