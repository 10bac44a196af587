"""Log parsers: presets, auto-detection, user regexes, and the bulk path.

Presets (``parser = "..."`` on a job, or a trainer preset's ``parser``): ``kohya``,
``ai-toolkit``, ``diffusers``, ``onetrainer``, ``generic``, ``jsonl``; unset or
``auto`` detects the trainer from its output (:mod:`loradeck.core.monitor.detect`).
Aliases: ``kohya-ss``/``sd-scripts``, ``aitoolkit``/``ostris``, ``accelerate``,
``json``. The user's regexes from settings apply on top of whichever is chosen.

Two ways in, one answer:

* line by line: :class:`~loradeck.core.monitor.splitter.LineSplitter` then
  :meth:`LogParser.parse_line` (and :meth:`LogParser.flush` at the end);
* in bulk: :func:`parse_bytes`, for a restarted engine catching up and for the live
  follower alike. Presets split whole blocks with one compiled regex for their progress
  bar, so a bar redraw costs no per-line Python regex; other lines take the line path.
  Both ways give the same results (a property test holds them to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from loradeck.core.errors import ValidationError
from loradeck.core.monitor.base import BaseParser
from loradeck.core.monitor.detect import AutoParser, preset_parser
from loradeck.core.monitor.generic import UserRegexParser, compile_user_regexes
from loradeck.core.monitor.results import ParseBatch, ParseResult
from loradeck.core.monitor.splitter import LineSplitter, clean_line, split_block
from loradeck.core.settings import UserRegex

PRESETS: tuple[str, ...] = ("kohya", "ai-toolkit", "diffusers", "onetrainer", "generic", "jsonl")
_ALIASES: dict[str, str] = {
    "kohya-ss": "kohya",
    "sd-scripts": "kohya",
    "aitoolkit": "ai-toolkit",
    "ai_toolkit": "ai-toolkit",
    "ostris": "ai-toolkit",
    "accelerate": "diffusers",
    "one-trainer": "onetrainer",
    "json": "jsonl",
}
#: Bulk blocks are cut to about this size so that no split holds a huge list.
BLOCK_BYTES = 1 << 20


@runtime_checkable
class LogParser(Protocol):
    """Turns logical log lines into results. Stateful: one per job log."""

    name: str

    def parse_line(self, line: str) -> ParseResult | None:
        """What one line (cleaned, without its break) says; may complete an earlier one."""
        ...

    def flush(self) -> ParseResult | None:
        """What is still held back (a log record waiting for wrapped lines)."""
        ...


def canonical_parser_name(name: str) -> str:
    """The preset a name or alias means; :class:`ValidationError` when none."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key == "auto" or key in PRESETS:
        return key
    raise ValidationError(
        f"unknown log parser {name!r}; choose one of: auto, {', '.join(PRESETS)} "
        "(or leave `parser` unset to detect it from the log)",
        title="unknown log parser",
    )


def make_parser(
    name: str | None,
    *,
    user_regexes: Sequence[UserRegex] = (),
    job_name: str | None = None,
) -> LogParser:
    """A fresh parser for one job's log.

    ``name`` None or ``"auto"`` detects the trainer from the output. ``job_name`` picks
    ai-toolkit's bar (its description is the job name). ``user_regexes`` (settings'
    ``parsers``) are compiled now, so a bad one fails here with its name.
    """
    key = "auto" if name is None else canonical_parser_name(name)
    inner: BaseParser = AutoParser(job_name) if key == "auto" else preset_parser(key, job_name)
    if user_regexes:
        return UserRegexParser(inner, user_regexes)
    return inner


def validate_user_regexes(user_regexes: Sequence[UserRegex]) -> None:
    """Raise :class:`ValidationError` naming every bad regex (for settings checks)."""
    compile_user_regexes(user_regexes)


def parse_bytes(
    parser: LogParser,
    data: bytes,
    *,
    splitter: LineSplitter | None = None,
    final: bool | None = None,
) -> ParseBatch:
    """Parse log bytes in bulk.

    Without ``splitter`` the bytes are a whole log: the last line counts even without a
    break and the parser is flushed. With one, the bytes continue a stream: a partial
    last line waits in the splitter for the next call (``final=True`` ends the stream).
    """
    own = splitter is None
    split = LineSplitter() if splitter is None else splitter
    is_final = own if final is None else final
    out = ParseBatch()
    block = split.feed_block(data, final=is_final)
    scan = parser.scan_block if isinstance(parser, BaseParser) else None
    start = 0
    while start < len(block):
        end = _cut(block, start, start + BLOCK_BYTES)
        if scan is not None:
            scan(block[start:end] if start or end < len(block) else block, out)
        else:
            for raw in split_block(block[start:end]):
                result = parser.parse_line(clean_line(raw))
                if result is not None:
                    out.append(result)
        start = end
    if is_final:
        result = parser.flush()
        if result is not None:
            out.append(result)
    return out


def _cut(block: bytes, start: int, at: int) -> int:
    """Where to end the piece of ``block`` from ``start``, near ``at``: after a line break."""
    if at >= len(block):
        return len(block)
    found = max(block.rfind(b"\n", start, at), block.rfind(b"\r", start, at))
    if found < 0:
        ahead = [i for i in (block.find(b"\n", at), block.find(b"\r", at)) if i >= 0]
        if not ahead:
            return len(block)
        found = min(ahead)
    if block[found : found + 2] == b"\r\n":
        found += 1
    return found + 1
