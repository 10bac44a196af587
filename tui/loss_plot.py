"""The loss curve: raw and smoothed, optionally with the curves of a sweep's other jobs.

Series are thinned to about two points per column before they reach plotext, so a run
of a hundred thousand steps draws as fast as a short one. Line colours come from the
theme's ``plot-raw`` and ``plot-smooth`` variables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.app import RenderResult
from textual.color import Color, ColorParseError
from textual_plotext import PlotextPlot

from loradeck.core.facade import MetricPoint
from loradeck.tui.themes import APP_VARIABLES

#: Weight of the newest point in the exponential moving average.
SMOOTHING = 0.1
#: Theme variables whose colours draw overlaid sibling curves, cycled.
OVERLAY_VARIABLES = ("primary", "success", "secondary", "warning", "error", "accent")


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out: list[float] = []
    avg = 0.0
    for n, value in enumerate(values, 1):
        avg = avg * (1 - weight) + value * weight
        out.append(avg / (1 - (1 - weight) ** n))
    return out


def thin(xs: Sequence[float], ys: Sequence[float], buckets: int) -> tuple[list[float], list[float]]:
    """At most ``buckets`` points: the mean of each run of consecutive points."""
    if len(xs) <= buckets or buckets < 1:
        return list(xs), list(ys)
    size = len(xs) / buckets
    out_x: list[float] = []
    out_y: list[float] = []
    for b in range(buckets):
        lo, hi = int(b * size), max(int((b + 1) * size), int(b * size) + 1)
        out_x.append(xs[hi - 1])
        out_y.append(sum(ys[lo:hi]) / (hi - lo))
    return out_x, out_y


def loss_points(series: Sequence[MetricPoint]) -> tuple[list[float], list[float]]:
    """(steps, losses) of the points with a finite loss."""
    xs: list[float] = []
    ys: list[float] = []
    for point in series:
        if point.loss is not None and math.isfinite(point.loss):
            xs.append(float(point.step))
            ys.append(point.loss)
    return xs, ys


def _rgb(value: str | None, fallback: str) -> tuple[int, int, int]:
    try:
        return Color.parse(value or fallback).rgb
    except ColorParseError:  # a variable that is not a colour: the default's
        return Color.parse(fallback).rgb


class LossPlot(PlotextPlot):
    """A job's loss curve."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        # "pro": no background or axis colours of its own, so the widget's (the theme's)
        # show through, whatever the theme, ANSI ones included; lines get theme colours.
        self.theme = "pro"
        self._main: list[MetricPoint] = []
        self._others: dict[str, list[MetricPoint]] = {}
        self._title = ""
        self._version = 0
        self._cache: tuple[object, RenderResult] | None = None

    def show(
        self,
        title: str,
        series: Sequence[MetricPoint],
        others: dict[str, list[MetricPoint]] | None = None,
    ) -> None:
        """Plot ``series`` (raw and smoothed) and, smoothed, each of ``others`` by label."""
        self._title = title
        self._main = list(series)
        self._others = dict(others or {})
        self._version += 1
        self.refresh()

    def on_resize(self) -> None:
        self.refresh()

    def render(self) -> RenderResult:
        # Building a plot costs tens of milliseconds: build it only when the data, the
        # size or the theme changed, not on every repaint.
        key = (self._version, self.size, self.app.theme)
        if self._cache is None or self._cache[0] != key:
            self._draw()
            self._cache = (key, super().render())
        return self._cache[1]

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        variables = self.app.theme_variables
        raw_rgb = _rgb(variables.get("plot-raw"), APP_VARIABLES["plot-raw"])
        smooth_rgb = _rgb(variables.get("plot-smooth"), APP_VARIABLES["plot-smooth"])
        buckets = max(8, self.size.width * 2)
        xs, ys = loss_points(self._main)
        if not xs and not self._others:
            plt.title(f"{self._title}: no loss reported yet" if self._title else "no job")
            return
        plt.title(self._title)
        for index, (label, other) in enumerate(sorted(self._others.items())):
            oxs, oys = loss_points(other)
            if oxs:
                tx, ty = thin(oxs, smooth(oys), buckets)
                name = OVERLAY_VARIABLES[index % len(OVERLAY_VARIABLES)]
                color = _rgb(variables.get(name), APP_VARIABLES["plot-raw"])
                plt.plot(tx, ty, marker="braille", color=color, label=label)
        if xs:
            tx, ty = thin(xs, ys, buckets)
            plt.plot(
                tx, ty, marker="braille", color=raw_rgb, label="raw" if not self._others else None
            )
            sx, sy = thin(xs, smooth(ys), buckets)
            plt.plot(sx, sy, marker="braille", color=smooth_rgb, label="smoothed")
        plt.xlabel("step")
