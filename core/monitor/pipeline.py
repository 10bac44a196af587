"""One job's log, from bytes to progress: the piece the engine wires to a follower.

``LogFollower(on_data=lambda path, data: pipelines[path].feed(data))`` and
``on_reset=lambda path, why: pipelines[path].reset()``. Each :meth:`LogPipeline.feed`
runs the splitter and the parser (bulk path) and folds the results into

* :attr:`LogPipeline.state` (:class:`ProgressState`: the summary for the store, and the
  OOM / divergence signs),
* :attr:`LogPipeline.series` (``loss``, ``lr``, ``val_loss`` as bounded
  :class:`MetricSeries`, x = step),
* the job's ``metrics.jsonl`` (:class:`MetricsWriter`), if a path is given,
* ``on_event`` for every event, in order.

:attr:`LogPipeline.offset` is how far into the log everything has been parsed (a partial
last line excluded): save it, and a restarted engine resumes with
``follower.follow(path, offset)`` without reading a line twice or missing one.

Progress bars are handed to the parser as soon as they are whole (``eager_bars``), so
the newest bar is not held back until the next redraw. A rich log record waits for its
wrapped lines until the next line comes, or until the log has been quiet for
``hold_s``: call :meth:`LogPipeline.flush_if_due` on a timer (it also lets the metrics
file catch up). The methods are thread-safe (the follower's thread feeds, a timer
flushes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from loradeck.core.monitor.metricsfile import MetricsWriter, ValuesRow
from loradeck.core.monitor.parsers import LogParser, parse_bytes
from loradeck.core.monitor.results import LogEvent, ParseBatch, ParseResult, Row, metrics_row
from loradeck.core.monitor.series import MetricSeries, ProgressState
from loradeck.core.monitor.splitter import LineSplitter

SERIES_NAMES: tuple[str, ...] = ("loss", "lr", "val_loss")


class LogPipeline:
    """Splitter + parser + summary + series + metrics file for one job's log."""

    def __init__(
        self,
        parser: LogParser,
        *,
        metrics_path: Path | None = None,
        on_event: Callable[[LogEvent], None] | None = None,
        series_points: int = 2000,
        start_offset: int = 0,
        hold_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.parser = parser
        self.state = ProgressState(clock=clock)
        self.series: dict[str, MetricSeries] = {
            name: MetricSeries(series_points) for name in SERIES_NAMES
        }
        self._splitter = LineSplitter(eager_bars=True)
        self._writer = None if metrics_path is None else MetricsWriter(metrics_path, clock=clock)
        self._on_event = on_event
        self._clock = clock
        self._fed = start_offset
        self._hold_s = hold_s
        self._last_feed: float | None = None  # None: nothing held since the last flush
        self._lock = threading.RLock()

    @property
    def offset(self) -> int:
        """Bytes of the log parsed so far, up to the last complete line."""
        return self._fed - len(self._splitter.pending)

    def feed(self, data: bytes) -> ParseBatch:
        """Parse more of the log and fold it in; returns what it said."""
        with self._lock:
            self._fed += len(data)
            batch = parse_bytes(self.parser, data, splitter=self._splitter, final=False)
            self._last_feed = self._clock()
            self._fold(batch)
            return batch

    def flush_if_due(self) -> ParseBatch:
        """After ``hold_s`` of quiet, finish a held log record; let the metrics file catch
        up. Call on a timer; returns what the held record said."""
        with self._lock:
            batch = ParseBatch()
            if self._last_feed is not None and self._clock() - self._last_feed >= self._hold_s:
                self._last_feed = None
                held = self.parser.flush()
                if held is not None:
                    batch.append(held)
                    self._fold(batch)
            if self._writer is not None:
                self._writer.flush_if_due()
            return batch

    def reset(self) -> None:
        """The log jumped (truncated, or rotated to a new file): drop the partial line."""
        with self._lock:
            self._splitter.reset()
            held = self.parser.flush()
            if held is not None:
                self._fold(ParseBatch([held]))

    def finish(self) -> ParseBatch:
        """End of the log: parse the partial last line and everything held back."""
        with self._lock:
            batch = parse_bytes(self.parser, b"", splitter=self._splitter, final=True)
            self._fold(batch)
            if self._writer is not None:
                self._writer.flush()
            return batch

    def close(self) -> None:
        """Flush and close the metrics file."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()

    def _fold(self, batch: ParseBatch) -> None:
        if not len(batch):
            return
        step = self.state.step  # observations without a step are plotted at the last one
        self.state.apply_batch(batch)
        loss_add, lr_add, val_add = (self.series[name].add for name in SERIES_NAMES)
        rows: list[ValuesRow] = []
        keep = rows.append
        for item in batch.items():
            # Rows stay tuples (Metrics field order): no object per bar redraw.
            if type(item) is tuple:
                row: Row = item
            elif isinstance(item, ParseResult) and item.metrics is not None:
                row = metrics_row(item.metrics)
            else:
                continue
            if row[0] is not None:
                step = row[0]
            epoch, loss_value, lr_value, val_value = row[2], row[4], row[5], row[8]
            if step is not None:
                if loss_value is not None:
                    loss_add(step, loss_value)
                if lr_value is not None:
                    lr_add(step, lr_value)
                if val_value is not None:
                    val_add(step, val_value)
            keep((step, epoch, loss_value, lr_value, val_value))
        if self._writer is not None and rows:
            self._writer.write_many(rows, t=self._clock())
        if self._on_event is not None:
            for event in batch.events():
                self._on_event(event)
