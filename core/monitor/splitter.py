"""Bytes in, logical lines out.

Trainer output is a terminal stream, not a text file:

* tqdm redraws a bar by writing ``\\r`` and the new text, so ``\\r`` ends a line just as
  ``\\n`` and ``\\r\\n`` do (a ``\\r\\n`` split across two reads is still one break);
* colours, cursor moves and rich's hyperlinks are ANSI escapes (CSI ``ESC [``, OSC
  ``ESC ]`` ended by BEL or ``ESC \\``, and two-byte escapes); they are removed, as are
  other control characters except tab;
* bytes are decoded as UTF-8 with ``errors="replace"``, after splitting, so a character
  cut by a read boundary is never damaged;
* the last line may be partial: it is kept until its end arrives, up to ``max_line``
  bytes, beyond which it is cut (at a character boundary) so that a stream without line
  breaks cannot grow memory.

``eager_bars=True`` also hands out a partial last line that already looks like a whole
tqdm bar (it ends in ``]``): tqdm never ends a redraw with a line break, so without this
the newest bar state would wait for the next redraw (one step, which can be ten
seconds). The break that follows such a line is then swallowed, so the lines come out
the same as without it.

:meth:`LineSplitter.feed_block` is the bulk form: it returns the raw bytes of all
complete lines (each still ending in its break) for the fast parsers, which clean only
the lines they do not recognise.
"""

from __future__ import annotations

import re

#: A line break as tqdm and the rest of the world write them.
SEP_RE = re.compile(rb"\r\n|\r|\n")
# CSI, OSC (ended by BEL or ST, or unterminated up to the line end), other escapes,
# a lone ESC, then the remaining C0 controls but tab, and DEL.
_ANSI_RE = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]?"
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    rb"|\x1b[ -/]*[0-~]?"
    rb"|[\x00-\x08\x0b-\x1f\x7f]"
)
_BAR_TAIL_RE = re.compile(rb"\|[^|]*\]\s*\Z")

DEFAULT_MAX_LINE = 64 * 1024


def clean_line(raw: bytes) -> str:
    """One raw line (without its break) as text: escapes and controls removed, decoded."""
    if _ANSI_RE.search(raw) is not None:
        raw = _ANSI_RE.sub(b"", raw)
    return raw.decode("utf-8", errors="replace")


def split_block(block: bytes) -> list[bytes]:
    """The raw lines of a block of complete lines (the last break ends the last line)."""
    pieces = SEP_RE.split(block)
    pieces.pop()  # what follows the final break: nothing, in a complete block
    return pieces


def _char_boundary(data: bytes, cut: int) -> int:
    """``cut`` moved back (at most 3 bytes) so it does not split a UTF-8 character."""
    back = cut
    while back > 0 and cut - back < 3 and (data[back] & 0xC0) == 0x80:
        back -= 1
    return back if back > 0 and (data[back] & 0xC0) != 0x80 else cut


def _looks_like_bar(rest: bytes) -> bool:
    return rest.rstrip(b" ").endswith(b"]") and _BAR_TAIL_RE.search(rest) is not None


class LineSplitter:
    """Turns a byte stream into logical lines; keeps the partial last line between feeds."""

    __slots__ = ("_after_cr", "_after_eager", "_buf", "eager_bars", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *, eager_bars: bool = False) -> None:
        if max_line < 16:
            raise ValueError(f"max_line must be at least 16 bytes, got {max_line}")
        self.max_line = max_line
        self.eager_bars = eager_bars
        self._buf = b""
        self._after_cr = False  # the last break taken was a \r: a leading \n belongs to it
        self._after_eager = False  # the last line was handed out early: drop its break

    @property
    def pending(self) -> bytes:
        """The buffered partial line."""
        return self._buf

    def reset(self) -> None:
        """Forget the partial line (the stream jumped: truncated or rotated log)."""
        self._buf = b""
        self._after_cr = self._after_eager = False

    def feed(self, data: bytes) -> list[str]:
        """The complete lines that ``data`` finishes, cleaned and decoded."""
        return [clean_line(raw) for raw in split_block(self.feed_block(data))]

    def flush(self) -> list[str]:
        """The partial last line, if any, as a line (end of stream)."""
        return [clean_line(raw) for raw in split_block(self.feed_block(b"", final=True))]

    def feed_block(self, data: bytes, *, final: bool = False) -> bytes:
        """The raw bytes of every line ``data`` completes, each with its break.

        With ``final``, the partial last line is completed too. A line cut at
        ``max_line`` (or handed out early, see ``eager_bars``) gets a ``\\n``.
        """
        if not data and not final:
            return b""
        data = self._skip_leading_break(data)
        buf = self._buf + data if self._buf else data
        cut = max(buf.rfind(b"\r"), buf.rfind(b"\n")) + 1
        block, rest = buf[:cut], buf[cut:]
        if data:
            # Only a \r that ends everything read so far can pair with a \n still to come.
            self._after_cr = not rest and block.endswith(b"\r")
        if len(rest) > self.max_line:
            pieces = [block]
            while len(rest) > self.max_line:
                at = _char_boundary(rest, self.max_line)
                pieces.append(rest[:at] + b"\n")
                rest = rest[at:]
            block = b"".join(pieces)
        if rest and (final or (self.eager_bars and _looks_like_bar(rest))):
            block += rest + b"\n"
            rest = b""
            self._after_eager = not final
        if final:
            self._after_cr = self._after_eager = False
        self._buf = rest
        return block

    def _skip_leading_break(self, data: bytes) -> bytes:
        if self._after_eager and data:
            stripped = data.lstrip(b" ")
            if not stripped:
                return b""  # tqdm's padding after the bar; its break is still to come
            self._after_eager = False
            if stripped.startswith(b"\r\n"):
                return stripped[2:]
            if stripped[:1] == b"\r":
                # A \n in the next read would pair with a \r that ends this one.
                self._after_cr = len(stripped) == 1
                return stripped[1:]
            if stripped[:1] == b"\n":
                return stripped[1:]
            return stripped  # text glued after the bar: a new line
        if self._after_cr and data:
            self._after_cr = False
            if data[:1] == b"\n":
                return data[1:]
        return data
