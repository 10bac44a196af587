"""Hold, release and priority of jobs already handed to Slurm, on the real single-node
Slurm: ``scontrol hold/release`` and ``scontrol update Nice=``, Slurm's refusals in
Slurm's words, and holds made outside loradeck followed by the engine's pass."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli, wait_for
from slurm_fixtures import SlurmCluster
from slurm_helpers import SlurmHarness

from loradeck.core.actions import (
    apply_hold,
    apply_priority,
    apply_release,
    held_in_slurm,
)
from loradeck.core.batch import plan_single
from loradeck.core.errors import ExecutorError
from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.executor.slurm_commands import SlurmCommands
from loradeck.core.home import Home
from loradeck.core.models import Job, JobState
from loradeck.core.settings import Settings, SlurmSettings
from loradeck.core.store import Store
from loradeck.core.submit import submit_plan

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

AS_NOBODY = ("runuser", "-u", "nobody", "--")


@pytest.fixture
def slurm_engine(slurm_home: Home) -> Iterator[SlurmHarness]:
    """An engine in Slurm mode, started, in this process."""
    h = SlurmHarness(slurm_home)
    h.engine.start()
    yield h
    h.engine.stop()
    h.store.close()


def blocked_pair(h: SlurmHarness, flag: Path, folder: Path) -> tuple[Job, Job]:
    """A job holding all 4 GPUs until ``flag`` exists, and one waiting in Slurm's queue
    behind it; both handed over. Returns them as stored once Slurm says so."""
    blocker, waiting = h.submit(
        f"[[job]]\nname = 'blocker'\ngpus = 4\n"
        f"command = 'while [ ! -e {flag} ]; do sleep 0.1; done'\n"
        "[[job]]\nname = 'waiting'\ngpus = 4\ncommand = 'echo ran'\n",
        folder,
    )
    return (
        h.wait_reason(blocker.id, "slurm: RUNNING"),
        h.wait_reason(waiting.id, "slurm: PENDING (Resources)"),
    )


def ref_of(job: Job) -> str:
    assert job.executor_ref is not None
    return job.executor_ref


def test_hold_release_and_priority_of_a_job_waiting_in_slurm(
    slurm_engine: SlurmHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    blocker, waiting = blocked_pair(slurm_engine, flag, tmp_path)
    store, ref = slurm_engine.store, ref_of(waiting)
    # A second executor, as a CLI or the TUI has: Slurm is asked, not the engine.
    control = SlurmExecutor(SlurmSettings(), home=slurm_engine.home)

    # Slurm would "hold" a running job without effect: loradeck refuses, saying why.
    with pytest.raises(ExecutorError, match=r"Slurm is running it \(slurm: RUNNING on \S+"):
        apply_hold(store, blocker.id, time.time(), slurm=control)
    assert slurm_engine.job(blocker.id).state == JobState.RUNNING
    assert not slurm_cluster.squeue(ref_of(blocker))[ref_of(blocker)].reason

    held = apply_hold(store, waiting.id, time.time(), slurm=control)
    assert held.state == JobState.HELD and held_in_slurm(held)
    assert held.reason == "held by user; slurm: PENDING (JobHeldAdmin)"  # root is an admin
    assert (held.executor_ref, held.attempts) == (ref, 1)
    assert slurm_cluster.squeue(ref)[ref].held

    # Renicing a held job would release it in Slurm: the nice waits for the release.
    assert apply_priority(store, waiting.id, -3, slurm=control).priority == -3
    row = slurm_cluster.squeue(ref)[ref]
    assert row.held and row.nice == 0

    # The engine leaves it held: not handed over again, its Slurm hold kept.
    slurm_engine.wait_passes(2)
    still = slurm_engine.job(waiting.id)
    assert (still.state, still.reason) == (JobState.HELD, held.reason)
    assert sorted(slurm_engine.executor.adopt()) == sorted([ref_of(blocker), ref])

    released = apply_release(store, waiting.id, time.time(), slurm=control)
    assert released.state == JobState.RUNNING and released.reason.startswith("slurm: PENDING")
    assert (released.executor_ref, released.attempts) == (ref, 1)
    row = slurm_cluster.squeue(ref)[ref]
    assert not row.held and row.nice == 3

    # While it waits in Slurm's queue, a priority change is Slurm's nice at once.
    apply_priority(store, waiting.id, -5, slurm=control)
    assert slurm_cluster.squeue(ref)[ref].nice == 5
    assert slurm_engine.job(waiting.id).priority == -5

    flag.touch()
    done = slurm_engine.wait(waiting.id, JobState.COMPLETED, JobState.FAILED)
    assert (done.state, done.attempts, done.executor_ref) == (JobState.COMPLETED, 1, ref)
    assert done.log_file.read_text().strip() == "ran"
    assert slurm_engine.wait(blocker.id, JobState.COMPLETED).attempts == 1


def test_the_running_engine_follows_a_hold_made_in_slurm(
    slurm_engine: SlurmHarness, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """``scontrol hold`` typed by hand: the engine's own pass shows the job HELD, and
    ``scontrol release`` lets it run to completion."""
    flag = tmp_path / "go"
    _, waiting = blocked_pair(slurm_engine, flag, tmp_path)
    ref = ref_of(waiting)
    slurm_cluster.commands.run("scontrol", "hold", ref)
    held = slurm_engine.wait(waiting.id, JobState.HELD)
    assert held_in_slurm(held) and held.reason == "held in Slurm; slurm: PENDING (JobHeldAdmin)"
    slurm_cluster.commands.run("scontrol", "release", ref)
    wait_for(lambda: slurm_engine.job(waiting.id).state == JobState.RUNNING, 30, "the release")
    flag.touch()
    done = slurm_engine.wait(waiting.id, JobState.COMPLETED, JobState.FAILED)
    assert (done.state, done.attempts, done.executor_ref) == (JobState.COMPLETED, 1, ref)


def test_cli_holds_in_slurm_and_cancels_a_held_job(
    slurm_engine: SlurmHarness, slurm_cluster: SlurmCluster, cli: Cli, tmp_path: Path
) -> None:
    assert cli.home == slurm_engine.home.root
    flag = tmp_path / "go"
    blocker, waiting = blocked_pair(slurm_engine, flag, tmp_path)
    ref = ref_of(waiting)

    out = cli("--executor", "slurm", "hold", str(blocker.id))
    assert out.returncode == 2
    assert f"loradeck: job {blocker.id}: cannot hold: Slurm is running it" in out.stderr
    assert "cancel it instead" in out.stderr

    out = cli("--executor", "slurm", "hold", str(waiting.id))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f"job {waiting.id} (waiting): held (held by user; slurm: PENDING (JobHeldAdmin))"
    )
    # Without the slurm executor a release would hand it to Slurm a second time.
    out = cli("release", str(waiting.id))
    assert out.returncode == 2 and f"is held in Slurm (job {ref})" in out.stderr
    assert slurm_engine.job(waiting.id).state == JobState.HELD

    # The GPU screen's view in Slurm mode: the partition's node, its GPUs all taken.
    table = cli("--executor", "slurm", "gpus")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split() == [
        "NODE",
        "PARTITION",
        "STATE",
        "GPUS",
        "CPUS",
        "MEM",
        "GiB",
        "REASON",
    ]
    assert "4/4" in table.stdout.splitlines()[2].split()
    (node,) = json.loads(cli("--executor", "slurm", "gpus", "--json").stdout)
    assert (node["gpus_total"], node["gpus_used"], node["partition"]) == (4, 4, "debug*")

    # Cancelling a job held in Slurm: the engine cancels its Slurm job.
    assert cli("cancel", str(waiting.id)).returncode == 0
    cancelled = slurm_engine.wait(waiting.id, JobState.CANCELLED)
    assert cancelled.attempts == 1
    assert slurm_cluster.squeue(ref)[ref].state == "CANCELLED"
    assert not cancelled.log_file.exists() or "ran" not in cancelled.log_file.read_text()
    flag.touch()
    assert slurm_engine.wait(blocker.id, JobState.COMPLETED).exit_code == 0


def test_negative_nice_needs_a_slurm_operator(
    slurm_home: Home, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """As a user who is not a Slurm operator (nobody), on that user's own Slurm job."""
    key = slurm_home.key

    def sbatch(*args: str) -> str:
        return slurm_cluster.commands.run(
            "sbatch", "--parsable", "--output=/dev/null", "--chdir=/tmp", "--gres=gpu:4", *args
        ).strip()

    blocker = sbatch(f"--comment=loradeck:{key}:90:1", "--wrap=sleep 300")
    mine = subprocess.run(
        [
            *AS_NOBODY,
            *("sbatch", "--parsable", "--output=/dev/null", "--chdir=/tmp", "--gres=gpu:4"),
            *("--wrap=true", f"--comment=loradeck:{key}:91:1"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    store = Store(slurm_home.root)
    try:
        job = handed_over(store, slurm_home, mine)
        nobody = SlurmExecutor(
            SlurmSettings(), home=slurm_home, commands=SlurmCommands(prefix=AS_NOBODY)
        )
        wait_for(lambda: slurm_cluster.squeue(mine)[mine].reason == "Resources", 30, "Resources")
        with pytest.raises(
            ExecutorError,
            match=r"only Slurm operators may set a negative nice\): .*Access/permission denied",
        ) as refused:
            apply_priority(store, job.id, 4, slurm=nobody)
        assert "loradeck's priority is unchanged" in refused.value.message
        assert store.get(job.id).priority == 0 and slurm_cluster.squeue(mine)[mine].nice == 0
        apply_priority(store, job.id, -2, slurm=nobody)  # lowering a job: anyone may
        assert slurm_cluster.squeue(mine)[mine].nice == 2

        held = apply_hold(store, job.id, time.time(), slurm=nobody)
        assert held.reason == "held by user; slurm: PENDING (JobHeldUser)"
        apply_priority(store, job.id, -4, slurm=nobody)
        assert slurm_cluster.squeue(mine)[mine].nice == 2  # waits for the release
        assert apply_release(store, job.id, time.time(), slurm=nobody).state == JobState.RUNNING
        assert slurm_cluster.squeue(mine)[mine].nice == 4

        # A refused nice chosen while held does not undo the release; it is reported.
        apply_hold(store, job.id, time.time(), slurm=nobody)
        apply_priority(store, job.id, 3, slurm=nobody)
        with pytest.raises(ExecutorError, match=r"released, but Slurm did not change") as late:
            apply_release(store, job.id, time.time(), slurm=nobody)
        assert "Access/permission denied" in late.value.message
        assert store.get(job.id).state == JobState.RUNNING
        row = slurm_cluster.squeue(mine)[mine]
        assert not row.held and row.nice == 4
    finally:
        store.close()
        slurm_cluster.commands.run("scancel", blocker, mine)


def handed_over(store: Store, home: Home, slurm_id: str) -> Job:
    """A job as the engine leaves it after handing attempt 1 over as ``slurm_id``."""
    fields = {"name": "theirs", "command": "true", "gpus": 4}
    plan = plan_single(fields, base_dir=home.root, settings=Settings())
    _, (job,) = submit_plan(store, home, plan)
    job.job_dir.mkdir(parents=True, exist_ok=True)
    return store.update(
        job.id,
        lambda current: current.transition(
            JobState.RUNNING, attempts=1, started_at=time.time(), executor_ref=slurm_id
        ),
    )


class RecordingWatcher:
    """Records what the holds ask of the engine's log monitor."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def watch(self, job: Job) -> None:
        self.calls.append(("watch", job.id))

    def unwatch(self, job: Job) -> None:
        self.calls.append(("unwatch", job.id))


def test_holds_made_outside_loradeck_are_followed(
    slurm_home: Home, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """What the engine's pass does with ``sync_holds`` (as after a restart: a fresh
    executor), when someone holds, releases or cancels in Slurm by hand."""
    flag = tmp_path / "go"
    first = SlurmHarness(slurm_home)
    first.engine.start()
    try:
        _, waiting = blocked_pair(first, flag, tmp_path)
    finally:
        first.engine.stop()
        first.store.close()
    ref = ref_of(waiting)
    store = Store(slurm_home.root)
    executor = SlurmExecutor(SlurmSettings(), home=slurm_home)
    watcher = RecordingWatcher()

    def engine_pass() -> None:
        jobs = store.jobs(active_only=True)
        executor.refresh(job for job in jobs if job.state == JobState.RUNNING)
        executor.sync_holds(jobs, store, watcher)

    try:
        slurm_cluster.commands.run("scontrol", "hold", ref)
        engine_pass()
        held = store.get(waiting.id)
        assert held.state == JobState.HELD and held_in_slurm(held)
        assert held.reason == "held in Slurm; slurm: PENDING (JobHeldAdmin)"
        assert watcher.calls == [("unwatch", waiting.id)]  # no stall watchdog on it
        engine_pass()
        assert store.get(waiting.id) == held

        slurm_cluster.commands.run("scontrol", "release", ref)
        engine_pass()
        back = store.get(waiting.id)
        assert back.state == JobState.RUNNING and back.reason.startswith("released in Slurm")
        engine_pass()
        assert watcher.calls[-1] == ("watch", waiting.id)  # its log is followed again

        # Held through loradeck, then cancelled in Slurm by hand: handed back, so that
        # the engine concludes it as Slurm ended it.
        apply_hold(store, waiting.id, time.time(), slurm=executor)
        slurm_cluster.commands.run("scancel", ref)
        wait_for(lambda: slurm_cluster.squeue(ref)[ref].ended, 30, "the cancel")
        engine_pass()
        gone = store.get(waiting.id)
        assert gone.state == JobState.RUNNING and "CANCELLED" in gone.reason
        result = executor.poll(gone)
        assert result.cancelled and result.slurm_state == "CANCELLED"

    finally:
        store.close()
        flag.touch()
