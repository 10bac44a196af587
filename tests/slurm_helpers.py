"""An engine in Slurm mode in this process, for the engine-level Slurm tests (on the dev
cluster of scripts/slurm-dev-cluster.sh; see slurm_fixtures)."""

from __future__ import annotations

from conftest import wait_for
from engine_helpers import Harness

from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.home import Home
from loradeck.core.models import Job, JobState
from loradeck.core.runtime import build_engine
from loradeck.core.settings import (
    ExecutorSettings,
    SchedulerSettings,
    Settings,
    SlurmSettings,
)


def slurm_settings(**slurm: object) -> Settings:
    return Settings(
        executor=ExecutorSettings(kind="slurm", kill_grace=1.0),
        scheduler=SchedulerSettings(check_interval=2.0),
        slurm=SlurmSettings.model_validate(slurm),
    )


class SlurmHarness(Harness):
    """An engine in Slurm mode in this process, plus a store handle acting like a CLI.
    Jobs are submitted into ``home`` (so, with a shared root, their folders go there)."""

    def __init__(self, home: Home, settings: Settings | None = None) -> None:
        settings = settings or slurm_settings()
        super().__init__(home.root, settings=settings, engine=build_engine(home, settings))
        self.home = home
        assert isinstance(self.engine.executor, SlurmExecutor)
        self.executor: SlurmExecutor = self.engine.executor

    def wait(self, job_id: int, *states: JobState, timeout: float = 60) -> Job:
        return self.wait_state(job_id, *states, timeout=timeout)

    def wait_reason(self, job_id: int, prefix: str, timeout: float = 60) -> Job:
        def check() -> Job | None:
            job = self.job(job_id)
            return job if job.reason.startswith(prefix) else None

        found = wait_for(check, timeout, f"job {job_id}'s reason to start with {prefix!r}")
        assert isinstance(found, Job)
        return found

    def wait_passes(self, count: int = 2, timeout: float = 30) -> None:
        """Until the engine has made ``count`` more full passes."""
        start = self.engine.passes
        wait_for(lambda: self.engine.passes >= start + count, timeout, f"{count} engine passes")


__all__ = ["SlurmHarness", "slurm_settings"]
