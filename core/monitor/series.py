"""The current summary of a job's training, and bounded metric series for the UI.

:class:`ProgressState` folds parse results into :class:`~loradeck.core.models.Progress`
(the summary the store keeps: last step, totals, loss, lr, speed, ETA, validation loss,
checkpoint count, time of the last observation) and remembers the failure signs: the
first CUDA OOM (failure class ``oom``) and the first non-finite loss (``diverged``,
"diverged at step N").

:class:`MetricSeries` keeps at most ``max_points`` points of one metric. When full, the
older half is halved: each run of four points keeps its lowest and its highest, in step
order, so spikes survive and the curve keeps its shape while old history grows coarser.
Non-finite values are not plotted (the divergence is reported as an event instead).
A step seen again replaces its point (tqdm draws each step twice, first with the old
loss).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from loradeck.core.models import FailureClass, Progress
from loradeck.core.monitor.results import (
    METRIC_FIELDS,
    LogEvent,
    Metrics,
    ParseBatch,
    ParseResult,
    Row,
    clock_seconds,
    metrics_from_row,
    metrics_row,
)


class ProgressState:
    """The latest progress of one job's training, folded from its parse results."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # The latest value of each field, in Metrics field order; the Metrics object is
        # built when asked for (a few times a second), not on every read of the log.
        self._values: list[object] = [None] * len(METRIC_FIELDS)
        self._metrics: Metrics | None = Metrics()
        self._updated_at: float | None = None
        self.checkpoints: list[LogEvent] = []
        """Every ``checkpoint_saved`` event, in order."""
        self.samples = 0
        """How many ``sample_generated`` events."""
        self.oom: LogEvent | None = None
        """The first CUDA out-of-memory event."""
        self.divergence: LogEvent | None = None
        """The first ``nonfinite_loss`` event."""
        self.last_error: LogEvent | None = None
        """The last ``error`` event (the exception that ended a traceback)."""

    @property
    def metrics(self) -> Metrics:
        """Every field's latest value."""
        if self._metrics is None:
            self._metrics = metrics_from_row(tuple(self._values))  # type: ignore[arg-type]
        return self._metrics

    @property
    def step(self) -> int | None:
        step = self._values[0]
        return step if isinstance(step, int) else None

    def apply(self, result: ParseResult | None) -> None:
        """Fold one result in."""
        if result is None:
            return
        if result.metrics is not None:
            self.observe(result.metrics)
        for event in result.events:
            self.record(event)

    def apply_batch(self, batch: ParseBatch) -> None:
        """Fold a bulk batch in (cheaply: bar rows are not turned into objects)."""
        row = batch.latest_row()
        if row is not None:
            self._fold(row)
        for event in batch.events():
            self.record(event)

    def observe(self, metrics: Metrics) -> None:
        """Fold one observation in: each field it sets replaces the old value."""
        self._fold(metrics_row(metrics))

    def _fold(self, row: Row) -> None:
        values = self._values
        changed = False
        for index, raw in enumerate(row):
            value = clock_seconds(raw) if type(raw) is bytes else raw  # a bar's raw ETA
            if value is not None:
                values[index] = value
                changed = True
        if changed:
            self._metrics = None
            self._updated_at = self._clock()

    def record(self, event: LogEvent) -> None:
        """Note one event."""
        if event.kind == "checkpoint_saved":
            self.checkpoints.append(event)
        elif event.kind == "sample_generated":
            self.samples += 1
        elif event.kind == "oom":
            if self.oom is None:
                self.oom = event
        elif event.kind == "nonfinite_loss":
            if self.divergence is None:
                self.divergence = event
        elif event.kind == "error":
            self.last_error = event

    @property
    def failure_class(self) -> FailureClass | None:
        """``oom`` or ``diverged`` when the log shows it, else None."""
        if self.oom is not None:
            return FailureClass.OOM
        if self.divergence is not None:
            return FailureClass.DIVERGED
        return None

    @property
    def failure_reason(self) -> str:
        """A line for the job's ``reason``: what the log says went wrong."""
        if self.oom is not None:
            where = f" at step {self.oom.step}" if self.oom.step is not None else ""
            return f"CUDA out of memory{where}: {self.oom.text}"[:500]
        if self.divergence is not None:
            step = self.divergence.step
            return (
                f"diverged at step {step}" if step is not None else "diverged (loss is NaN or inf)"
            )
        if self.last_error is not None:
            return self.last_error.text[:500]
        return ""

    @property
    def progress(self) -> Progress:
        """The summary for the store."""
        m = self.metrics
        return Progress(
            step=m.step,
            total_steps=m.total_steps,
            epoch=m.epoch,
            total_epochs=m.total_epochs,
            loss=m.loss,
            lr=m.lr,
            it_per_s=m.it_per_s,
            eta_s=m.eta_s,
            val_loss=m.val_loss,
            checkpoints=len(self.checkpoints),
            updated_at=self._updated_at,
        )


class MetricSeries:
    """A bounded ``(step, value)`` series that keeps the shape of the curve."""

    __slots__ = ("_points", "max_points")

    def __init__(self, max_points: int = 2000) -> None:
        if max_points < 16:
            raise ValueError(f"max_points must be at least 16, got {max_points}")
        self.max_points = max_points
        self._points: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self._points)

    def add(self, step: float, value: float) -> None:
        """Add a point. A step at or before the last one replaces the points from there on
        (a redraw of the same step, or a run resumed from an earlier checkpoint). A NaN or
        infinite value is not plotted, but still replaces what its step showed."""
        if not math.isfinite(step):
            return
        points = self._points
        while points and points[-1][0] >= step:
            points.pop()
        if math.isfinite(value):
            points.append((float(step), float(value)))
        if len(points) >= self.max_points:
            self._halve_older()

    def points(self) -> list[tuple[float, float]]:
        """The points, in step order."""
        return list(self._points)

    def _halve_older(self) -> None:
        half = len(self._points) // 2
        older, newer = self._points[:half], self._points[half:]
        kept: list[tuple[float, float]] = []
        keep = kept.append
        whole = len(older) - len(older) % 4
        for start in range(0, whole, 4):
            group = older[start : start + 4]
            values = [point[1] for point in group]
            # The first lowest and the first highest, in step order (one if the same).
            low = values.index(min(values))
            high = values.index(max(values))
            if low == high:
                keep(group[low])
            elif low < high:
                keep(group[low])
                keep(group[high])
            else:
                keep(group[high])
                keep(group[low])
        kept.extend(older[whole:])
        self._points = kept + newer
