"""What every preset parser shares: the line path, the bulk path, rich records, failures.

A preset subclasses :class:`BaseParser` and implements

* ``_on_bar(desc, n, total, remaining, rate, postfix)``: one tqdm bar (raw bytes groups
  as :mod:`loradeck.core.monitor.bars` captures them) -> a :data:`Row`, a
  :class:`ParseResult` or ``None`` (a bar it ignores);
* ``_on_message(record)``: one log message (a plain line, or a rich log record joined
  from its wrapped lines) -> a :class:`ParseResult` or ``None``.

Both paths run the same code on the same bytes, so :func:`parse_bytes` gives exactly
what :class:`LineSplitter` plus :meth:`parse_line` give (a property test holds it).

Failures are recognised here for every preset:

* CUDA OOM: ``torch.OutOfMemoryError: CUDA out of memory``, ``RuntimeError: CUDA out of
  memory``, ``CUDA error: out of memory``, ``CUBLAS_STATUS_ALLOC_FAILED`` -> ``oom``;
* the exception line that ends a Python traceback -> ``error`` (unless it is an OOM);
* a loss that becomes NaN or infinite -> one ``nonfinite_loss`` per run of such values,
  with the step (the engine reports "diverged at step N").

torchrun's ``[rank0]: `` line prefix is ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from loradeck.core.monitor.bars import (
    BAR_LOOSE_RE,
    BAR_NO_TOTAL_RE,
    BAR_OPEN_RE,
    rate_per_second,
)
from loradeck.core.monitor.results import (
    Item,
    LogEvent,
    Metrics,
    ParseBatch,
    ParseResult,
    Row,
    merge_results,
    metrics_from_row,
)
from loradeck.core.monitor.splitter import SEP_RE, clean_line, split_block

# rich's RichHandler: time column (kohya's "%Y-%m-%d %H:%M:%S", rich's default "[%x %X]",
# or blank when the time repeats), level padded to 8, then the message; the source
# "file.py:123" sits at the right edge of the first line only.
_RICH_RE = re.compile(
    r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\[[0-9/:. -]{8,30}\]| +) "
    r"(DEBUG|INFO|WARNING|ERROR|CRITICAL)(?: |$)"
)
_RICH_SOURCE_RE = re.compile(r"\s+[\w.-]+\.py:\d+\s*$")
_RANK_RE = re.compile(r"^\[(?:rank|default)\d+\]:\s?")
_EXCEPTION_RE = re.compile(
    r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit|Failure)\b(?::|$)"
)
_OOM_MARKERS = (
    "CUDA out of memory",
    "OutOfMemoryError",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "HIP out of memory",
)
_INF = math.inf
_MAX_RECORD_LINES = 64


@dataclass
class Record:
    """One log message: a plain line, or a rich record with its wrapped continuation."""

    fragments: list[str] = field(default_factory=list)
    column: int = 0
    """Where the message starts on a rich line; continuation lines are indented to it."""

    @property
    def text(self) -> str:
        """The message, fragments joined by spaces (rich wraps at spaces)."""
        return " ".join(self.fragments)

    @property
    def unwrapped(self) -> str:
        """The message, fragments joined directly: for paths, which rich folds mid-word."""
        return "".join(self.fragments)


class BaseParser:
    """A preset parser: line path, bulk path, rich records and failure detection."""

    name = "base"

    def __init__(self) -> None:
        self.step: int | None = None
        """The last step seen; events that do not name a step get this one."""
        self._record: Record | None = None
        self._traceback = False
        self._nonfinite = False
        self._rates: dict[bytes, float | None] = {}
        # Bulk path: drop a bar redraw that the next line redraws with the same n/total. Only
        # for presets whose answer to a bar depends on its description alone (and on
        # nothing but a NaN in its postfix), so that the next redraw surely replaces it.
        self._collapse_redraws = False

    # ------------------------------------------------------------------ public

    @property
    def fast_bar_re(self) -> re.Pattern[bytes] | None:
        """The bulk path's bar pattern (see :func:`bars.fast_bar_regex`); None: no fast path."""
        return None

    def parse_line(self, line: str) -> ParseResult | None:
        """What one logical line (cleaned, without its break) says."""
        record = self._record
        if record is not None:
            if _is_continuation(line, record.column) and len(record.fragments) < _MAX_RECORD_LINES:
                record.fragments.append(line[record.column :].strip())
                return None
            return merge_results(self.flush(), self._parse_new(line))
        return self._parse_new(line)

    def flush(self) -> ParseResult | None:
        """The result of a log record still waiting for wrapped lines (end of input)."""
        record, self._record = self._record, None
        if record is None:
            return None
        return self._on_message(record)

    def scan_block(self, block: bytes, out: ParseBatch) -> None:
        """Parse a block of complete raw lines (see :meth:`LineSplitter.feed_block`)."""
        fast = self.fast_bar_re
        if fast is None:
            for raw in split_block(block):
                result = self.parse_line(clean_line(raw))
                if result is not None:
                    out.append(result)
            return
        parts = fast.split(b"\n" + block)
        it = iter(parts)
        gap = next(it)
        append = out.items().append
        on_bar = self._on_bar
        collapse = self._collapse_redraws
        # The bar before this one is held back until the next is seen: tqdm draws a step
        # twice (update(), then set_postfix() with the step's loss), and a redraw that
        # the very next line supersedes is dropped without being converted.
        held = False
        p_desc = p_n = p_total = p_remaining = p_rate = p_postfix = None
        # zip over one iterator: the parts come in sevens (six groups, then the gap).
        for desc, n, total, remaining, rate, postfix, after in zip(  # noqa: B905
            it, it, it, it, it, it, it
        ):
            if held and (
                n != p_n
                or gap
                or not collapse
                or desc != p_desc
                or total != p_total
                or self._record is not None
                or self._nonfinite
                or (p_postfix is not None and (b"n" in p_postfix or b"N" in p_postfix))
            ):
                if self._record is None:  # the hot path, inlined
                    item = on_bar(p_desc, p_n, p_total, p_remaining, p_rate, p_postfix)  # type: ignore[arg-type]
                    if item is not None:
                        append(item)
                else:
                    self._emit_bar(p_desc, p_n, p_total, p_remaining, p_rate, p_postfix, append)
            if gap:
                self._scan_gap(gap, out, last=False)
            p_desc, p_n, p_total, p_remaining, p_rate, p_postfix = (
                desc, n, total, remaining, rate, postfix
            )  # fmt: skip
            held = True
            gap = after
        if held:
            self._emit_bar(p_desc, p_n, p_total, p_remaining, p_rate, p_postfix, append)
        self._scan_gap(gap, out, last=True)

    def _emit_bar(
        self,
        desc: bytes | None,
        n: bytes | None,
        total: bytes | None,
        remaining: bytes | None,
        rate: bytes | None,
        postfix: bytes | None,
        append: Callable[[Item], None],
    ) -> None:
        assert n is not None and rate is not None
        if self._record is None:
            item = self._on_bar(desc, n, total, remaining, rate, postfix)
            if item is not None:
                append(item)
            return
        closed = self.flush()  # first, as parse_line does: its events keep their step
        merged = merge_results(
            closed, _as_result(self._on_bar(desc, n, total, remaining, rate, postfix))
        )
        if merged is not None:
            append(merged)

    # ------------------------------------------------------------------ for presets

    def _on_bar(
        self,
        desc: bytes | None,
        n: bytes,
        total: bytes | None,
        remaining: bytes | None,
        rate: bytes,
        postfix: bytes | None,
    ) -> Item | None:
        return None

    def _on_message(self, record: Record) -> ParseResult | None:
        return None

    def _opens_records(self) -> bool:
        """Whether rich log records (wrapped over several lines) are joined."""
        return True

    def _rate(self, rate: bytes) -> float | None:
        """``rate_per_second``, cached: a run shows few distinct rates (3 digits)."""
        rates = self._rates
        if rate in rates:
            return rates[rate]
        if len(rates) > 4096:
            rates.clear()
        value = rates[rate] = rate_per_second(rate)
        return value

    def _loss_event(self, loss: float | None, step: int | None) -> LogEvent | None:
        """A nonfinite_loss event when the loss turns NaN or infinite (once per run)."""
        if loss is None:
            return None
        if -_INF < loss < _INF:
            self._nonfinite = False
            return None
        if self._nonfinite:
            return None
        self._nonfinite = True
        return LogEvent("nonfinite_loss", step=step, text=f"loss is {loss} at step {step}")

    def _row_result(self, row: Row, *events: LogEvent | None) -> Item:
        """A row, or a ParseResult when the row comes with events."""
        kept = tuple(e for e in events if e is not None)
        if not kept:
            return row
        return ParseResult(metrics_from_row(row), kept)

    # ------------------------------------------------------------------ internals

    def _scan_gap(self, gap: bytes, out: ParseBatch, *, last: bool) -> None:
        # A gap starts with the break after a bar (or the block's added "\n") and runs to
        # the break before the next bar; the last gap runs to the block's final break.
        pieces = SEP_RE.split(gap)
        if last:
            pieces.pop()
        for raw in pieces[1:]:
            result = self.parse_line(clean_line(raw))
            if result is not None:
                out.append(result)

    def _parse_new(self, line: str) -> ParseResult | None:
        if not line or line.isspace():
            return None
        if ("/s" in line or "s/" in line) and "[" in line:
            is_bar, result = self._parse_bar_line(line)
            if is_bar:
                return result
        if line.startswith("[") and _RANK_RE.match(line):
            line = _RANK_RE.sub("", line, count=1)
        failure = self._failure(line)
        if self._opens_records():
            rich = _RICH_RE.match(line)
            if rich is not None:
                column = _message_column(line, rich.start(1), rich[1])
                first = _RICH_SOURCE_RE.sub("", line[column:]).strip()
                self._record = Record([first], column)
                return failure
        return merge_results(failure, self._on_message(Record([line.strip()])))

    def _parse_bar_line(self, line: str) -> tuple[bool, ParseResult | None]:
        """(whether the line is a bar, what it says); a bar a preset ignores says nothing."""
        data = b"\n" + line.encode("utf-8", "replace")
        match = BAR_OPEN_RE.match(data)
        if match is None:
            match = BAR_LOOSE_RE.match(data) or BAR_NO_TOTAL_RE.match(data)
            if match is None:
                return False, None
        desc, n, total, remaining, rate, postfix = match.groups()
        result = _as_result(self._on_bar(desc, n, total or None, remaining or None, rate, postfix))
        rest = data[match.end() :]
        if rest.strip():
            # A log line glued after the bar's "]" (no break between them).
            result = merge_results(result, self._parse_new(rest.decode("utf-8", "replace")))
        return True, result

    def _failure(self, line: str) -> ParseResult | None:
        if "Traceback (most recent call last)" in line:
            self._traceback = True
            return None
        if any(marker in line for marker in _OOM_MARKERS):
            self._traceback = False
            return ParseResult(events=(LogEvent("oom", step=self.step, text=line.strip()),))
        if self._traceback and _EXCEPTION_RE.match(line):
            self._traceback = False
            return ParseResult(events=(LogEvent("error", step=self.step, text=line.strip()),))
        return None


def _message_column(line: str, level_at: int, level: str) -> int:
    """Where the message starts: rich pads the level to 8 columns plus one space; plain
    logging formats (``%(asctime)s %(levelname)s %(message)s``) do not."""
    after = level_at + len(level)
    padded = level_at + max(9, len(level) + 1)
    if not line[after:padded].strip(" "):
        return padded
    return after + len(line[after:]) - len(line[after:].lstrip(" "))


def _is_continuation(line: str, column: int) -> bool:
    return len(line) > column > 0 and line[column] != " " and line[:column] == " " * column


def _as_result(item: Item | None) -> ParseResult | None:
    if item is None or isinstance(item, ParseResult):
        return item
    return ParseResult(metrics_from_row(item))


def int_or_none(value: bytes | str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def metrics_result(metrics: Metrics, *events: LogEvent | None) -> ParseResult:
    """A result with ``metrics`` (dropped when empty) and the non-None ``events``."""
    kept = tuple(e for e in events if e is not None)
    return ParseResult(None if metrics.is_empty else metrics, kept)
