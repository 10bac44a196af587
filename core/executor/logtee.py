"""Copy stdin to stdout (the tmux pane) and to a bounded log file.

Run as ``python -I -S logtee.py --max-bytes N -- LOGFILE`` (or ``python -m
loradeck.core.executor.logtee``); ``run.sh`` imports it through :data:`LOADER` instead,
so that the compiled module in ``__pycache__`` is used. Every job starts one tee, so its
start-up is kept to what the interpreter itself costs: only builtin or frozen modules
are imported (``os``, ``sys``, ``errno``, ``_signal``); ``argparse``, ``pathlib``,
``signal`` and ``contextlib`` would each add several milliseconds of CPU per job.

The bounded log, for ``max_bytes = M``:

* Until the log reaches M bytes it is exactly the output.
* Then it becomes **head + marker + tail**: the head is the first ``M // 2`` bytes, cut
  after its last newline; the marker is the line :data:`MARKER` (with M in MiB); the tail
  is the newest output. When the tail has grown so that the file exceeds ``M +
  len(marker)``, the file is rewritten as head + marker + the newest ``M // 4`` bytes
  (starting at a line start), so the file never holds much more than M bytes plus one read.
* A rewrite builds a new file beside the log and renames it over the log. Readers of the
  log therefore see either the old or the new file, never a half-written one; the
  new file has a new inode. A follower that keeps an open file handle must, when the
  path's inode changes (or its size drops below the follower's offset), reopen the path
  and continue from :func:`tail_offset` (just past the marker): the lines there may
  repeat a few it has already read, and lines in between were dropped.

Signals: SIGINT, SIGTERM and SIGHUP are ignored so that the last words of a job that is
being stopped still reach the log; the tee ends when its input closes. If the pane goes
away, output still goes to the log.
"""

import errno
import os
import sys

try:  # the C module: ``signal`` imports enum, a third of start-up
    import _signal as _sig  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - an interpreter without the private module
    import signal as _sig

LOADER = (
    "import os, sys; sys.path.insert(0, sys.argv[1]); del sys.argv[1]; "
    "from logtee import main; sys.exit(main(sys.argv[1:]))"
)
"""``python -I -S -c LOADER <folder of this file> --max-bytes N -- LOG`` runs :func:`main`
from the cached bytecode of this module (a script given by path is compiled on every
start). Only this module is imported from that folder: ``os``, ``sys`` and everything
it imports are builtin or frozen, and those are found before any folder is searched."""

USAGE = "usage: logtee.py [--max-bytes N] [--resume FILE] [--] LOG"

MARKER = "[loradeck: log truncated here; output beyond {size} keeps only a rolling tail]"
READ_SIZE = 1 << 20
_SCAN = 1 << 16
MIN_MAX_BYTES = 4096


def marker_line(max_bytes: int) -> bytes:
    """The marker line written at the end of the head."""
    if max_bytes % 2**20 == 0:
        size = f"{max_bytes >> 20} MiB"
    elif max_bytes >= 2**20:
        size = f"{max_bytes / 2**20:.1f} MiB"
    else:
        size = f"{max_bytes} bytes"
    return (MARKER.format(size=size) + "\n").encode()


def tail_offset(path: str | os.PathLike[str]) -> int:
    """Offset just past the truncation marker of a bounded log, or 0 if it has none.

    For followers: after the log was rewritten, the rolling tail starts here.
    """
    needle = b"\n" + MARKER.split("{", 1)[0].encode()
    with open(path, "rb") as handle:
        base, data = 0, b""  # data is the file from offset base on
        while block := handle.read(READ_SIZE):
            data += block
            found = data.find(needle)
            if found != -1:
                end = data.find(b"\n", found + 1)
                if end != -1:
                    return base + end + 1
                continue  # the marker line goes on in the next block
            cut = max(0, len(data) - len(needle))
            base, data = base + cut, data[cut:]
    return 0


