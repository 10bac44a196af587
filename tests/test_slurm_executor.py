"""The Slurm executor against the real single-node Slurm (scripts/slurm-dev-cluster.sh)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import wait_for
from slurm_fixtures import SlurmCluster

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.base import AttemptResult, AttemptStatus
from loradeck.core.executor.jobfiles import AttemptInfo, JobFiles
from loradeck.core.executor.slurm import SlurmExecutor
from loradeck.core.executor.slurm_commands import SlurmCommands
from loradeck.core.home import Home
from loradeck.core.models import Dependency, Job, JobSpec
from loradeck.core.settings import SlurmSettings

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def make_job(home: Home, job_id: int, command: str, **spec: object) -> Job:
    """A job as the engine launches it: attempt 1, its folder in the home."""
    fields: dict[str, object] = {"name": f"t{job_id}", "command": command, "gpus": 0, **spec}
    folder = home.job_dir(job_id)
    return Job(
        id=job_id,
        spec=JobSpec.model_validate(fields),
        command=command,
        output_dir=folder,
        log_file=folder / "output.log",
        created_at=time.time(),
        attempts=1,
    )


def executor_for(home: Home, **settings: object) -> SlurmExecutor:
    return SlurmExecutor(
        SlurmSettings.model_validate(settings), home=home, commands=SlurmCommands(timeout=30)
    )


def wait_result(executor: SlurmExecutor, job: Job, timeout: float = 60) -> AttemptResult:
    def ended() -> AttemptResult | None:
        result = executor.poll(job)
        return result if result.status != AttemptStatus.RUNNING else None

    found = wait_for(ended, timeout, f"job {job.id} to end in Slurm")
    assert isinstance(found, AttemptResult)
    return found


def wait_slurm_state(executor: SlurmExecutor, job: Job, state: str, timeout: float = 30) -> None:
    def reached() -> bool:
        return executor.poll(job).slurm_state == state

    wait_for(reached, timeout, f"job {job.id} to be {state} in Slurm")


def test_job_runs_with_its_env_slurms_gpus_and_exit_status(
    slurm_home: Home, slurm_cluster: SlurmCluster
) -> None:
    executor = executor_for(slurm_home)
    job = make_job(
        slurm_home,
        1,
        'echo "id=$LORADECK_JOB_ID attempt=$LORADECK_ATTEMPT gpus=$CUDA_VISIBLE_DEVICES '
        'mine=$MINE"; exit 3',
        gpus=2,
        env={"MINE": "it's $HOME"},
    )
    ref = executor.launch(job, ())
    job = job.evolve(executor_ref=ref)
    result = wait_result(executor, job)
    assert (result.status, result.exit_code, result.slurm_state) == (
        AttemptStatus.EXITED,
        3,
        "FAILED",
    )
    line = job.log_file.read_text().splitlines()[0]
    assert line.startswith("id=1 attempt=1 gpus=")
    assert line.endswith(" mine=it's $HOME")
    gpus = line.split("gpus=")[1].split()[0].split(",")
    assert len(gpus) == 2 and all(g.isdigit() for g in gpus)
    shown = slurm_cluster.scontrol_job(ref)
    assert "JobState=FAILED" in shown and "ExitCode=3:0" in shown
    assert f"Comment=loradeck:{executor.home_key}:1:1" in shown
    out = (job.job_dir / f"slurm-{ref}.out").read_text()
    assert f"Slurm job {ref}" in out
    info = JobFiles.of(job).attempt_info(1)
    assert info is not None and info.ref == ref


def test_stop_cancels_in_slurm(slurm_home: Home, slurm_cluster: SlurmCluster) -> None:
    executor = executor_for(slurm_home)
    job = make_job(slurm_home, 2, "echo started; sleep 300")
    job = job.evolve(executor_ref=executor.launch(job, ()))
    wait_slurm_state(executor, job, "RUNNING")
    wait_for(lambda: "started" in job.log_file.read_text(), 30, "the job's first line")
    executor.stop(job, grace=1.0)
    ref = job.executor_ref or ""
    assert slurm_cluster.squeue(ref)[ref].state == "CANCELLED"
    result = executor.poll(job)
    assert result.status == AttemptStatus.EXITED and result.cancelled
    assert executor.pids(job) == []
    assert executor.attach_command(job)[-1] == str(job.log_file)


def test_hold_release_and_nice_of_a_pending_job(
    slurm_home: Home, slurm_cluster: SlurmCluster
) -> None:
    executor = executor_for(slurm_home)
    flag = slurm_home.root / "go"
    blocker = make_job(slurm_home, 3, f"while [ ! -e {flag} ]; do sleep 0.1; done", gpus=4)
    blocker = blocker.evolve(executor_ref=executor.launch(blocker, ()))
    waiting = make_job(slurm_home, 4, "true", gpus=4)
    waiting = waiting.evolve(executor_ref=executor.launch(waiting, ()))
    wait_for(
        lambda: executor.poll(waiting).reason == "slurm: PENDING (Resources)",
        30,
        "Slurm's pending reason",
    )
    assert executor.slurm_reason(waiting) == "slurm: PENDING (Resources)"
    assert executor.hold(waiting) == "slurm: PENDING (JobHeldAdmin)"  # root is an admin
    assert executor.poll(waiting).reason == "slurm: PENDING (JobHeldAdmin)"
    described, problem = executor.release(waiting)
    assert described.startswith("slurm: PENDING") and "JobHeld" not in described
    assert problem == ""
    executor.set_priority(waiting, -7)
    assert "Nice=7" in slurm_cluster.scontrol_job(waiting.executor_ref or "")
    # Someone who may not change the job (here: another user) gets Slurm's refusal.
    other = SlurmExecutor(
        SlurmSettings(),
        home=slurm_home,
        commands=SlurmCommands(prefix=("runuser", "-u", "nobody", "--"), timeout=30),
    )
    with pytest.raises(
        ExecutorError, match=r"did not change the priority of job \d+ .*: Invalid user id"
    ):
        other.set_priority(waiting, 5)
    (node,) = executor.nodes()  # the GPU screen's view: the blocker holds all 4 GPUs
    assert (node.gpus_total, node.gpus_used, node.partition) == (4, 4, "debug*")
    flag.touch()
    assert wait_result(executor, waiting).exit_code == 0
    assert wait_result(executor, blocker).exit_code == 0


def test_dependencies_become_slurm_dependencies(
    slurm_home: Home, slurm_cluster: SlurmCluster
) -> None:
    executor = executor_for(slurm_home)
    flag = slurm_home.root / "go"
    first = make_job(slurm_home, 5, f"while [ ! -e {flag} ]; do sleep 0.1; done; exit 1")
    first = first.evolve(executor_ref=executor.launch(first, ()))
    second = make_job(slurm_home, 6, "echo ran").evolve(deps=(Dependency(job_id=5),))
    second = second.evolve(executor_ref=executor.launch(second, ()))
    assert f"Dependency=afterok:{first.executor_ref}" in slurm_cluster.scontrol_job(
        second.executor_ref or ""
    )
    assert executor.poll(second).reason == "slurm: PENDING (Dependency)"
    flag.touch()
    result = wait_result(executor, second)
    # Slurm dropped it unrun: loradeck's own dependency rules take over.
    assert result.dependency_never_satisfied and not result.cancelled
    assert "ran" not in second.log_file.read_text()


def test_sbatch_refusal_is_clear_and_leaves_nothing(
    slurm_home: Home, slurm_cluster: SlurmCluster
) -> None:
    executor = executor_for(slurm_home, partition="nope")
    job = make_job(slurm_home, 7, "true")
    with pytest.raises(ExecutorError, match="invalid partition") as caught:
        executor.launch(job, ())
    assert "Slurm refused it" in caught.value.message
    assert executor.adopt() == {}
    too_big = make_job(slurm_home, 8, "true", gpus=5)
    with pytest.raises(ExecutorError, match="Requested node configuration is not available"):
        executor_for(slurm_home).launch(too_big, ())


def test_found_again_by_its_tag_after_a_crash_before_the_id_was_kept(
    slurm_home: Home, slurm_cluster: SlurmCluster
) -> None:
    executor = executor_for(slurm_home)
    job = make_job(slurm_home, 9, "sleep 300")
    ref = executor.launch(job, ())
    files = JobFiles.of(job)
    info = files.attempt_info(1)
    assert info is not None
    # As if loradeck died between sbatch and writing the id down.
    files.write_attempt(AttemptInfo(1, info.token, "", info.launched_at))
    fresh = executor_for(slurm_home)
    assert fresh.poll(job).status == AttemptStatus.RUNNING
    again = files.attempt_info(1)
    assert again is not None and again.ref == ref
    adopted = fresh.adopt()
    assert adopted[ref].job_id == 9 and adopted[ref].attempt == 1 and adopted[ref].alive


def test_unknown_attempt_is_lost(slurm_home: Home, slurm_cluster: SlurmCluster) -> None:
    executor = executor_for(slurm_home)
    never = make_job(slurm_home, 10, "true")
    assert executor.poll(never).status == AttemptStatus.LOST
    gone = never.evolve(executor_ref="999999")
    assert executor.poll(gone).status == AttemptStatus.LOST


def test_missing_or_unreachable_slurm_says_so(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    home = Home.open(tmp_path / "home")
    empty = tmp_path / "bin"
    empty.mkdir()
    missing = SlurmExecutor(SlurmSettings(), home=home, commands=SlurmCommands(bin_dir=empty))
    with pytest.raises(ExecutorError, match="scontrol is not installed"):
        missing.check()
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    dead_conf = tmp_path / "slurm.conf"
    dead_conf.write_text(
        conf.replace("SlurmctldHost=", "SlurmctldPort=6999\nMessageTimeout=2\nSlurmctldHost=", 1)
    )
    dead = SlurmExecutor(
        SlurmSettings(),
        home=home,
        commands=SlurmCommands(env={"SLURM_CONF": str(dead_conf)}, timeout=20),
    )
    with pytest.raises(ExecutorError, match="Unable to contact slurm controller"):
        dead.check()
    job = make_job(home, 1, "true")
    with pytest.raises(ExecutorError, match="Unable to contact slurm controller"):
        dead.launch(job, ())
    with pytest.raises(ExecutorError, match="Unable to contact slurm controller"):
        dead.poll(job.evolve(executor_ref="1"))
    # attempt.json was written before sbatch; nothing was submitted.
    assert json.loads((job.job_dir / "attempt.json").read_text())["ref"] == ""


def test_job_folder_must_be_on_the_shared_root(tmp_path: Path, slurm_home: Home) -> None:
    executor = executor_for(slurm_home, shared_root=str(tmp_path / "elsewhere"))
    with pytest.raises(ExecutorError, match=r"not under slurm\.shared_root"):
        executor.launch(make_job(slurm_home, 11, "true"), ())
    assert executor_for(slurm_home, shared_root=str(tmp_path)).check().startswith("Slurm 22")
