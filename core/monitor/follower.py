"""Following log files as they grow: plain Python with callbacks, one background thread.

* Reading is offset based: each file is read from its saved offset to its end with
  ``pread``, and ``on_data(path, bytes)`` gets every byte exactly once, in order. Start
  at a saved offset (``follow(path, offset)``) and nothing is read twice or missed.
* What wakes the reader is inotify, through watchfiles' ``RustNotify`` on the files'
  folders (not recursive). The watches are set up before the files are read, so an
  append made in between is seen either by the read or by a later event. watchfiles'
  own polling mode is never used: it compares modification times and loses appends
  made within the same second.
* Where inotify is unavailable (no inotify in the kernel, watches exhausted) or cannot
  see the writes (network filesystems: NFS, CIFS/SMB, sshfs, 9p, Lustre, GPFS, BeeGFS,
  CephFS...), those files are read on a timer every ``poll_fallback_s`` instead; as
  reads are offset based, a timer loses nothing either, it is only slower.
* Reads are batched: after a wake-up has read the files that changed, the thread
  pauses ``batch_ms`` before it looks again, so a file written continuously (a progress
  bar redrawn 50 times a second) is read about ``1000 / (batch_ms + 2 * step_ms)`` times
  a second, each read taking several writes, instead of once per write; RustNotify keeps
  the inotify events of the pause and hands them out together. A write to a quiet file
  is still read after about ``2 * step_ms``; one to a busy file waits at most about
  ``batch_ms + 2 * step_ms`` (80 + 20 ms by default) plus the reads themselves. A call
  to :meth:`follow` or :meth:`stop` cuts the pause short.
* A file that does not exist yet is opened when it appears.
* Truncation (the file is shorter than the offset): reading restarts at
  ``reopen_offset(path)`` (0 by default) and ``on_reset(path, "truncated")`` is called
  first. Rotation (the path now names another file, e.g. rename-and-recreate): the old
  file is read to its end, then the new one is opened at ``reopen_offset(path)`` after
  ``on_reset(path, "rotated")``. loradeck's bounded job log rewrites itself this way;
  pass its ``tail_offset`` as ``reopen_offset`` to continue after its marker.

Callbacks run on the follower's thread (and on the caller's in :meth:`unfollow` and
:meth:`read_now`); an exception in one is logged, and following goes on.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from watchfiles._rust_notify import RustNotify

logger = logging.getLogger(__name__)

ResetReason = Literal["truncated", "rotated"]
#: Default pause after each batch of reads, in ms (see :class:`LogFollower`).
BATCH_MS = 80
NETWORK_FILESYSTEMS: frozenset[str] = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "lustre",
        "gpfs", "beegfs", "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs",
        "fuse.rclone", "fuse.gcsfuse", "fuse.juicefs", "fuse.cephfs", "panfs", "pvfs2",
    }
)  # fmt: skip


@dataclass(eq=False)
class _Tail:
    path: str
    offset: int
    polled: bool = False
    fd: int | None = None
    ident: tuple[int, int] | None = None
    closed: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)
    as_path: Path = field(init=False)
    """``path`` as the Path handed to the callbacks (built once, not per read)."""

    def __post_init__(self) -> None:
        self.as_path = Path(self.path)


class _Either:
    """An event for RustNotify.watch that is set when either of two is."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        self._first, self._second = first, second

    def is_set(self) -> bool:
        return self._first.is_set() or self._second.is_set()