class BoundedLog:
    """An append-only log that keeps its head and a rolling tail beyond ``max_bytes``."""

    def __init__(
        self, path: str | os.PathLike[str], max_bytes: int, *, resume: bool = False
    ) -> None:
        """Start the log afresh, or with ``resume`` go on after what it already holds
        (what another writer put there, as if this one had written it)."""
        if max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}, got {max_bytes}")
        self.path = path
        self.max_bytes = max_bytes
        self.marker = marker_line(max_bytes)
        self._scan = min(_SCAN, max_bytes // 16)
        """How far a cut may move to land on a line boundary."""
        flags = os.O_RDWR | os.O_CREAT | (0 if resume else os.O_TRUNC)
        self.fd = os.open(path, flags, 0o600)
        self.size = os.lseek(self.fd, 0, os.SEEK_END) if resume else 0
        self.head_end: int | None = None
        """Offset just past the marker, once the log has been truncated."""
        if self.size:  # a log cut before has its head and marker: keep them
            self.head_end = tail_offset(path) or None

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)
        self.size += len(data)
        limit = self.max_bytes + (len(self.marker) if self.head_end is not None else 0)
        if self.size > limit:
            self._rewrite()

    def close(self) -> None:
        os.close(self.fd)

    def _rewrite(self) -> None:
        if self.head_end is None:
            head = self._line_cut(self.max_bytes // 2)
            prefix_len, marker = head, self.marker
            if head > 0 and os.pread(self.fd, 1, head - 1) != b"\n":
                marker = b"\n" + marker
        else:
            prefix_len, marker = self.head_end, b""
        tail_start = self._line_start(max(prefix_len, self.size - self.max_bytes // 4))
        folder, name = os.path.split(os.fspath(self.path))
        tmp = os.path.join(folder, f".{name}.rewrite")
        new = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _copy(self.fd, new, 0, prefix_len)
            _write_all(new, marker)
            _copy(self.fd, new, tail_start, self.size - tail_start)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(new)
            try:  # noqa: SIM105 - contextlib costs the tee's start-up more than it saves
                os.unlink(tmp)
            except OSError:
                pass
            raise
        os.close(self.fd)
        self.fd = new
        self.head_end = prefix_len + len(marker)
        self.size = self.head_end + self.size - tail_start

    def _line_cut(self, limit: int) -> int:
        """Offset just after the last newline before ``limit`` (``limit`` if none near)."""
        start = max(0, limit - self._scan)
        found = os.pread(self.fd, limit - start, start).rfind(b"\n")
        return start + found + 1 if found != -1 else limit

    def _line_start(self, offset: int) -> int:
        """Offset of the first line that starts at or after ``offset`` (``offset`` if none
        near, or if ``offset`` is already at a line start)."""
        if offset == 0 or os.pread(self.fd, 1, offset - 1) == b"\n":
            return offset
        found = os.pread(self.fd, self._scan, offset).find(b"\n")
        return offset + found + 1 if found != -1 and offset + found + 1 < self.size else offset


def run(
    log_path: str | os.PathLike[str],
    max_bytes: int,
    stdin: int = 0,
    stdout: int = 1,
    *,
    resume: bool = False,
    first: bytes = b"",
) -> int:
    """Copy ``first``, then ``stdin`` until end of input, to ``stdout`` and the log; the
    exit status. ``resume`` goes on with a log that another writer began (see
    :class:`BoundedLog`)."""
    status = 0
    log: BoundedLog | None
    try:
        log = BoundedLog(log_path, max_bytes, resume=resume)
    except OSError as err:
        # Keep the job running and visible in its pane even without a log.
        _say(stdout, f"[loradeck] cannot write the log {log_path}: {err.strerror}\n")
        log, status = None, 1
    pane_ok = True
    data = first
    while True:
        if not data:
            try:
                data = os.read(stdin, READ_SIZE)
            except InterruptedError:  # pragma: no cover - PEP 475 retries reads
                continue
            if not data:
                break
        if log is not None:
            try:
                log.write(data)
            except OSError as err:
                _say(stdout, f"\n[loradeck] writing the log failed: {err.strerror}\n")
                log, status = None, 1
        if pane_ok:
            try:
                _write_all(stdout, data)
            except OSError as err:
                if err.errno not in (errno.EIO, errno.EPIPE, errno.EBADF, errno.ENXIO):
                    raise
                pane_ok = False  # the pane is gone; the log still gets everything
        data = b""
    if log is not None:
        log.close()
    return status


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _copy(src: int, dst: int, offset: int, count: int) -> None:
    """Copy ``count`` bytes of ``src`` from ``offset`` to the end of ``dst``."""
    end = offset + count
    while offset < end:
        try:
            copied = os.copy_file_range(src, dst, end - offset, offset)
        except OSError:
            copied = 0
        if copied <= 0:  # no copy_file_range here (other filesystem, old kernel)
            chunk = os.pread(src, min(READ_SIZE, end - offset), offset)
            if not chunk:
                return
            _write_all(dst, chunk)
            copied = len(chunk)
        offset += copied


def _say(fd: int, text: str) -> None:
    try:  # noqa: SIM105 - see _rewrite
        _write_all(fd, text.encode())
    except OSError:
        pass


def parse_args(argv: list[str]) -> tuple[str, int, str | None]:
    """(log path, max bytes, resume file) from ``[--max-bytes N] [--resume FILE] [--]
    LOG``; ValueError saying what is wrong. By hand: argparse alone would double the
    tee's start-up."""
    max_bytes = 512 * 2**20
    log: str | None = None
    resume: str | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--":
            log = next(args, None)
            if log is None or next(args, None) is not None:
                raise ValueError("expected exactly one LOG after --")
            break
        if arg == "--max-bytes" or arg.startswith("--max-bytes="):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            try:
                max_bytes = int(value)
            except ValueError:
                raise ValueError(f"--max-bytes needs a whole number, got {value!r}") from None
        elif arg == "--resume":
            resume = next(args, None)
            if not resume:
                raise ValueError("--resume needs a FILE")
        elif arg.startswith("-") and arg != "-":
            raise ValueError(f"unknown option {arg!r}")
        elif log is not None:
            raise ValueError(f"unexpected argument {arg!r}")
        else:
            log = arg
    if log is None:
        raise ValueError("the LOG file is missing")
    if max_bytes < MIN_MAX_BYTES:
        raise ValueError(f"--max-bytes must be at least {MIN_MAX_BYTES}")
    return log, max_bytes, resume


def main(argv: list[str] | None = None) -> int:
    """The tee's entry point: ignore SIGINT, SIGTERM and SIGHUP, copy until end of input.

    With ``--resume FILE`` it goes on with a log that a faster first stage began (see
    :mod:`loradeck.core.executor.runscript`): it copies FILE (the bytes that stage read
    ahead), deletes it, and goes on with stdin."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{(__doc__ or '').split(chr(10) * 2, 1)[0]}")
        return 0
    try:
        log, max_bytes, resume = parse_args(args)
    except ValueError as err:
        print(f"{USAGE}\nlogtee: error: {err}", file=sys.stderr)
        return 2
    for sig in (_sig.SIGINT, _sig.SIGTERM, _sig.SIGHUP):
        _sig.signal(sig, _sig.SIG_IGN)
    first = b""
    if resume is not None:
        try:
            with open(resume, "rb") as handle:
                first = handle.read()
            os.unlink(resume)
        except OSError as err:
            _say(1, f"[loradeck] cannot read {resume}: {err.strerror}\n")
    return run(log, max_bytes, resume=resume is not None, first=first)


if __name__ == "__main__":
    sys.exit(main())
