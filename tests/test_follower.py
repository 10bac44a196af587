"""LogFollower on real files, with its real thread (inotify) and its timer fallback;
LogPipeline fed by it from a real writer process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loradeck.core.monitor.follower import LogFollower, inotify_available
from loradeck.core.monitor.parsers import make_parser, parse_bytes
from loradeck.core.monitor.pipeline import LogPipeline
from loradeck.core.monitor.results import LogEvent
from loradeck.core.monitor.splitter import LineSplitter

LOGS = Path(__file__).parent / "fixtures" / "logs"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.005)


class Sink:
    """Collects what a follower hands out (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[Path, bytearray] = {}
        self.resets: list[tuple[Path, str]] = []

    def on_data(self, path: Path, data: bytes) -> None:
        with self.lock:
            self.data.setdefault(path, bytearray()).extend(data)

    def on_reset(self, path: Path, why: str) -> None:
        with self.lock:
            self.resets.append((path, why))
            self.data[path] = bytearray()  # what follows starts over

    def got(self, path: Path) -> bytes:
        with self.lock:
            return bytes(self.data.get(path, b""))


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


@pytest.fixture(params=["inotify", "timer"])
def follower(request: pytest.FixtureRequest) -> Iterator[tuple[LogFollower, Sink]]:
    if request.param == "inotify" and not inotify_available():
        pytest.skip("no inotify here")
    sink = Sink()
    follower = LogFollower(
        sink.on_data,
        on_reset=sink.on_reset,
        poll_fallback_s=0.05,
        use_inotify=request.param == "inotify",
    )
    follower.start()
    try:
        yield follower, sink
    finally:
        follower.stop()


def test_follows_appends_including_many_in_one_second(
    follower: tuple[LogFollower, Sink], tmp_path: Path
) -> None:
    watcher, sink = follower
    log = tmp_path / "job.log"
    log.write_bytes(b"first\n")
    watcher.follow(log)
    wait_for(lambda: sink.got(log) == b"first\n")
    expected = b"first\n"
    for index in range(20):  # all within one second: mtime polling would lose some
        chunk = f"\rsteps: {index}/20".encode()
        append(log, chunk)
        expected += chunk
    wait_for(lambda: sink.got(log) == expected)
    wait_for(lambda: watcher.offset(log) == len(expected))
    assert watcher.mode == ("inotify" if watcher._inotify else "timer")


def test_a_file_or_folder_that_appears_later(
    follower: tuple[LogFollower, Sink], tmp_path: Path
) -> None:
    watcher, sink = follower
    later = tmp_path / "later.log"
    deep = tmp_path / "not" / "yet" / "job.log"
    watcher.follow(later)
    watcher.follow(deep)
    later.write_bytes(b"hello\n")
    wait_for(lambda: sink.got(later) == b"hello\n")
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"deep\n")
    wait_for(lambda: sink.got(deep) == b"deep\n")
    append(deep, b"more\n")
    wait_for(lambda: sink.got(deep) == b"deep\nmore\n")


def test_truncation_restarts_from_the_top(
    follower: tuple[LogFollower, Sink], tmp_path: Path
) -> None:
    watcher, sink = follower
    log = tmp_path / "job.log"
    log.write_bytes(b"x" * 100 + b"\n")
    watcher.follow(log)
    wait_for(lambda: len(sink.got(log)) == 101)
    log.write_bytes(b"new\n")  # truncated and rewritten, shorter than the offset
    wait_for(lambda: sink.got(log) == b"new\n")
    assert sink.resets == [(log, "truncated")]
    assert watcher.offset(log) == 4


def test_rotation_finishes_the_old_file_then_opens_the_new(
    follower: tuple[LogFollower, Sink], tmp_path: Path
) -> None:
    watcher, sink = follower
    log = tmp_path / "job.log"
    log.write_bytes(b"one\n")
    watcher.follow(log)
    wait_for(lambda: sink.got(log) == b"one\n")
    with log.open("ab") as old:
        old.write(b"two\n")
        old.flush()
        # Renamed away with unread bytes, then recreated: read the old one's end first.
        os.rename(log, tmp_path / "job.log.1")
        old.write(b"three\n")
    log.write_bytes(b"fresh\n")
    wait_for(lambda: sink.resets == [(log, "rotated")] and sink.got(log) == b"fresh\n")
    append(log, b"again\n")
    wait_for(lambda: sink.got(log) == b"fresh\nagain\n")


def test_rotation_reads_the_old_file_to_its_end(tmp_path: Path) -> None:
    sink = Sink()
    chunks: list[bytes] = []
    watcher = LogFollower(lambda p, d: chunks.append(d), on_reset=sink.on_reset)
    log = tmp_path / "job.log"
    log.write_bytes(b"one\n")
    watcher.follow(log)
    watcher.read_now()
    with log.open("ab") as old:
        old.write(b"two\n")
    os.rename(log, tmp_path / "job.log.1")
    log.write_bytes(b"fresh\n")
    watcher.read_now()
    assert chunks == [b"one\n", b"two\n", b"fresh\n"]
    assert sink.resets == [(log, "rotated")]


def test_reopen_offset_continues_after_a_marker(tmp_path: Path) -> None:
    got: list[bytes] = []
    log = tmp_path / "job.log"
    watcher = LogFollower(lambda p, d: got.append(d), reopen_offset=lambda p: 3)
    log.write_bytes(b"0123456789\n")
    watcher.follow(log)
    watcher.read_now()
    log.write_bytes(b"hd\nnew\n")  # rewritten shorter than what was read: truncated
    watcher.read_now()
    assert got == [b"0123456789\n", b"new\n"]