class LogFollower:
    """Follows log files from saved offsets and hands new bytes to ``on_data``."""

    def __init__(
        self,
        on_data: Callable[[Path, bytes], None],
        *,
        poll_fallback_s: float = 1.0,
        on_reset: Callable[[Path, ResetReason], None] | None = None,
        reopen_offset: Callable[[Path], int] | None = None,
        debounce_ms: int = 50,
        step_ms: int = 10,
        batch_ms: int = BATCH_MS,
        read_size: int = 1 << 20,
        use_inotify: bool | None = None,
    ) -> None:
        """``on_data(path, bytes)`` gets new bytes; ``on_reset(path, why)`` is called before
        reading restarts after a truncation or rotation, at ``reopen_offset(path)``.
        ``debounce_ms``/``step_ms`` bound how long inotify events are grouped (latency);
        ``batch_ms`` is the pause after each batch of reads (0: none), which bounds how
        often a busy file is read (CPU) at the price of that much latency.
        ``use_inotify``: None uses it where the kernel has it; False reads on the timer."""
        if poll_fallback_s <= 0:
            raise ValueError(f"poll_fallback_s must be positive, got {poll_fallback_s}")
        if batch_ms < 0:
            raise ValueError(f"batch_ms must be >= 0, got {batch_ms}")
        self._on_data = on_data
        self._on_reset = on_reset
        self._reopen_offset = reopen_offset
        self._poll_s = poll_fallback_s
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._batch_s = batch_ms / 1000
        self._read_size = read_size
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._replan = threading.Event()
        self._thread: threading.Thread | None = None
        self._inotify = inotify_available() if use_inotify is None else use_inotify
        self.mode: Literal["inotify", "timer", "stopped"] = "stopped"
        """How the thread is woken now: inotify (network files still on the timer), or
        the timer alone."""

    # ------------------------------------------------------------------ public

    def follow(self, path: Path, offset: int = 0) -> None:
        """Follow ``path`` from byte ``offset``; the file may not exist yet."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        key = os.path.abspath(path)
        with self._lock:
            if key in self._tails:
                return
            self._tails[key] = _Tail(key, offset, polled=_on_network_fs(os.path.dirname(key)))
        self._replan.set()

    def unfollow(self, path: Path) -> int:
        """Stop following ``path`` after a last read; returns the final offset."""
        key = os.path.abspath(path)
        with self._lock:
            tail = self._tails.pop(key, None)
        if tail is None:
            raise KeyError(f"{path} is not being followed")
        with tail.lock:
            self._read_locked(tail, raise_errors=False)
            tail.closed = True
            _close(tail)
        self._replan.set()
        return tail.offset

    def offset(self, path: Path) -> int:
        """Bytes of ``path`` handed to ``on_data`` so far (plus the starting offset)."""
        with self._lock:
            tail = self._tails.get(os.path.abspath(path))
        if tail is None:
            raise KeyError(f"{path} is not being followed")
        return tail.offset

    def paths(self) -> list[Path]:
        with self._lock:
            return [Path(key) for key in self._tails]

    def read_now(self, path: Path | None = None) -> None:
        """Read what is new now, in the caller's thread (one file, or all)."""
        for tail in self._select(None if path is None else [os.path.abspath(path)]):
            with tail.lock:
                if not tail.closed:
                    self._read_locked(tail, raise_errors=True)

    def start(self) -> None:
        """Start the background thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="loradeck-log-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the files (offsets are kept; start() resumes)."""
        self._stop.set()
        self._replan.set()  # wakes a timer wait
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        for tail in self._select(None):
            with tail.lock:
                _close(tail)
        self.mode = "stopped"

    def __enter__(self) -> LogFollower:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        while not self._stop.is_set():
            self._replan.clear()
            tails = self._select(None)
            watched = sorted({os.path.dirname(t.path) for t in tails if not t.polled})
            present = [d for d in watched if os.path.isdir(d)]
            missing = [d for d in watched if d not in present]
            notify = self._watcher(present) if present and self._inotify else None
            self.mode = "inotify" if notify is not None or not watched else "timer"
            try:
                self._read_all(tails)  # after the watches exist: nothing falls in between
                self._wait_loop(notify, tails, missing)
            except Exception:
                logger.exception("log follower: unexpected error; retrying")
                self._stop.wait(self._poll_s)
            finally:
                if notify is not None:
                    notify.close()

    def _wait_loop(self, notify: RustNotify | None, tails: list[_Tail], missing: list[str]) -> None:
        timed = tails if notify is None else [t for t in tails if t.polled]
        by_path = {t.path: t for t in tails}
        wake = _Either(self._stop, self._replan)
        last_timer = time.monotonic()
        while not wake.is_set():
            if notify is None:
                self._replan.wait(self._poll_s)
                changed: set[tuple[int, str]] | str = "timeout"  # stop() sets _replan too
            else:
                timeout_ms = int(self._poll_s * 1000) if timed or missing else 0
                changed = notify.watch(self._debounce_ms, self._step_ms, timeout_ms, wake)
            if isinstance(changed, set):
                hit = {by_path[p] for _, p in changed if p in by_path}
                self._read_all(hit)
                if hit and self._batch_s:
                    # Let the next writes gather (RustNotify keeps their events meanwhile):
                    # a busy log is read in a few large reads, not one per write.
                    self._replan.wait(self._batch_s)  # stop() and follow() set it too
            if timed and time.monotonic() - last_timer >= self._poll_s * 0.9:
                last_timer = time.monotonic()
                self._read_all(timed)
            if missing and any(os.path.isdir(folder) for folder in missing):
                self._replan.set()  # a folder appeared: watch it

    def _watcher(self, folders: list[str]) -> RustNotify | None:
        try:
            return RustNotify(folders, False, False, 0, False, True)
        except (OSError, RuntimeError) as err:
            logger.warning("log follower: cannot watch %s (%s); reading on a timer", folders, err)
            return None

    def _read_all(self, tails: Iterable[_Tail]) -> None:
        for tail in tails:
            with tail.lock:
                if tail.closed:
                    continue
                try:
                    self._read_locked(tail, raise_errors=True)
                except Exception:
                    logger.exception("log follower: reading %s failed", tail.path)

    def _select(self, keys: list[str] | None) -> list[_Tail]:
        with self._lock:
            if keys is None:
                return list(self._tails.values())
            return [self._tails[k] for k in keys if k in self._tails]

    # ------------------------------------------------------------------ reading

    def _read_locked(self, tail: _Tail, *, raise_errors: bool) -> None:
        """Read ``tail`` to its end (and across a rotation); its lock is held."""
        try:
            self._read_file(tail)
        except OSError as err:
            if raise_errors and err.errno not in (errno.ENOENT, errno.ESTALE):
                raise
            logger.debug("log follower: %s: %s", tail.path, err)
            _close(tail)

    def _read_file(self, tail: _Tail) -> None:
        path = tail.as_path
        for _ in range(4):  # a file rotated again while it is read is caught next time
            if tail.fd is None and not self._open(tail):
                return
            assert tail.fd is not None
            self._drain(tail)
            try:
                now = os.stat(tail.path)
            except FileNotFoundError:
                return  # renamed away, new file not there yet: keep the old one open
            if (now.st_dev, now.st_ino) == tail.ident:
                return
            self._drain(tail)  # the old file's last words
            _close(tail)
            self._reset(tail, path, "rotated")

    def _open(self, tail: _Tail) -> bool:
        try:
            fd = os.open(tail.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return False
        info = os.fstat(fd)
        tail.fd, tail.ident = fd, (info.st_dev, info.st_ino)
        if info.st_size < tail.offset:
            self._reset(tail, tail.as_path, "truncated")
        return True

    def _drain(self, tail: _Tail) -> None:
        assert tail.fd is not None
        size = os.fstat(tail.fd).st_size
        if size < tail.offset:
            self._reset(tail, tail.as_path, "truncated")
        # Up to the size seen now: what is appended after it comes with its own event (or
        # the next timer round), so no second read just to find the end.
        while tail.offset < size:
            data = os.pread(tail.fd, min(self._read_size, size - tail.offset), tail.offset)
            if not data:
                return  # cut short meanwhile: the next read sees the truncation
            tail.offset += len(data)
            self._on_data(tail.as_path, data)

    def _reset(self, tail: _Tail, path: Path, reason: ResetReason) -> None:
        offset = 0
        if self._reopen_offset is not None:
            try:
                offset = max(0, self._reopen_offset(path))
            except OSError:
                offset = 0
        tail.offset = offset
        if self._on_reset is not None:
            self._on_reset(path, reason)


def _close(tail: _Tail) -> None:
    if tail.fd is not None:
        with contextlib.suppress(OSError):
            os.close(tail.fd)
        tail.fd = None


def inotify_available() -> bool:
    """Whether the kernel gives this process inotify (elsewhere: trust notify's backend).

    Without it watchfiles would quietly fall back to its mtime polling, which loses
    appends made within the same second; the follower reads on its timer instead.
    """
    if not sys.platform.startswith("linux"):
        return True  # FSEvents, kqueue, ReadDirectoryChangesW
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(getattr(os, "O_CLOEXEC", 0))
    except (OSError, AttributeError):
        return False
    if fd < 0:
        return False
    os.close(fd)
    return True


def _on_network_fs(folder: str) -> bool:
    """Whether ``folder`` (or the nearest existing parent) is on a network filesystem."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            mounts = handle.read().splitlines()
    except OSError:
        return False
    target = os.path.realpath(folder)
    best, best_type = "", ""
    for line in mounts:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(
            best
        ):
            best, best_type = point, right.split()[0] if right.split() else ""
    return best_type in NETWORK_FILESYSTEMS
