"""A job's metric history on disk: ``metrics.jsonl``, one JSON object per observation.

Each line holds ``t`` (Unix time it was read), and whichever of ``step``, ``epoch``,
``loss``, ``lr``, ``val_loss`` the observation has; observations with none of loss, lr
and val_loss (a bar at ``?it/s``, an epoch line) are not written. A step observed again
right away replaces the pending line (tqdm draws each step twice, first with the old
loss), so the file normally has one line per step; readers let the last line of a step
win. NaN and infinity are written as Python's ``json`` writes them (``NaN``,
``Infinity``), which :func:`read_metrics` reads back.

Writes are buffered and flushed every ``flush_lines`` lines or when the oldest unwritten
line is ``flush_interval`` seconds old (checked after each write call and by
:meth:`MetricsWriter.flush_if_due`, which the owner calls on its timer). A line cut
short by a crash is cut off when the file is opened again, and skipped by the reader.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from loradeck.core.errors import StoreError
from loradeck.core.monitor.results import Metrics

#: One observation for :meth:`MetricsWriter.write_many`: step, epoch, loss, lr, val_loss.
ValuesRow = tuple[int | None, int | None, float | None, float | None, float | None]
#: A line being written: t, step, epoch, loss, lr, val_loss (None: not in the line).
_Line = list[int | float | None]


class MetricsWriter:
    """Appends one JSON line per metric observation to a job's ``metrics.jsonl``."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = 0.5,
        flush_lines: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._flush_interval = flush_interval
        self._flush_lines = flush_lines
        self._clock = clock
        self._lines: list[str] = []
        self._pending: _Line | None = None
        self._oldest: float | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _cut_torn_tail(path)
            self._file: IO[str] = path.open("a", encoding="utf-8")
        except OSError as err:
            raise StoreError(f"{path}: cannot open the metrics file for writing: {err}") from err

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, metrics: Metrics, *, t: float | None = None, step: int | None = None) -> None:
        """Record one observation; ``step`` stands in when the observation has none."""
        self.write_values(
            metrics.step if metrics.step is not None else step,
            metrics.epoch,
            metrics.loss,
            metrics.lr,
            metrics.val_loss,
            t=t,
        )

    def write_values(
        self,
        step: int | None,
        epoch: int | None,
        loss: float | None,
        lr: float | None,
        val_loss: float | None,
        *,
        t: float | None = None,
    ) -> None:
        """:meth:`write` without building a :class:`Metrics`."""
        self.write_many([(step, epoch, loss, lr, val_loss)], t=t)

    def write_many(self, rows: Iterable[ValuesRow], *, t: float | None = None) -> None:
        """Record observations read together (the bulk path's rows), all at time ``t``.

        One call per read of the log, not per bar redraw: the pending line is a plain
        list in :data:`_KEYS` order and lines are encoded by :func:`_encode` (json.dumps
        would cost more than parsing the bar), and the flush check runs once."""
        stamp: float | None = None
        pending = self._pending
        lines = self._lines
        for step, epoch, loss, lr, val_loss in rows:
            if loss is None and lr is None and val_loss is None:
                continue
            if stamp is None:
                stamp = round(self._clock() if t is None else t, 3)
            if pending is not None and step is not None and pending[1] == step:
                # The same step again: the newer values win, the older ones stay.
                pending[0] = stamp
                if epoch is not None:
                    pending[2] = epoch
                if loss is not None:
                    pending[3] = loss
                if lr is not None:
                    pending[4] = lr
                if val_loss is not None:
                    pending[5] = val_loss
                continue
            if pending is not None:
                lines.append(_encode(pending))
            pending = [stamp, step, epoch, loss, lr, val_loss]
        if stamp is None:
            return
        self._pending = pending
        if self._oldest is None:
            self._oldest = self._clock()
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Flush when enough lines wait or the oldest has waited long enough."""
        if self._oldest is None:
            return
        if len(self._lines) >= self._flush_lines or (
            self._clock() - self._oldest >= self._flush_interval
        ):
            self.flush()

    def flush(self) -> None:
        """Write everything, the pending observation included, to the file."""
        if self._pending is not None:
            self._lines.append(_encode(self._pending))
            self._pending = None
        if self._lines:
            try:
                self._file.write("".join(self._lines))
                self._file.flush()
            except OSError as err:
                raise StoreError(f"{self.path}: cannot write metrics: {err}") from err
            self._lines.clear()
        self._oldest = None

    def close(self) -> None:
        """Flush and close."""
        if self._file.closed:
            return
        try:
            self.flush()
        finally:
            self._file.close()


#: The keys of a line, in order; a value of None is left out (``t`` is always set).
_KEYS: tuple[str, ...] = ('{"t":', ',"step":', ',"epoch":', ',"loss":', ',"lr":', ',"val_loss":')


def _number(value: int | float) -> str:
    """``value`` as ``json.dumps`` writes it (NaN, Infinity and -Infinity included)."""
    if type(value) is float:
        if value - value == 0.0:  # finite
            return float.__repr__(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value)


def _encode(values: _Line) -> str:
    """One line of the file, exactly as ``json.dumps(line, separators=(",", ":"))``."""
    t, step, epoch, loss, lr, val_loss = values
    if (
        epoch is None
        and lr is None
        and val_loss is None
        and type(t) is float
        and type(step) is int
        and type(loss) is float
        and loss - loss == 0.0
    ):
        return f'{{"t":{t!r},"step":{step!r},"loss":{loss!r}}}\n'  # a bar's line
    return (
        "".join([key + _number(v) for key, v in zip(_KEYS, values, strict=True) if v is not None])
        + "}\n"
    )


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Every observation in a ``metrics.jsonl``; lines that do not parse are skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StoreError(f"{path}: cannot read the metrics file: {err}") from err
    rows: list[dict[str, float]] = []
    for raw in data.splitlines():
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            continue  # a line torn by a crash
        if isinstance(value, dict):
            rows.append(value)
    return rows


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (the writer died in the middle of it)."""
    try:
        handle = path.open("rb+")
    except FileNotFoundError:
        return
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        keep = 0
        position = size
        while position > 0:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step)
            found = chunk.rfind(b"\n")
            if found >= 0:
                keep = position + found + 1
                break
        handle.truncate(keep)