def test_a_restart_from_the_saved_offset_neither_rereads_nor_misses(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    data = (LOGS / "kohya.log").read_bytes()
    cut = len(data) // 2 + 7  # in the middle of a line
    log.write_bytes(data[:cut])
    first = LineSplitter()
    lines = []
    watcher = LogFollower(lambda p, d: lines.extend(first.feed(d)))
    watcher.follow(log)
    watcher.read_now()
    saved = watcher.unfollow(log) - len(first.pending)  # the partial line is re-read
    append(log, data[cut:])
    second = LineSplitter()
    again = LogFollower(lambda p, d: lines.extend(second.feed(d)))
    again.follow(log, saved)
    again.read_now()
    lines.extend(second.flush())
    whole = LineSplitter()
    assert lines == whole.feed(data) + whole.flush()


def test_unfollow_reads_the_rest_and_returns_the_offset(tmp_path: Path) -> None:
    got = bytearray()
    log = tmp_path / "job.log"
    log.write_bytes(b"abc")
    watcher = LogFollower(lambda p, d: got.extend(d))
    watcher.follow(log, 1)
    assert watcher.unfollow(log) == 3
    assert bytes(got) == b"bc"
    with pytest.raises(KeyError):
        watcher.offset(log)


def test_a_failing_callback_does_not_stop_following(tmp_path: Path) -> None:
    got = bytearray()

    def on_data(path: Path, data: bytes) -> None:
        if b"boom" in data:
            raise RuntimeError("consumer bug")
        got.extend(data)

    log = tmp_path / "job.log"
    with LogFollower(on_data, poll_fallback_s=0.05) as watcher:
        watcher.follow(log)
        log.write_bytes(b"boom\n")
        wait_for(lambda: watcher.offset(log) == 5)
        append(log, b"fine\n")
        wait_for(lambda: bytes(got) == b"fine\n")


def test_follow_and_stop_cut_a_batch_pause_short(tmp_path: Path) -> None:
    # After each batch of reads the thread pauses batch_ms; a new file to follow, or
    # stop(), must not wait for the pause to end (a minute here).
    sink = Sink()
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    first.write_bytes(b"one\n")
    watcher = LogFollower(sink.on_data, batch_ms=60_000)
    watcher.follow(first)
    watcher.start()
    try:
        append(first, b"two\n")  # read by the thread, which then pauses
        wait_for(lambda: sink.got(first) == b"one\ntwo\n")
        append(first, b"three\n")
        second.write_bytes(b"hello\n")
        watcher.follow(second)
        wait_for(lambda: sink.got(second) == b"hello\n")
        wait_for(lambda: sink.got(first) == b"one\ntwo\nthree\n")
    finally:
        thread = watcher._thread
        watcher.stop(timeout=10)
    assert thread is not None and not thread.is_alive()
    with pytest.raises(ValueError, match="batch_ms"):
        LogFollower(sink.on_data, batch_ms=-1)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(st.binary(max_size=300), max_size=12), start=st.integers(0, 20))
def test_every_byte_exactly_once(tmp_path: Path, chunks: list[bytes], start: int) -> None:
    log = tmp_path / f"log-{os.getpid()}-{time.monotonic_ns()}.bin"
    log.write_bytes(b"")
    got = bytearray()
    watcher = LogFollower(lambda p, d: got.extend(d), read_size=7)
    prefix = b"p" * start
    append(log, prefix)
    watcher.follow(log, start)
    for chunk in chunks:
        append(log, chunk)
        if chunk[:1] in (b"\x00", b"\xff"):
            watcher.read_now(log)  # sometimes read in the middle
    watcher.read_now()
    assert bytes(got) == b"".join(chunks)
    assert watcher.unfollow(log) == start + sum(map(len, chunks))


WRITER = """
import sys, time
data = open(sys.argv[1], "rb").read()
sizes = [1, 7, 64, 3, 500, 2, 90]
with open(sys.argv[2], "ab", buffering=0) as log:
    at = index = 0
    while at < len(data):
        size = sizes[index % len(sizes)]
        log.write(data[at : at + size])
        at, index = at + size, index + 1
        if index % 5 == 0:
            time.sleep(0.002)
"""


@pytest.mark.parametrize("fixture", ["kohya", "diffusers", "onetrainer", "aitoolkit"])
def test_pipeline_fed_by_a_writer_process(tmp_path: Path, fixture: str) -> None:
    source = LOGS / f"{fixture}.log"
    log = tmp_path / "job.log"
    log.write_bytes(b"")
    pipeline = LogPipeline(make_parser(None), metrics_path=tmp_path / "metrics.jsonl")
    events: list[LogEvent] = []
    lock = threading.Lock()

    def on_data(path: Path, data: bytes) -> None:
        with lock:
            events.extend(e for e in pipeline.feed(data).events())

    with LogFollower(on_data) as watcher:
        watcher.follow(log)
        subprocess.run(
            [sys.executable, "-c", WRITER, str(source), str(log)], check=True, timeout=60
        )
        size = log.stat().st_size
        wait_for(lambda: watcher.offset(log) == size)
    with lock:
        finished = pipeline.finish()
        events.extend(finished.events())
        pipeline.close()
    expected = make_parser(None)
    batch = parse_bytes(expected, source.read_bytes())
    # Read in arbitrary pieces, with bars handed out early: the same events and summary.
    assert [(e.kind, e.path, e.step) for e in events] == [
        (e.kind, e.path, e.step) for e in batch.events()
    ]
    want = batch.latest()
    got = pipeline.state.metrics
    assert want is not None
    assert repr(got) == repr(want)
    assert pipeline.offset == size
