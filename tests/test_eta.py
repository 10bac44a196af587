"""Batch ETA: running jobs' own ETAs, then the queue through the simulator."""

from __future__ import annotations

from pathlib import Path

from loradeck.core.eta import batch_eta
from loradeck.core.models import Dependency, Job, JobSpec, JobState, Progress
from loradeck.core.scheduler import ClusterView, RuntimeHistory
from loradeck.core.settings import SchedulerSettings

NOW = 1_000_000.0


def job(job_id: int, **spec: object) -> Job:
    return Job(
        id=job_id,
        spec=JobSpec(name=f"j{job_id}", command="true", **spec),  # type: ignore[arg-type]
        command="true",
        output_dir=Path("/x"),
        log_file=Path("/x/log"),
        created_at=NOW - 100,
    )


def running(j: Job, *, eta_s: float | None, started: float = NOW - 30) -> Job:
    return j.transition(
        JobState.RUNNING, started_at=started, gpu_ids=(0,), progress=Progress(step=5, eta_s=eta_s)
    )


def test_running_eta_then_queue_on_one_gpu() -> None:
    jobs = [running(job(1, est_minutes=10), eta_s=60), job(2, est_minutes=1), job(3, est_minutes=1)]
    eta = batch_eta(
        jobs, ClusterView.uniform(1, 24), SchedulerSettings(), RuntimeHistory.empty(), NOW
    )
    assert eta == 180


def test_two_gpus_run_the_queue_side_by_side() -> None:
    jobs = [job(1, est_minutes=2), job(2, est_minutes=2), job(3, est_minutes=1)]
    eta = batch_eta(
        jobs, ClusterView.uniform(2, 24), SchedulerSettings(), RuntimeHistory.empty(), NOW
    )
    assert eta == 180


def test_without_progress_the_estimate_minus_elapsed_is_used() -> None:
    jobs = [running(job(1, est_minutes=2), eta_s=None, started=NOW - 90)]
    eta = batch_eta(
        jobs, ClusterView.uniform(1, 24), SchedulerSettings(), RuntimeHistory.empty(), NOW
    )
    assert eta == 30


def test_dependencies_wait_for_their_job() -> None:
    first = job(1, est_minutes=1)
    second = job(2, est_minutes=1, gpus=0).evolve(deps=(Dependency(job_id=1),))
    eta = batch_eta(
        [first, second],
        ClusterView.uniform(4, 24),
        SchedulerSettings(),
        RuntimeHistory.empty(),
        NOW,
    )
    assert eta == 120


def test_done_batch_and_no_gpus() -> None:
    done = job(1).transition(JobState.CANCELLED)
    assert (
        batch_eta([done], ClusterView.uniform(1), SchedulerSettings(), RuntimeHistory.empty(), NOW)
        == 0
    )
    assert (
        batch_eta([job(2)], ClusterView(gpus=()), SchedulerSettings(), RuntimeHistory.empty(), NOW)
        is None
    )


def test_sim_usage_reports_declared_vram_and_whole_gpus() -> None:
    from loradeck.core.clusterview import sim_usage
    from loradeck.core.gpu import parse_gpu_spec

    shared = running(job(1, vram_gb=6), eta_s=None)
    whole = job(2).transition(JobState.RUNNING, started_at=NOW, gpu_ids=(1,))
    stray = job(3).transition(JobState.RUNNING, started_at=NOW, gpu_ids=(7,))
    usage = sim_usage(parse_gpu_spec("sim:2x24"), [shared, whole, stray])
    assert usage == {0: [(1, 6.0)], 1: [(2, 24.0)]}
    assert sim_usage(parse_gpu_spec("0,1"), [shared]) == {}
