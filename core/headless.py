"""Headless mode: ``loradeck --run-batch FILE`` and ``loradeck serve``.

``--run-batch`` submits a batch (or resumes the same file's unfinished batch), hosts the
engine if no other loradeck does (else follows the store), shows progress until every
job of the batch has ended, prints a summary and exits 0 (all completed), 1 (any failed,
timed out or cancelled), 2 (bad input) or 130 (Ctrl-C: scheduling stops, running jobs
keep running in tmux unless ``--cancel-on-exit``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from loradeck.core import events as ev
from loradeck.core.batch import load_batch
from loradeck.core.clusterview import fit_check_for
from loradeck.core.engine import Engine
from loradeck.core.errors import EngineLockedError
from loradeck.core.home import Home
from loradeck.core.jobview import format_duration, format_table, one_line, progress_text
from loradeck.core.lease import describe_holder
from loradeck.core.models import Job, JobState
from loradeck.core.settings import Settings
from loradeck.core.store import Store
from loradeck.core.submit import FitCheck, find_previous_batch, submit_with_evaluation

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
#: Seconds between batch ETA estimates (a simulation of the rest of the batch).
ETA_INTERVAL = 5.0


class LineReporter:
    """One plain line per event, for logs and pipes (no terminal)."""

    def __init__(self, out: TextIO, job_ids: set[int]) -> None:
        self.out = out
        self.job_ids = job_ids
        self._last_tenth: dict[int, int] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        text = self.describe(event)
        if text is None:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        with self._lock:
            print(f"{stamp} {text}", file=self.out, flush=True)

    def describe(self, event: ev.Event) -> str | None:
        if isinstance(event, ev.EngineMessage):
            return ev.describe_event(event)
        if not isinstance(event, ev.JobEvent) or event.job_id not in self.job_ids:
            return None
        if isinstance(event, ev.JobProgress):
            return self._progress(event)
        if isinstance(event, ev.JobSubmitted):
            return None
        return ev.describe_event(event)

    def _progress(self, event: ev.JobProgress) -> str | None:
        """A line per tenth of a job's steps, not per update."""
        if event.step is None or not event.total_steps:
            return None
        tenth = int(10 * event.step / event.total_steps)
        if tenth <= self._last_tenth.get(event.job_id, 0):
            return None
        self._last_tenth[event.job_id] = tenth
        loss = f", loss {event.loss:.4g}" if event.loss is not None else ""
        who = f"job {event.job_id} {one_line(event.name)}"
        return f"{who} step {event.step}/{event.total_steps}{loss}"


def batch_table(jobs: Sequence[Job], now: float) -> str:
    rows = []
    for job in jobs:
        gpus = ",".join(map(str, job.gpu_ids)) if job.gpu_ids else ("-" if job.gpus else "cpu")
        elapsed = None
        if job.started_at is not None:
            end = job.ended_at if job.state.is_terminal and job.ended_at else now
            elapsed = end - job.started_at
        loss = "-"
        if job.progress is not None and job.progress.loss is not None:
            loss = f"{job.progress.loss:.4g}"
        rows.append(
            [
                str(job.id),
                one_line(job.name)[:32],
                job.state.value,
                gpus,
                format_duration(elapsed),
                progress_text(job),
                loss,
                one_line(job.reason)[:40],
            ]
        )
    return format_table(rows, ["ID", "NAME", "STATE", "GPU", "ELAPSED", "STEP", "LOSS", "NOTE"])


