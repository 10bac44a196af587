"""The GPU screen's reading in Slurm mode, on the real single-node Slurm of
scripts/slurm-dev-cluster.sh (node ``vm``-like, 4 fake GPUs): the facade hosts an engine
in Slurm mode, a job runs, and the reading shows the node, its GPUs and the job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for, write
from slurm_fixtures import SlurmCluster
from slurm_helpers import slurm_settings

from loradeck.core.errors import ExecutorError
from loradeck.core.facade import LiveFacade, MachineReading
from loradeck.core.home import Home
from loradeck.core.models import JobState

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture
def facade(slurm_home: Home, slurm_cluster: SlurmCluster) -> Iterator[LiveFacade]:
    """A facade hosting an engine in Slurm mode."""
    live = LiveFacade(slurm_home, slurm_settings(), gpus="sim:1")
    live.start()
    yield live
    live.close()


def test_the_reading_shows_the_clusters_node_and_the_job_slurm_placed_on_it(
    facade: LiveFacade, tmp_path: Path
) -> None:
    idle = facade.read_machine()
    assert idle.cluster == "Slurm" and idle.gpus == () and idle.message is None
    (node,) = idle.nodes
    assert node.gpus_total == 4 and node.cpus_total >= 2 and node.mem_total_gb > 0
    assert node.state and node.partition
    batch = write(
        tmp_path / "batch.toml",
        '[[job]]\nname = "busy"\ncommand = "sleep 120"\ngpus = 2\n',
    )
    (job_id,) = facade.submit_batch(batch).job_ids

    def placed() -> MachineReading | None:
        if facade.job(job_id).state != JobState.RUNNING:
            return None
        # The nodes are read every few seconds (sinfo), where the job is placed from
        # the engine's latest squeue: wait for a reading of the nodes with it running.
        reading = facade.read_machine()
        node = reading.nodes[0] if reading.nodes else None
        return reading if node is not None and node.jobs and node.gpus_used else None

    reading = wait_for(placed, 90, "the job on the node in the GPU reading")
    assert isinstance(reading, MachineReading)
    (busy,) = reading.nodes
    assert busy.name == node.name and busy.jobs == ((job_id, "busy"),)
    assert busy.gpus_used == 2 and busy.state in ("mixed", "allocated")
    facade.cancel(job_id)
    wait_for(lambda: facade.job(job_id).state == JobState.CANCELLED, 60, "the job cancelled")


def test_hold_and_priority_keys_act_in_slurm(
    facade: LiveFacade, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """`h` and `+`/`-` on a job waiting in Slurm's queue: held and released in Slurm,
    its nice changed there; `h` on a job Slurm runs is refused in Slurm's terms."""
    flag = tmp_path / "go"
    batch = write(
        tmp_path / "batch.toml",
        f"[[job]]\nname = 'blocker'\ngpus = 4\n"
        f"command = 'while [ ! -e {flag} ]; do sleep 0.1; done'\n"
        "[[job]]\nname = 'waiting'\ngpus = 4\ncommand = 'true'\n",
    )
    blocker, waiting = facade.submit_batch(batch).job_ids
    try:

        def in_slurm(job_id: int, reason: str) -> bool:
            job = facade.job(job_id)
            return job.executor_ref is not None and job.reason.startswith(reason)

        wait_for(lambda: in_slurm(blocker, "slurm: RUNNING"), 90, "the blocker running")
        wait_for(lambda: in_slurm(waiting, "slurm: PENDING"), 90, "the other waiting")
        with pytest.raises(ExecutorError, match="Slurm is running it"):
            facade.toggle_hold(blocker)
        ref = facade.job(waiting).executor_ref
        assert ref is not None
        held = facade.toggle_hold(waiting)
        assert held.state == JobState.HELD and slurm_cluster.squeue(ref)[ref].held
        released = facade.toggle_hold(waiting)
        assert released.state == JobState.RUNNING and not slurm_cluster.squeue(ref)[ref].held
        assert facade.change_priority(waiting, -2).priority == -2
        assert slurm_cluster.squeue(ref)[ref].nice == 2
    finally:
        flag.touch()
    wait_for(lambda: facade.job(waiting).state == JobState.COMPLETED, 90, "the job done")
