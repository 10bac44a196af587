"""An in-process engine on a private tmux server, for engine-level tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for, write

from loradeck.core.batch import load_batch
from loradeck.core.engine import Engine
from loradeck.core.events import Event
from loradeck.core.home import Home
from loradeck.core.models import Job, JobState
from loradeck.core.runtime import build_engine
from loradeck.core.settings import ExecutorSettings, SchedulerSettings, Settings
from loradeck.core.store import Store
from loradeck.core.submit import submit_plan

FAST = Settings(
    executor=ExecutorSettings(kill_grace=1.0),
    scheduler=SchedulerSettings(check_interval=2.0),
)


class Harness:
    """An engine in this process, plus a second store handle acting like a CLI."""

    def __init__(
        self,
        root: Path,
        socket: str | None = None,
        settings: Settings = FAST,
        gpus: str = "sim:4",
        *,
        engine: Engine | None = None,
    ) -> None:
        self.home = Home.open(root)
        self.settings = settings
        self.engine = engine or build_engine(
            self.home, settings, gpus=gpus, tmux_session="ld", tmux_socket=socket
        )
        self.events: list[Event] = []
        self.engine.bus.subscribe(self.events.append)
        self.store = Store(self.home.root)

    def submit(self, batch_text: str, folder: Path) -> list[Job]:
        path = write(folder / f"batch-{time.monotonic_ns()}.toml", batch_text)
        _, jobs = submit_plan(self.store, self.home, load_batch(path, self.settings))
        self.engine.wake()
        return jobs

    def job(self, job_id: int) -> Job:
        self.store.refresh()
        return self.store.get(job_id)

    def wait_state(self, job_id: int, *states: JobState, timeout: float = 30) -> Job:
        def check() -> Job | None:
            job = self.job(job_id)
            return job if job.state in states else None

        result = wait_for(check, timeout, f"job {job_id} to reach {'/'.join(states)}")
        assert isinstance(result, Job)
        return result


@pytest.fixture
def harness(tmp_path: Path, tmux_socket: str) -> Iterator[Harness]:
    h = Harness(tmp_path / "home", tmux_socket)
    h.engine.start()
    yield h
    h.engine.stop()
    h.store.close()
