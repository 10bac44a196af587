"""kohya-shaped console output for the demo's toy trainer, without tqdm or rich.

:class:`ProgressBar` draws what ``tqdm(desc=..., smoothing=0)`` draws, redrawn with
``\\r`` on every refresh; :class:`RichLog` writes what kohya's rich logging handler
writes: time, level, message wrapped to the terminal width, and ``file:line`` on the
right. Both colour nothing when the stream is not a terminal, as their models do.
"""

from __future__ import annotations

import inspect
import os
import time
import unicodedata
from pathlib import Path
from typing import TextIO

# tqdm's unicode bar: a full block per tenth, then one of eight partial blocks.
_BAR_CHARS = " " + "".join(chr(0x258F - i) for i in range(8))
_NOT_A_TERMINAL_BAR_WIDTH = 10
_DEFAULT_COLUMNS = 80


def terminal_columns(stream: TextIO) -> int | None:
    """The stream's terminal width, or None when it is not a terminal."""
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return None
    return None


def format_interval(seconds: float) -> str:
    """tqdm's ``MM:SS`` or ``H:MM:SS``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_number(value: float | int | str) -> str:
    """tqdm's postfix number: ``.3g`` when that is shorter than ``str()``."""
    if isinstance(value, str):
        return value.strip()
    short = f"{value:.3g}".replace("+0", "+").replace("-0", "-")
    text = str(value)
    return short if len(short) < len(text) else text


class ProgressBar:
    """A tqdm-shaped progress bar: ``steps:  45%|████▌     | 450/1000 [05:01<06:08, ...]``."""

    def __init__(self, desc: str, *, total: int, stream: TextIO) -> None:
        self.desc = desc
        self.total = total
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last_len = 0
        self._closed = False
        self.refresh()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more iterations (drawn on the next refresh)."""
        self.n += n

    def set_postfix(self, **values: float | int | str) -> None:
        """Set the ``key=value`` postfix and redraw, as tqdm's ``set_postfix`` does."""
        self.postfix = ", ".join(f"{key}={format_number(val)}" for key, val in values.items())
        self.refresh()

    def render(self, *, elapsed: float, columns: int | None) -> str:
        """The bar's text after ``elapsed`` seconds, sized for ``columns`` (None: 10-cell bar)."""
        fraction = self.n / self.total if self.total else 1.0
        rate = self.n / elapsed if self.n and elapsed > 0 else None
        if rate is None:
            rate_text, remaining = "?it/s", "?"
        else:
            # tqdm switches to seconds per iteration when an iteration takes over a second.
            rate_text = f"{1 / rate:5.2f}s/it" if rate < 1 else f"{rate:5.2f}it/s"
            remaining = format_interval((self.total - self.n) / rate)
        postfix = f", {self.postfix}" if self.postfix else ""
        left = f"{self.desc}: {fraction * 100:3.0f}%|"
        right = (
            f"| {self.n}/{self.total} [{format_interval(elapsed)}<{remaining}, "
            f"{rate_text}{postfix}]"
        )
        if columns is None:
            width = _NOT_A_TERMINAL_BAR_WIDTH
        else:
            width = max(1, columns - len(left) - len(right))
        return left + _bar(fraction, width) + right

    def refresh(self) -> None:
        """Redraw over the previous drawing (``\\r``, padded to cover a longer one)."""
        text = self.render(
            elapsed=time.monotonic() - self._start, columns=terminal_columns(self.stream)
        )
        pad = " " * max(self._last_len - len(text), 0)
        self._last_len = len(text)
        self.stream.write(f"\r{text}{pad}")
        self.stream.flush()

    def close(self) -> None:
        """Draw the last state and end the line, as tqdm does with ``leave=True``."""
        if self._closed:
            return
        self._closed = True
        self.refresh()
        self.stream.write("\n")
        self.stream.flush()


def _bar(fraction: float, width: int) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    steps = len(_BAR_CHARS) - 1
    full, partial = divmod(int(fraction * width * steps), steps)
    bar = _BAR_CHARS[-1] * full
    if full < width:
        bar += _BAR_CHARS[partial] + _BAR_CHARS[0] * (width - full - 1)
    return bar


def cell_width(text: str) -> int:
    """Terminal cells taken by ``text``: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def wrap_cells(text: str, width: int) -> list[str]:
    """Greedy word wrap by terminal cells; words longer than a line are folded."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if cell_width(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        rest = word
        while cell_width(rest) > width:
            cut = 1
            while cut < len(rest) and cell_width(rest[: cut + 1]) <= width:
                cut += 1
            lines.append(rest[:cut])
            rest = rest[cut:]
        current = rest
    lines.append(current)
    return lines


class RichLog:
    """Log lines the way rich's ``RichHandler`` lays them out in kohya's scripts."""

    _TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

    def __init__(self, *, stream: TextIO, columns: int | None = None) -> None:
        self.stream = stream
        self._columns = columns
        self._last_time = ""
        self._colour = stream.isatty() and "NO_COLOR" not in os.environ

    def columns(self) -> int:
        """The width rich would use: the terminal's, else ``$COLUMNS``, else 80."""
        if self._columns is not None:
            return self._columns
        found = terminal_columns(self.stream)
        if found is not None:
            return found
        env = os.environ.get("COLUMNS", "")
        return int(env) if env.isdigit() and int(env) > 0 else _DEFAULT_COLUMNS

    def info(self, message: str) -> None:
        """Log ``message`` at INFO, naming the caller's file and line as rich does."""
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        where = f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}" if caller else "?"
        self.write("INFO", message, where)

    def write(self, level: str, message: str, where: str) -> None:
        """One record: the first line carries time and level, continuations are indented."""
        stamp = time.strftime(self._TIME_FORMAT)
        shown_time = stamp if stamp != self._last_time else " " * len(stamp)
        self._last_time = stamp
        columns = self.columns()
        fixed = len(stamp) + 1 + 8 + 1 + 1 + len(where)
        message_width = max(columns - fixed, 10)
        lines = wrap_cells(message, message_width)
        out: list[str] = []
        for index, line in enumerate(lines):
            pad = " " * (message_width - cell_width(line))
            if index == 0:
                head = f"{self._style(shown_time, '2;36')} {self._style(f'{level:<8}', '34')}"
                tail = f" {self._style(where, '2')}"
                out.append(f"{head} {line}{pad}{tail}")
            else:
                out.append(f"{' ' * (len(stamp) + 10)}{line}".rstrip())
        self.stream.write("\n".join(out) + "\n")
        self.stream.flush()

    def _style(self, text: str, sgr: str) -> str:
        return f"\x1b[{sgr}m{text}\x1b[0m" if self._colour and text.strip() else text
