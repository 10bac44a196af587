"""The real single-node Slurm of scripts/slurm-dev-cluster.sh, for the Slurm tests.

``slurm_cluster`` (session) starts the cluster unless it runs (CI starts it in .ci/run)
and skips, with the script's reason, only where Slurm cannot be installed (not root, no
apt-get); any other failure of the script fails the tests. It stops the cluster at the
end only if it started it (``LORADECK_SLURM_KEEP=1`` keeps it for the next run).

``slurm_home`` gives each test its own loradeck home and, afterwards, cancels every Slurm
job of that home and waits until they have ended, so the next test finds the 4 fake GPUs
free.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.executor.slurm_commands import SlurmCommands
from loradeck.core.executor.slurm_states import SQUEUE_FORMAT, SlurmJob, parse_squeue
from loradeck.core.home import Home
from loradeck.core.settings import SlurmSettings

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "scripts" / "slurm-dev-cluster.sh"
#: Exit status of the script where Slurm cannot be installed.
CANNOT_INSTALL = 3


@dataclass(frozen=True)
class SlurmCluster:
    """The running dev cluster."""

    commands: SlurmCommands
    gpus: int = 4

    def squeue(self, *job_ids: str) -> dict[str, SlurmJob]:
        """What squeue says about ``job_ids``, by id."""
        out = self.commands.run(
            "squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", SQUEUE_FORMAT
        )
        return parse_squeue(out)

    def scontrol_job(self, job_id: str) -> str:
        """``scontrol show job -o`` of one job."""
        return self.commands.run("scontrol", "show", "job", "-o", job_id)


def _script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The dev cluster, started if needed."""
    was_running = _script("status", timeout=60).returncode == 0
    done = _script("start")
    if done.returncode == CANNOT_INSTALL:
        pytest.skip(f"Slurm cannot be installed here: {done.stderr.strip()}")
    if done.returncode != 0:
        pytest.fail(
            f"scripts/slurm-dev-cluster.sh start failed ({done.returncode}):\n"
            f"{done.stdout}{done.stderr}"
        )
    try:
        yield SlurmCluster(SlurmCommands(timeout=30.0))
    finally:
        if not was_running and not os.environ.get("LORADECK_SLURM_KEEP"):
            _script("stop", timeout=120)


@pytest.fixture
def slurm_home(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[Home]:
    """A loradeck home whose Slurm jobs are cancelled (and waited for) afterwards."""
    home = Home.open(tmp_path / "home")
    yield home
    cancel_home_jobs(home, slurm_cluster.commands)


def cancel_home_jobs(home: Home, commands: SlurmCommands, timeout: float = 60.0) -> None:
    """scancel every active Slurm job of ``home``; wait until Slurm says they ended."""
    executor = SlurmExecutor(SlurmSettings(), home=home, commands=commands)
    deadline = time.monotonic() + timeout
    while True:
        alive = [ref for ref, found in executor.adopt().items() if found.alive]
        if not alive:
            return
        commands.run("scancel", *alive, quiet_errors=("Invalid job id",))
        if time.monotonic() > deadline:
            raise AssertionError(f"Slurm jobs {alive} did not end after scancel")
        time.sleep(0.2)


__all__ = ["CLUSTER_SCRIPT", "SlurmCluster", "cancel_home_jobs", "slurm_cluster", "slurm_home"]
