"""TUI benchmarks (issue 6): with 1,000 jobs in the store and 8 running on sim:4,

1. time to first frame: from launching ``python`` until the app's first screen has been
   drawn on a real pseudo-terminal (target <= 1.5 s);
2. RSS once the jobs are loaded, and at the end (target <= 150 MB; torch never loaded);
3. CPU of the whole process (TUI, hosted engine, follower) while the 8 jobs report
   progress, 2 updates a second each (target <= 5% of a core);
4. key latency (target <= 100 ms): from writing a key to the terminal until the end of
   the first whole frame that shows its answer (the next job's detail for ``j``/``k``,
   the other screen for 1-4 and Tab). The terminal answers the app's query for
   synchronized output, as modern terminals do, so every frame comes bracketed and its
   end is known; the end of the first frame after the key is printed beside it;
5. time for the app to apply 100 progress updates (a Pilot, in this process).

The 8 jobs are real tmux windows (``sleep``) on a private tmux server killed at the end;
their progress events are published on the engine's bus, as the log monitor does. The
app is started with the options ``loradeck`` gives it (``freeze_gc``, see run_tui).

    .venv/bin/python bench/bench_tui.py [--seconds 20] [--rounds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

JOBS = 1_000
RUNNING = 8
SIZE = (120, 40)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- the home


def make_home(root: Path, socket: str) -> Path:
    """1,000 jobs: 992 finished ones and 8 `sleep` jobs started by an engine (which then
    stops; the jobs keep running in tmux and the TUI's engine adopts them)."""
    from loradeck.core.home import Home
    from loradeck.core.models import FailureClass, Job, JobSpec, JobState, Progress
    from loradeck.core.runtime import build_engine
    from loradeck.core.settings import Settings
    from loradeck.core.store import Store

    home = Home.open(root / "home")
    now = time.time()
    with Store(home.root) as store, store.transaction() as txn:
        for n in range(JOBS):
            job_id = txn.next_job_id()
            running = n >= JOBS - RUNNING
            spec = JobSpec(
                name=f"sweep-r{(n % 4 + 1) * 8}-lr{n % 5}e-4-{n}",
                command="sleep 600" if running else "true",
                vram_gb=8.0,
                user=("mira", "jon", "ana")[n % 3],
                tags=["bench"],
            )
            folder = home.job_dir(job_id)
            job = Job(
                id=job_id,
                spec=spec,
                batch_id=None,
                command=spec.command or "",
                output_dir=folder,
                log_file=folder / "output.log",
                created_at=now - 86_400 + n,
            )
            if not running:
                job = job.transition(JobState.RUNNING, started_at=now - 80_000 + n, attempts=1)
                failed = n % 13 == 0
                job = job.transition(
                    JobState.FAILED if failed else JobState.COMPLETED,
                    ended_at=now - 70_000 + n,
                    exit_code=1 if failed else 0,
                    failure_class=FailureClass.EXIT_CODE if failed else None,
                    reason="exit code 1" if failed else "",
                    progress=Progress(step=2000, total_steps=2000, loss=0.07),
                )
            txn.put(job)
    engine = build_engine(home, Settings(), gpus="sim:4", tmux_session="bench", tmux_socket=socket)
    engine.start()
    try:
        with Store(home.root) as store:
            deadline = time.monotonic() + 60
            while sum(j.state == JobState.RUNNING for j in store.jobs(active_only=True)) < RUNNING:
                if time.monotonic() > deadline:
                    raise SystemExit("the 8 jobs did not start")
                engine.wake()
                time.sleep(0.2)
    finally:
        engine.stop()
    return home.root


# --------------------------------------------------------------------------- the child


def child(home: Path, socket: str, marks: Path, progress_seconds: float) -> None:
    """The app on a real terminal; writes timestamps to ``marks`` (one JSON a line)."""
    from loradeck.core import events as ev
    from loradeck.core.facade import LiveFacade
    from loradeck.core.home import Home
    from loradeck.core.models import JobState
    from loradeck.core.settings import Settings
    from loradeck.tui.app import LoradeckApp

    def mark(what: str, **extra: object) -> None:
        with marks.open("a") as out:
            out.write(json.dumps({"what": what, "at": time.time(), **extra}) + "\n")

    facade = LiveFacade(
        Home(home), Settings(), gpus="sim:4", tmux_session="bench", tmux_socket=socket
    )

    class Timed(LoradeckApp):
        def on_mount(self) -> None:
            super().on_mount()
            self.call_after_refresh(lambda: mark("first_frame"))

    app = Timed(facade, freeze_gc=True)  # as run_tui starts it

    def progress() -> None:
        while not (app.deck.loaded and app.deck.machine is not None):
            time.sleep(0.05)
        mark("loaded", modules=sorted(m for m in sys.modules if m.split(".")[0] in HEAVY))
        time.sleep(2.0)
        running = [j for j in app.deck.jobs.values() if j.state == JobState.RUNNING]
        mark("progress_start", running=len(running))
        step, end = 0, time.monotonic() + progress_seconds
        while time.monotonic() < end:
            step += 1
            for job in running:  # 2 updates a second per job, as tqdm redraws
                facade.bus.publish(
                    ev.JobProgress(
                        job_id=job.id,
                        name=job.name,
                        step=step,
                        total_steps=4000,
                        loss=0.3 / (1 + step / 50),
                        lr=1e-4,
                        eta_s=4000 - step,
                    )
                )
            time.sleep(0.5)
        mark("progress_end")

    threading.Thread(target=progress, daemon=True).start()
    app.run()
    mark("exited")


HEAVY = ("torch", "torchvision", "open_clip", "torchmetrics")


# --------------------------------------------------------------------------- the parent


#: Synchronized output (DEC mode 2026): the app brackets every frame with these once the
#: terminal says it supports them, as modern terminals (and tmux 3.4+) do.
SYNC_QUERY = b"\x1b[?2026$p"
SYNC_REPLY = b"\x1b[?2026;2$y"
SYNC_START = b"\x1b[?2026h"
SYNC_END = b"\x1b[?2026l"
_ESCAPE_RE = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b.")


@dataclass(frozen=True)
class Frame:
    """One frame the app wrote: when its first and last bytes arrived, and its text."""

    began: float
    ended: float
    text: str


@dataclass(frozen=True)
class KeyAnswer:
    """How long a key took: to the end of the first whole frame after it, and to the end
    of the first whole frame that shows its answer (often the same frame)."""

    first_frame: float
    frame: float


class Terminal:
    """A pseudo-terminal of SIZE running the child. Like a modern terminal it answers the
    app's query for synchronized output, so every frame arrives between SYNC_START and
    SYNC_END and the end of a frame can be told exactly."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        self.launched = time.time()
        self.launched_clock = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.chunks: list[float] = []
        self.frames: list[Frame] = []
        self.tail = b""
        self._pending = b""
        self._frame_began: float | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            with self._lock:
                self.chunks.append(now)
                self.tail = (self.tail + data)[-4000:]
                self._scan(data, now)

    def _scan(self, data: bytes, now: float) -> None:
        """Cut the output into frames (called with the lock held)."""
        buffer = self._pending + data
        if SYNC_QUERY in buffer:
            os.write(self.master, SYNC_REPLY)
            buffer = buffer.replace(SYNC_QUERY, b"")
        while True:
            if self._frame_began is None:
                start = buffer.find(SYNC_START)
                if start < 0:
                    self._pending = buffer[-(len(SYNC_START) - 1) :]
                    return
                self._frame_began = now
                buffer = buffer[start + len(SYNC_START) :]
            end = buffer.find(SYNC_END)
            if end < 0:
                self._pending = buffer
                return
            text = _ESCAPE_RE.sub(b"", buffer[:end]).decode("utf-8", "replace")
            self.frames.append(Frame(self._frame_began, now, text))
            self._frame_began = None
            buffer = buffer[end + len(SYNC_END) :]

    def synchronized(self) -> bool:
        with self._lock:
            return bool(self.frames)

    def first_frame_after_launch(self) -> float | None:
        """Seconds from the launch to the end of the first whole frame."""
        with self._lock:
            return self.frames[0].ended - self.launched_clock if self.frames else None

    def key_latency(
        self, key: bytes, shows: tuple[str, ...] = (), quiet: float = 0.3
    ) -> KeyAnswer | None:
        """Write ``key`` (after ``quiet`` seconds without output, so that the answer is
        this key's) and time the answer: the end of the first whole frame after it, and
        the end of the first whole frame after it whose text contains every string of
        ``shows``."""
        deadline = time.perf_counter() + 5
        while time.perf_counter() < deadline:
            with self._lock:
                last = self.chunks[-1] if self.chunks else 0.0
            if time.perf_counter() - last >= quiet:
                break
            time.sleep(0.02)
        sent = time.perf_counter()
        os.write(self.master, key)
        while time.perf_counter() < sent + 3:
            with self._lock:
                after = [f for f in self.frames if f.began > sent]
            frame = next((f for f in after if all(part in f.text for part in shows)), None)
            if frame is not None:
                return KeyAnswer(after[0].ended - sent, frame.ended - sent)
            time.sleep(0.002)
        return None


def read_marks(path: Path) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            item = json.loads(line)
            out[str(item["what"])] = item
    return out


def wait_mark(path: Path, what: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        marks = read_marks(path)
        if what in marks:
            return marks[what]
        time.sleep(0.02)
    raise SystemExit(f"the TUI never reached {what!r}")


def bench_terminal(root: Path, home: Path, socket: str, seconds: float, rounds: int) -> None:
    marks = root / "marks.jsonl"
    argv = [
        sys.executable,
        __file__,
        "--child",
        str(home),
        socket,
        str(marks),
        str(seconds),
    ]
    term = Terminal(argv)
    proc = psutil.Process(term.proc.pid)
    try:
        try:
            first = wait_mark(marks, "first_frame", 30)
        except SystemExit:
            print(term.tail.decode("utf-8", "replace"))
            raise
        loaded = wait_mark(marks, "loaded", 60)
        print(f"time to first frame: {float(first['at']) - term.launched:.2f} s (target <= 1.5 s)")
        shown = term.first_frame_after_launch()
        if shown is not None:
            print(f"  first whole frame received by the terminal: {shown:.2f} s")
        print(f"time until 1,000 jobs shown: {float(loaded['at']) - term.launched:.2f} s")
        print(f"heavy modules loaded: {loaded['modules'] or 'none'}")
        print(f"RSS with 1,000 jobs loaded: {proc.memory_info().rss / 2**20:.0f} MB")
        start = wait_mark(marks, "progress_start", 30)
        print(f"jobs running (adopted): {start['running']}")
        time.sleep(1.0)
        cpu0, wall0 = proc.cpu_times(), time.perf_counter()
        time.sleep(max(1.0, seconds - 3))
        cpu1, wall1 = proc.cpu_times(), time.perf_counter()
        used = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        print(
            f"CPU while 8 jobs report progress (16 updates/s): "
            f"{100 * used / (wall1 - wall0):.1f}% of a core (target <= 5%)"
        )
        wait_mark(marks, "progress_end", seconds + 30)
        time.sleep(1.0)
        cpu0, wall0 = proc.cpu_times(), time.perf_counter()
        time.sleep(5.0)
        cpu1, wall1 = proc.cpu_times(), time.perf_counter()
        used = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        idle = 100 * used / (wall1 - wall0)
        print(f"CPU with 8 jobs running, no progress: {idle:.1f}% of a core")
        bench_keys(term, rounds)
        print(f"RSS at the end: {proc.memory_info().rss / 2**20:.0f} MB (target <= 150 MB)")
    finally:
        os.write(term.master, b"q")
        try:
            term.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.write(term.master, b"s")  # the quit dialog, should jobs be queued
            try:
                term.proc.wait(20)
            except subprocess.TimeoutExpired:
                term.proc.kill()


#: What a whole frame of each screen shows (text the other screens do not have).
SHOWS: dict[str, tuple[str, ...]] = {
    "jobs": ("state:", "STATE", "PROG"),
    "gpus": ("foreign:", "util"),
    "results": ("CHECKPOINT", "SAVED"),
    "events": ("EVENT", "WHAT"),
}
SCREEN_KEYS = (("2", "gpus"), ("3", "results"), ("4", "events"), ("1", "jobs"))


def _figures(label: str, answers: list[KeyAnswer]) -> str:
    frame = [1000 * a.frame for a in answers]
    first = [1000 * a.first_frame for a in answers]
    return (
        f"  {label:<24} answer shown: p50 {statistics.median(frame):4.0f}  "
        f"p95 {percentile(frame, 0.95):4.0f}  max {max(frame):4.0f} ms   "
        f"(first frame p50 {statistics.median(first):3.0f}, p95 {percentile(first, 0.95):3.0f}, "
        f"max {max(first):3.0f}; n={len(frame)})"
    )


def bench_keys(term: Terminal, rounds: int) -> None:
    """Key latency, from writing the key to the end of the first whole frame showing its
    answer: j/k (the cursor moves in the first frame; the answer is the next job's
    detail, drawn in a later frame), 1-4 and Tab (the other screen drawn). Each screen
    is visited once before the figures are taken (its first visit is reported apart)."""
    if not term.synchronized():
        print("key latency: the app never used synchronized output; cannot time frames")
        return
    first_running = JOBS - RUNNING + 1  # the cursor starts on the first running job
    answers: dict[str, list[KeyAnswer]] = {}
    missed: list[str] = []

    def press(label: str, key: bytes, shows: tuple[str, ...]) -> None:
        answer = term.key_latency(key, shows)
        if answer is None:
            missed.append(label)
        else:
            answers.setdefault(label, []).append(answer)

    for n in range(30):
        down = n % 2 == 0
        job_id = first_running + 1 if down else first_running
        press("j/k (next job detail)", b"j" if down else b"k", (f"#{job_id} ",))
    first_visits = []
    for key, mode in SCREEN_KEYS:
        answer = term.key_latency(key.encode(), SHOWS[mode])
        if answer is not None:
            first_visits.append(f"{key} {1000 * answer.frame:.0f} ms")
        else:
            missed.append(f"first {key}")
    for _ in range(rounds):
        for key, mode in SCREEN_KEYS:
            press(f"{key} (to {mode})", key.encode(), SHOWS[mode])
        for _key, mode in SCREEN_KEYS:
            press("Tab (next screen)", b"\t", SHOWS[mode])
    print("key latency, from the key written to the end of a frame (target <= 100 ms):")
    print(f"  first visit of each screen: {', '.join(first_visits) or '-'}")
    for label, found in answers.items():
        print(_figures(label, found))
    if missed:
        print(f"  no answer within 3 s: {', '.join(missed)}")


def bench_updates(home: Path, socket: str) -> None:
    """100 progress events published on the bus until the row shows the last one."""
    from loradeck.core import events as ev
    from loradeck.core.facade import LiveFacade
    from loradeck.core.home import Home
    from loradeck.core.models import JobState
    from loradeck.core.settings import Settings
    from loradeck.tui.app import LoradeckApp
    from loradeck.tui.job_table import JobTable

    async def run() -> None:
        facade = LiveFacade(
            Home(home), Settings(), gpus="sim:4", tmux_session="bench", tmux_socket=socket
        )
        app = LoradeckApp(facade, environ={})
        async with app.run_test(size=SIZE) as pilot:
            while not app.deck.loaded:
                await pilot.pause(0.05)
            table = app.screen.query_one(JobTable)
            running = [j for j in app.deck.jobs.values() if j.state == JobState.RUNNING]
            times, cpu = [], []
            for round_ in range(5):
                base = 10_000 * (round_ + 1)
                start, cpu0 = time.perf_counter(), time.process_time()
                for n in range(100):
                    job = running[n % len(running)]
                    facade.bus.publish(
                        ev.JobProgress(
                            job_id=job.id, name=job.name, step=base + n, total_steps=10**6
                        )
                    )
                last = running[99 % len(running)]
                want = f"{base + 99}/{10**6}"[:9]
                while want not in table.row_text(last.id)[5]:
                    await pilot.pause(0.001)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu0)
            wall_ms, cpu_ms = 1000 * statistics.median(times), 1000 * statistics.median(cpu)
            print(
                f"100 progress updates on screen after: median {wall_ms:.0f} ms (the table "
                f"redraws progress 4 times a second at most); CPU time spent: {cpu_ms:.0f} ms"
            )
            await pilot.press("q")
            while not app.closed:
                await pilot.pause(0.05)

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=8, help="visits of each screen timed")
    parser.add_argument("--child", nargs=4, metavar=("HOME", "SOCKET", "MARKS", "SECONDS"))
    args = parser.parse_args()
    if args.child:
        home, socket, marks, seconds = args.child
        child(Path(home), socket, Path(marks), float(seconds))
        return
    socket = f"loradeck-bench-tui-{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("SHELL", "/bin/sh")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            home = make_home(root, socket)
            bench_terminal(root, home, socket, args.seconds, args.rounds)
            bench_updates(home, socket)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


if __name__ == "__main__":
    main()
