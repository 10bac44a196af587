"""What a parser gets out of a log: metric observations and events.

A :class:`ParseResult` is what one logical line says: an optional :class:`Metrics`
observation (every field optional) and zero or more :class:`LogEvent`.

The bulk path (:func:`loradeck.core.monitor.parsers.parse_bytes`) returns a
:class:`ParseBatch`, a sequence of :class:`ParseResult` that stores the many plain
progress-bar observations as bare tuples in :class:`Metrics` field order and builds the
objects only when they are read: building a frozen dataclass per bar redraw costs more
than parsing the bar. Within such a row the ETA may still be tqdm's raw ``H:MM:SS`` bytes;
:func:`metrics_from_row` converts it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from operator import itemgetter
from typing import Literal, overload

EventKind = Literal["checkpoint_saved", "sample_generated", "oom", "nonfinite_loss", "error"]

#: A metrics observation as a bare tuple, in :class:`Metrics` field order. Index 7 (ETA)
#: may hold tqdm's raw ``[H:]MM:SS`` bytes, converted when read.
Row = tuple[
    int | None,
    int | None,
    int | None,
    int | None,
    float | None,
    float | None,
    float | None,
    float | bytes | None,
    float | None,
]


@dataclass(frozen=True, slots=True)
class Metrics:
    """One parsed observation. Every field is optional; ``None`` means "not said here"."""

    step: int | None = None
    """Global optimisation step (1-based as the trainer prints it)."""
    total_steps: int | None = None
    epoch: int | None = None
    """The epoch being trained, 1-based."""
    total_epochs: int | None = None
    loss: float | None = None
    """Training loss as the trainer shows it (kohya's running average, diffusers' step loss)."""
    lr: float | None = None
    it_per_s: float | None = None
    """Speed in iterations per second (tqdm's ``s/it`` is inverted)."""
    eta_s: float | None = None
    """Seconds left, as the trainer's progress bar estimates them."""
    val_loss: float | None = None

    def merged(self, newer: Metrics) -> Metrics:
        """Self with every field that ``newer`` sets replaced by ``newer``'s value."""
        pairs = zip(metrics_row(self), metrics_row(newer), strict=True)
        return metrics_from_row(tuple(n if n is not None else o for o, n in pairs))  # type: ignore[arg-type]

    @property
    def is_empty(self) -> bool:
        return all(value is None for value in metrics_row(self))


METRIC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Metrics))


def metrics_row(metrics: Metrics) -> Row:
    """The tuple form of ``metrics`` (the inverse of :func:`metrics_from_row`)."""
    return (
        metrics.step,
        metrics.total_steps,
        metrics.epoch,
        metrics.total_epochs,
        metrics.loss,
        metrics.lr,
        metrics.it_per_s,
        metrics.eta_s,
        metrics.val_loss,
    )


def clock_seconds(text: bytes | str) -> float | None:
    """Seconds from tqdm's ``MM:SS`` / ``H:MM:SS`` (``?`` and junk give ``None``)."""
    seconds = 0
    try:
        for part in text.split(b":" if isinstance(text, bytes) else ":"):  # type: ignore[arg-type]
            seconds = seconds * 60 + int(part)
    except ValueError:
        return None
    return float(seconds)


def metrics_from_row(row: Row) -> Metrics:
    """The :class:`Metrics` of a bulk row (converting a raw ETA)."""
    eta = row[7]
    if isinstance(eta, bytes):
        eta = clock_seconds(eta)
    return Metrics(row[0], row[1], row[2], row[3], row[4], row[5], row[6], eta, row[8])


@dataclass(frozen=True, slots=True)
class LogEvent:
    """Something that happened, as the log says it."""

    kind: EventKind
    path: str | None = None
    """The checkpoint or sample path, when the log names it."""
    step: int | None = None
    """The step it happened at: named by the line, else the last step seen."""
    text: str = ""
    """The log line (or the joined log record) that says it."""


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one logical line says."""

    metrics: Metrics | None = None
    events: tuple[LogEvent, ...] = ()

    def merged(self, newer: ParseResult | None) -> ParseResult:
        """Both results as one: ``newer``'s metrics win field by field; events in order."""
        if newer is None:
            return self
        if self.metrics is None or newer.metrics is None:
            metrics = newer.metrics if self.metrics is None else self.metrics
        else:
            metrics = self.metrics.merged(newer.metrics)
        return ParseResult(metrics, self.events + newer.events)


def merge_results(first: ParseResult | None, second: ParseResult | None) -> ParseResult | None:
    """``first.merged(second)`` where either may be ``None``."""
    if first is None:
        return second
    return first.merged(second)


Item = ParseResult | Row


class ParseBatch(Sequence[ParseResult]):
    """The results of a block of log bytes, in order; bar observations stored as rows.

    Reading an item builds its :class:`ParseResult`. Consumers that go through many
    results use :meth:`items` (rows stay tuples), :meth:`events` and :meth:`latest`.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[Item] | None = None) -> None:
        self._items: list[Item] = [] if items is None else items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> ParseResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[ParseResult]: ...
    def __getitem__(self, index: int | slice) -> ParseResult | list[ParseResult]:
        if isinstance(index, slice):
            return [_result(item) for item in self._items[index]]
        return _result(self._items[index])

    def __iter__(self) -> Iterator[ParseResult]:
        return map(_result, self._items)

    def __repr__(self) -> str:
        return f"ParseBatch({len(self._items)} results)"

    def append(self, item: Item) -> None:
        self._items.append(item)

    def extend(self, other: ParseBatch) -> None:
        self._items.extend(other._items)

    def items(self) -> list[Item]:
        """The raw items: :class:`ParseResult` or a :data:`Row` tuple (read-only use)."""
        return self._items

    def metrics(self) -> Iterator[Metrics]:
        """Every metrics observation, in order."""
        for item in self._items:
            if type(item) is tuple:
                yield metrics_from_row(item)
            elif isinstance(item, ParseResult) and item.metrics is not None:
                yield item.metrics

    def events(self) -> list[LogEvent]:
        """Every event, in order."""
        return [e for item in self._items if isinstance(item, ParseResult) for e in item.events]

    def latest(self) -> Metrics | None:
        """The fold of all observations: for each field, the last value any of them set."""
        row = self.latest_row()
        return None if row is None else metrics_from_row(row)

    def latest_row(self) -> Row | None:
        """:meth:`latest` as a row (its ETA may still be raw bytes); None: no observation."""
        found: list[object] = [None] * len(METRIC_FIELDS)
        missing = list(range(len(METRIC_FIELDS)))
        nones: object = None
        getter: itemgetter[tuple[object, ...]] | None = None
        seen = False
        for item in reversed(self._items):
            if type(item) is tuple:
                row: tuple[object, ...] = item
            elif isinstance(item, ParseResult) and item.metrics is not None:
                row = metrics_row(item.metrics)
            else:
                continue
            seen = True
            # Most rows are redraws of one bar that set the same fields: a C-level
            # itemgetter check skips them without a Python loop over the fields.
            if getter is not None and getter(row) == nones:
                continue
            for index in missing:
                if row[index] is not None:
                    found[index] = row[index]
            missing = [index for index in missing if found[index] is None]
            if not missing:
                break
            getter = itemgetter(*missing)
            # itemgetter of one index returns the value itself, of several a tuple.
            nones = (None,) * len(missing) if len(missing) > 1 else None
        if not seen:
            return None
        return tuple(found)  # type: ignore[return-value]


def _result(item: Item) -> ParseResult:
    if type(item) is tuple:
        return ParseResult(metrics_from_row(item))
    assert isinstance(item, ParseResult)
    return item