class LiveTable:
    """A table redrawn in place on a terminal, at most a few times a second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lines = 0

    def draw(self, jobs: Sequence[Job], now: float, footer: str) -> None:
        text = batch_table(jobs, now) + "\n" + footer
        lines = text.splitlines()
        up = f"\x1b[{self._lines}F" if self._lines else ""
        body = "".join(f"\x1b[2K{line}\n" for line in lines)
        extra = max(0, self._lines - len(lines))
        clear = "".join("\x1b[2K\n" for _ in range(extra)) + (f"\x1b[{extra}F" if extra else "")
        self.out.write(up + body + clear)
        self.out.flush()
        self._lines = len(lines)


def _outcome(jobs: Sequence[Job]) -> int:
    return EXIT_OK if all(job.state == JobState.COMPLETED for job in jobs) else EXIT_FAILED


def _summary(jobs: Sequence[Job], now: float) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state.value.lower()] = counts.get(job.state.value.lower(), 0) + 1
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return batch_table(jobs, now) + f"\n\n{len(jobs)} jobs: {parts}"


def run_batch(
    path: Path,
    *,
    home: Home,
    settings: Settings,
    engine: Engine,
    fresh: bool = False,
    cancel_on_exit: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    interactive: bool | None = None,
) -> int:
    """The whole of ``--run-batch``; returns the exit code."""
    plan = load_batch(path, settings)
    store = Store(home.root)
    try:
        hosting = _host(engine, err)
        previous = None if fresh else find_previous_batch(store, plan)
        job_ids: tuple[int, ...]
        if previous is not None and any(store.get(i).state.is_active for i in previous.job_ids):
            job_ids = previous.job_ids
            print(
                f"resuming batch {previous.id} ({len(job_ids)} jobs) from {path}; "
                "use --fresh to submit it again",
                file=err,
            )
        else:
            batch, jobs = submit_with_evaluation(
                store, home, plan, settings, fit_check=_fit_check(engine)
            )
            job_ids = tuple(job.id for job in jobs)
            label = f"batch {batch.id}" if batch else "batch"
            print(f"{label}: {len(job_ids)} jobs submitted from {path}", file=err)
            if hosting:
                engine.wake()
        return _follow(store, engine, job_ids, hosting, cancel_on_exit, out, interactive)
    finally:
        store.close()


def _host(engine: Engine, err: TextIO) -> bool:
    try:
        engine.start()
    except EngineLockedError:
        print(
            "loradeck: another engine runs this home's queue "
            f"({describe_holder(engine.home.engine_lock)}); following its progress",
            file=err,
        )
        return False
    if engine.slurm is None:  # with Slurm, this machine's GPUs do not matter
        snapshot = engine.inventory.snapshot()
        if snapshot.message:
            print(f"loradeck: {snapshot.message}", file=err)
    return True


def _fit_check(engine: Engine) -> FitCheck | None:
    if engine.slurm is not None:
        return None  # Slurm's nodes, not this machine's GPUs; sbatch refuses what cannot fit
    snapshot = engine.inventory.snapshot()
    return fit_check_for(engine.cluster_view(snapshot, []))


def _follow(
    store: Store,
    engine: Engine,
    job_ids: tuple[int, ...],
    hosting: bool,
    cancel_on_exit: bool,
    out: TextIO,
    interactive: bool | None,
) -> int:
    tty = out.isatty() if interactive is None else interactive
    changed = threading.Event()
    ids = set(job_ids)
    unsubscribe = []
    reporter = LineReporter(out, ids)
    if hosting:
        unsubscribe.append(engine.bus.subscribe(lambda _e: changed.set()))
        if not tty:
            unsubscribe.append(engine.bus.subscribe(reporter))
    live = LiveTable(out) if tty else None
    interrupted = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        interrupted.set()
        changed.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)
    try:
        jobs: list[Job] = []
        eta_at, eta = 0.0, None
        while True:
            store.refresh()
            jobs = store.get_many(job_ids)
            now = time.time()
            if live is not None:
                running = sum(job.state == JobState.RUNNING for job in jobs)
                ended = sum(job.state.is_terminal for job in jobs)
                if hosting and now - eta_at >= ETA_INTERVAL:
                    eta_at, eta = now, engine.eta(jobs)
                eta_text = f", batch ETA {format_duration(eta)}" if eta else ""
                footer = f"{ended}/{len(jobs)} ended, {running} running{eta_text}"
                live.draw(jobs, now, footer + "  (Ctrl-C to stop)")
            if all(job.state.is_terminal for job in jobs) or interrupted.is_set():
                break
            changed.wait(0.5 if live is not None or not hosting else 2.0)
            changed.clear()
        if interrupted.is_set():
            print(
                "\nloradeck: interrupted; scheduling stopped"
                + (
                    "; running jobs cancelled"
                    if cancel_on_exit
                    else "; running jobs keep running in tmux"
                ),
                file=sys.stderr,
            )
        if hosting:
            engine.stop(cancel_running=cancel_on_exit and interrupted.is_set())
            store.refresh()
            jobs = store.get_many(job_ids)
        print(_summary(jobs, time.time()), file=out, flush=True)
        if interrupted.is_set():
            return EXIT_INTERRUPTED
        return _outcome(jobs)
    finally:
        for undo in unsubscribe:
            undo()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)


def serve(engine: Engine, *, out: TextIO = sys.stdout) -> int:
    """Host the engine until Ctrl-C or SIGTERM (``loradeck serve``)."""
    engine.start()
    engine.bus.subscribe(LineReporter(out, _AllIds()))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"loradeck engine serving {engine.home.root} (pid {os.getpid()}); Ctrl-C to stop",
        file=out,
        flush=True,
    )
    # A timed wait: the signal handler runs in this (main) thread, and a wait with no
    # timeout is not reliably woken to run it.
    while not stop.wait(0.5):
        pass
    engine.stop()
    print("loradeck engine stopped; running jobs keep running in tmux", file=out, flush=True)
    return EXIT_OK


class _AllIds(set[int]):
    def __contains__(self, item: object) -> bool:
        return True
