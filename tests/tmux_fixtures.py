"""Fixtures for tests that run real jobs in real tmux on a private socket.

Import them into a test module (``from tmux_fixtures import *``) or into conftest.py.
Every test gets its own tmux server (socket ``loradeck-exec-<pid>-<random>``), killed with
every pane in it at teardown, and processes a job left behind are killed too.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libtmux
import psutil
import pytest

from loradeck.core.executor import AttemptResult, AttemptStatus, TmuxExecutor
from loradeck.core.executor.proctree import find_tree
from loradeck.core.models import Job, JobSpec

TEST_SESSION = "loradeck-test"

MakeJob = Callable[..., Job]


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def wait_status(
    executor: TmuxExecutor,
    job: Job,
    status: AttemptStatus = AttemptStatus.EXITED,
    *,
    timeout: float = 20.0,
) -> AttemptResult:
    """Poll the executor until the job's attempt reaches ``status``."""

    def reached() -> AttemptResult | None:
        result = executor.poll(job)
        return result if result.status == status else None

    result: AttemptResult = wait_until(reached, timeout=timeout, what=f"job {job.id} {status}")
    return result


def log_text(job: Job) -> str:
    """The job's log so far ("" before the tee has created it)."""
    try:
        return job.log_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def pane_text(socket_name: str, window_id: str | None) -> str:
    """Everything the job's pane shows, history included (read through libtmux)."""
    server = libtmux.Server(socket_name=socket_name)
    window = server.windows.get(window_id=window_id)
    assert window is not None
    pane = window.active_pane
    assert pane is not None
    return "\n".join(pane.capture_pane(start="-", end="-", join_wrapped=True))


def kill_job_processes(folder: Path) -> list[int]:
    """Kill every process of every job attempt whose ``attempt.json`` lies under
    ``folder``, escaped (setsid) ones included; the pids killed.

    For test teardown: killing a tmux server hangs up each pane's process group, but a
    process that left the group survives, and so does the log tee that it feeds.
    """
    killed: list[int] = []
    for attempt_file in folder.rglob("attempt.json"):
        try:
            token = json.loads(attempt_file.read_text())["token"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for proc in find_tree(None, token=token):
            try:
                proc.kill()
                killed.append(proc.pid)
            except psutil.Error:
                continue
    return killed


@pytest.fixture
def tmux_exec_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A private tmux socket name; its server, and every process of the jobs under
    tmp_path, die at teardown."""
    name = f"loradeck-exec-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SHELL", "/bin/sh")
    if not os.environ.get("TERM"):
        monkeypatch.setenv("TERM", "xterm-256color")
    yield name
    kill_job_processes(tmp_path)
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)
    folder = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
    (folder / name).unlink(missing_ok=True)  # tmux leaves the socket file behind


@pytest.fixture
def tmux_executor(tmux_exec_socket: str) -> TmuxExecutor:
    """A TmuxExecutor on the private server, with a short SIGKILL settle time."""
    return TmuxExecutor(session=TEST_SESSION, socket_name=tmux_exec_socket, settle=5.0)


@pytest.fixture
def make_tmux_job(tmp_path: Path) -> MakeJob:
    """Build a Job whose folder is under tmp_path: ``make_tmux_job(command, name=...,
    attempts=1, **spec_fields)``."""
    counter = iter(range(1, 10_000))

    def make(command: str, *, name: str = "job", attempts: int = 1, **spec: Any) -> Job:
        job_id = next(counter)
        folder = tmp_path / "jobs" / str(job_id)
        job = Job(
            id=job_id,
            spec=JobSpec(name=name, command=command, **spec),
            command=command,
            output_dir=folder / "out",
            log_file=folder / "output.log",
            created_at=time.time(),
            attempts=attempts,
        )
        return job

    return make


__all__ = [
    "TEST_SESSION",
    "MakeJob",
    "kill_job_processes",
    "log_text",
    "make_tmux_job",
    "pane_text",
    "tmux_exec_socket",
    "tmux_executor",
    "wait_status",
    "wait_until",
]
