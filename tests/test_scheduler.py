"""The scheduling pass: placement, reasons, gates, limits, backfill, topology."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loradeck.core.models import Dependency, DependencyCondition, Job, JobSpec, JobState
from loradeck.core.scheduler import (
    ClusterView,
    Decision,
    GpuView,
    RuntimeHistory,
    SchedulerInput,
    Start,
    never_fits,
    schedule,
)
from loradeck.core.scheduler.queue import QueueIndex
from loradeck.core.settings import SchedulerSettings

NOW = 1_700_000_000.0


def job(job_id: int, *, state: JobState = JobState.PENDING, **spec: Any) -> Job:
    """A job created ``job_id`` seconds before NOW; RUNNING ones need ``gpu_ids``."""
    gpu_ids = spec.pop("gpu_ids", ())
    started = spec.pop("started_at", NOW - 60.0)
    deps = spec.pop("deps", ())
    extra = {k: spec.pop(k) for k in ("not_before", "reason", "created_at") if k in spec}
    made = Job(
        id=job_id,
        spec=JobSpec(name=spec.pop("name", f"job-{job_id}"), command="true", **spec),
        deps=deps,
        command="true",
        output_dir=Path("/tmp/out"),
        log_file=Path("/tmp/out/log"),
        created_at=extra.pop("created_at", NOW - 1000.0 + job_id),
        **extra,
    )
    if state is JobState.RUNNING:
        return made.transition(JobState.RUNNING, started_at=started, gpu_ids=gpu_ids)
    if state is JobState.HELD:
        return made.transition(JobState.HELD)
    return made


def gpus(*totals: float, foreign: dict[int, float] | None = None) -> ClusterView:
    foreign = foreign or {}
    return ClusterView(gpus=tuple(GpuView(i, t, foreign.get(i, 0.0)) for i, t in enumerate(totals)))


def decide(
    jobs: list[Job],
    cluster: ClusterView,
    dep_states: dict[int, JobState] | None = None,
    **settings: Any,
) -> Decision:
    return schedule(
        SchedulerInput(jobs=jobs, dep_states=dep_states or {}, cluster=cluster, now=NOW),
        SchedulerSettings(**settings),
    )


def started(decision: Decision) -> dict[int, tuple[int, ...]]:
    return {s.job_id: s.gpu_ids for s in decision.starts}


# ----------------------------------------------------------------------------- VRAM


def test_foreign_vram_is_taken_and_the_reason_says_so() -> None:
    cluster = gpus(24.0, 24.0, foreign={0: 20.0, 1: 17.8})
    decision = decide([job(1, vram_gb=16)], cluster)
    assert decision.starts == ()
    assert "GPU 1 has 6.2 GiB free, needs 16" in decision.reasons[1]


def test_a_job_that_fits_beside_foreign_use_starts_there() -> None:
    cluster = gpus(24.0, 24.0, foreign={0: 20.0, 1: 4.0})
    assert started(decide([job(1, vram_gb=16)], cluster)) == {1: (1,)}


def test_jobs_share_a_gpu_up_to_memory_and_count() -> None:
    cluster = gpus(24.0)
    jobs = [job(i, vram_gb=5) for i in range(1, 7)]
    decision = decide(jobs, cluster, max_jobs_per_gpu=3)
    assert started(decision) == {1: (0,), 2: (0,), 3: (0,)}
    assert "max_jobs_per_gpu 3" in decision.reasons[4]
    decision = decide(jobs, cluster, max_jobs_per_gpu=8)
    assert sorted(started(decision)) == [1, 2, 3, 4]  # 4 x 5 GiB fit in 24, a fifth does not
    assert "GPU 0 has 4.0 GiB free, needs 5" in decision.reasons[5]


def test_max_vram_per_gpu_caps_what_loradeck_uses() -> None:
    cluster = ClusterView(gpus=(GpuView(0, 80.0),), max_vram_per_gpu=20.0)
    decision = decide([job(1, vram_gb=12), job(2, vram_gb=12)], cluster)
    assert started(decision) == {1: (0,)}


def test_whole_gpu_and_exclusive_jobs_share_with_nobody() -> None:
    cluster = gpus(80.0, 80.0)
    running = [job(1, state=JobState.RUNNING, vram_gb=10, gpu_ids=(0,))]
    short = job(4, vram_gb=10, est_minutes=10)
    decision = decide([*running, job(2), job(3, vram_gb=10, exclusive=True), short], cluster)
    # job 2 (whole GPU) takes GPU 1; job 3 (exclusive) finds no empty GPU and gets a
    # reservation; job 4 shares GPU 0 with job 1, and ends before job 3 is due
    assert started(decision) == {2: (1,), 4: (0,)}
    assert decision.reasons[3].startswith("waiting: GPU 0 runs job 1")
    assert 3 in decision.reservations


def test_a_whole_gpu_job_avoids_a_gpu_that_strangers_fill() -> None:
    cluster = gpus(24.0, 24.0, foreign={0: 20.0, 1: 0.5})
    assert started(decide([job(1)], cluster)) == {1: (1,)}
    decision = decide([job(1)], gpus(24.0, foreign={0: 20.0}))
    assert "other processes hold 20.0" in decision.reasons[1]


# ----------------------------------------------------------------------------- gang, topology


def test_a_multi_gpu_job_gets_all_its_gpus_at_once_or_none() -> None:
    cluster = gpus(80.0, 80.0, 80.0, 80.0)
    running = [job(1, state=JobState.RUNNING, gpu_ids=(0,))]
    decision = decide([*running, job(2, gpus=4), job(3, gpus=3)], cluster)
    assert started(decision) == {3: (1, 2, 3)} or started(decision) == {}
    assert 2 not in started(decision)
    assert "needs 4 free GPUs, 3 available" in decision.reasons[2]


def test_topology_picks_the_closest_gpus() -> None:
    # GPUs 0-1 and 2-3 share a switch (10); across is the system bus (50)
    distance = {(a, b): 10 if a // 2 == b // 2 else 50 for a in range(4) for b in range(4)}
    cluster = ClusterView(gpus=tuple(GpuView(i, 80.0) for i in range(4)), distance=distance)
    running = [job(1, state=JobState.RUNNING, gpu_ids=(0,))]
    assert started(decide([*running, job(2, gpus=2)], cluster)) == {2: (2, 3)}
    running = [job(1, state=JobState.RUNNING, gpu_ids=(2,))]
    assert started(decide([*running, job(2, gpus=2)], cluster)) == {2: (0, 1)}
    # without topology the lowest indices win
    plain = gpus(80.0, 80.0, 80.0, 80.0)
    running = [job(1, state=JobState.RUNNING, gpu_ids=(0,))]
    assert started(decide([*running, job(2, gpus=2)], plain)) == {2: (1, 2)}


# ----------------------------------------------------------------------------- limits


def test_max_concurrent_jobs_counts_running_and_cpu_jobs() -> None:
    cluster = gpus(80.0, 80.0, 80.0, 80.0)
    running = [job(1, state=JobState.RUNNING, gpu_ids=(0,))]
    decision = decide(
        [*running, job(2), job(3, gpus=0), job(4)], cluster, max_concurrent_jobs=3, strategy="fifo"
    )
    assert sorted(started(decision)) == [2, 3]
    assert decision.reasons[4] == "waiting: max_concurrent_jobs (3) reached"


def test_cpu_jobs_never_wait_behind_gpu_jobs() -> None:
    cluster = gpus(80.0)
    running = [job(1, state=JobState.RUNNING, gpu_ids=(0,))]
    jobs = [*running, job(2, priority=10), job(3, gpus=2, priority=9), job(4, gpus=0)]
    for backfill in (True, False):
        decision = decide(jobs, cluster, backfill=backfill)
        assert started(decision) == {4: ()}
    assert started(decide([job(5, gpus=0)], ClusterView(gpus=()))) == {5: ()}


def test_held_and_backoff_jobs_wait_with_their_reason() -> None:
    cluster = gpus(80.0, 80.0)
    decision = decide(
        [
            job(1, state=JobState.HELD),
            job(2, not_before=NOW + 42),
            job(3, reason="paused by ana", state=JobState.HELD),
        ],
        cluster,
    )
    assert decision.starts == ()
    assert decision.reasons[1] == "held"
    assert decision.reasons[2] == "retry backoff: retry in 42 s"
    assert decision.reasons[3] == "held: paused by ana"
    assert started(decide([job(2, not_before=NOW - 1)], cluster)) == {2: (0,)}


def test_never_fits_names_what_is_missing() -> None:
    cluster = ClusterView(gpus=(GpuView(0, 24.0), GpuView(1, 48.0)), max_vram_per_gpu=40.0)
    spec = JobSpec(name="x", command="true", gpus=4)
    assert "asks for 4 GPUs and this machine has 2" in (never_fits(spec, cluster) or "")
    spec = JobSpec(name="x", command="true", vram_gb=44)
    message = never_fits(spec, cluster) or ""
    assert "needs 44 GiB" in message and "max_vram_per_gpu" in message
    spec = JobSpec(name="x", command="true", gpus=2, vram_gb=30)
    assert "1 GPU here has that much" in (never_fits(spec, cluster) or "")
    assert never_fits(JobSpec(name="x", command="true", gpus=2, vram_gb=24), cluster) is None
    assert never_fits(JobSpec(name="x", command="true", gpus=0), ClusterView(gpus=())) is None
    no_gpus = never_fits(JobSpec(name="x", command="true"), ClusterView(gpus=()))
    assert no_gpus == "it asks for 1 GPU and this machine has none; gpus = 0 runs it on CPU"
    # a job that cannot fit never blocks the queue, and says why
    decision = decide([job(1, gpus=3), job(2)], cluster)
    assert started(decision) == {2: (0,)}
    assert decision.reasons[1].startswith("cannot run here: it asks for 3 GPUs")


# ----------------------------------------------------------------------------- dependencies


@pytest.mark.parametrize(
    ("condition", "dep_state", "outcome"),
    [
        (DependencyCondition.AFTEROK, JobState.COMPLETED, "start"),
        (DependencyCondition.AFTEROK, JobState.FAILED, "fail"),
        (DependencyCondition.AFTEROK, JobState.TIMEOUT, "fail"),
        (DependencyCondition.AFTEROK, JobState.CANCELLED, "fail"),
        (DependencyCondition.AFTEROK, JobState.RUNNING, "wait"),
        (DependencyCondition.AFTERANY, JobState.COMPLETED, "start"),
        (DependencyCondition.AFTERANY, JobState.FAILED, "start"),
        (DependencyCondition.AFTERANY, JobState.PENDING, "wait"),
        (DependencyCondition.AFTERNOTOK, JobState.FAILED, "start"),
        (DependencyCondition.AFTERNOTOK, JobState.CANCELLED, "start"),
        (DependencyCondition.AFTERNOTOK, JobState.COMPLETED, "fail"),
        (DependencyCondition.AFTERNOTOK, JobState.HELD, "wait"),
    ],
)
def test_dependency_conditions(
    condition: DependencyCondition, dep_state: JobState, outcome: str
) -> None:
    waiting = job(2, deps=(Dependency(job_id=1, condition=condition),))
    decision = decide([waiting], gpus(80.0), {1: dep_state})
    if outcome == "start":
        assert started(decision) == {2: (0,)}
        assert decision.dependency_failures == ()
    elif outcome == "wait":
        assert decision.starts == () and decision.dependency_failures == ()
        assert decision.reasons[2] == f"dependency: waiting for job 1 ({dep_state.value})"
    else:
        assert decision.starts == ()
        (failure,) = decision.dependency_failures
        assert (failure.job_id, failure.failed_dep, failure.action) == (2, 1, "cancel")
        assert decision.reasons[2] == failure.reason


def test_a_failed_dependency_cancels_or_holds_per_settings() -> None:
    waiting = job(2, deps=(Dependency(job_id=1),))
    cancel = decide([waiting], gpus(80.0), {1: JobState.FAILED})
    assert cancel.dependency_failures[0].reason == "dependency 1 failed"
    hold = decide([waiting], gpus(80.0), {1: JobState.FAILED}, on_dependency_failure="hold")
    assert hold.dependency_failures[0].action == "hold"
    timed_out = decide([waiting], gpus(80.0), {1: JobState.TIMEOUT})
    assert timed_out.dependency_failures[0].reason == "dependency 1 failed (timeout)"


def test_dependencies_found_among_active_jobs_or_unknown_wait() -> None:
    running = job(1, state=JobState.RUNNING, gpu_ids=(0,))
    waiting = job(2, deps=(Dependency(job_id=1),))
    orphan = job(3, deps=(Dependency(job_id=99),))
    decision = decide([running, waiting, orphan], gpus(80.0, 80.0))
    assert decision.starts == ()
    assert decision.reasons[2] == "dependency: waiting for job 1 (RUNNING)"
    assert decision.reasons[3] == "dependency: waiting for job 99 (unknown job)"


# ----------------------------------------------------------------------------- policies


def test_fifo_priority_and_aging() -> None:
    cluster = gpus(80.0)
    old_low = job(1, priority=0, created_at=NOW - 20 * 3600)
    new_high = job(2, priority=10, created_at=NOW - 60)
    assert started(decide([old_low, new_high], cluster, strategy="fifo")) == {1: (0,)}
    assert started(decide([old_low, new_high], cluster, aging_per_hour=0.0)) == {2: (0,)}
    # 20 hours of waiting at 1 point an hour outrank 10 points of priority
    assert started(decide([old_low, new_high], cluster, aging_per_hour=1.0)) == {1: (0,)}
    decision = decide([old_low, new_high], cluster, aging_per_hour=1.0, backfill=False)
    assert decision.reasons[2] == "waiting: GPU 0 runs job 1; GPU 0 reserved for it in ~60 min"


def test_sjf_uses_estimate_then_history_then_default() -> None:
    cluster = gpus(80.0)
    jobs = [
        job(1, name="long-1", est_minutes=90),
        job(2, name="hero-7"),
        job(3, name="mystery"),
    ]
    history = RuntimeHistory.empty().record("stem:hero", 600.0)
    inp = SchedulerInput(jobs=jobs, dep_states={}, cluster=cluster, now=NOW, history=history)
    settings = SchedulerSettings(strategy="sjf", default_est_minutes=60)
    assert schedule(inp, settings).starts == (Start(2, (0,)),)
    inp = SchedulerInput(jobs=jobs[::2], dep_states={}, cluster=cluster, now=NOW)
    assert schedule(inp, settings).starts == (Start(3, (0,)),)  # default 60 < 90


def test_sjf_starts_a_drain_critical_long_job_first() -> None:
    shorts = [job(i, est_minutes=60) for i in range(1, 5)]
    long = job(5, est_minutes=300)
    # 2 GPUs, 540 GPU-minutes left: 270 min to drain. Left to the end, the 300-min job would
    # end 150 min after that (>= half of 270), so it goes first; the 60-min jobs would not.
    decision = decide([*shorts, long], gpus(80.0, 80.0), strategy="sjf")
    assert [s.job_id for s in decision.starts] == [5, 1]
    # what is still running counts too: with a GPU busy for 10 more hours the queue is far
    # from draining, and shortest-first holds
    busy = job(9, state=JobState.RUNNING, gpu_ids=(1,), est_minutes=660, started_at=NOW - 3600)
    decision = decide([*shorts, long, busy], gpus(80.0, 80.0), strategy="sjf")
    assert [s.job_id for s in decision.starts] == [1]
    # on one GPU, or for a job that takes every GPU, order cannot change the drain: no jump
    assert [s.job_id for s in decide([*shorts, long], gpus(80.0), strategy="sjf").starts] == [1]
    wide = job(5, est_minutes=300, gpus=2)
    decision = decide([*shorts, wide], gpus(80.0, 80.0), strategy="sjf")
    assert [s.job_id for s in decision.starts] == [1, 2]


# ----------------------------------------------------------------------------- backfill


def test_backfill_runs_short_jobs_in_the_gap_but_not_long_ones() -> None:
    cluster = gpus(80.0, 80.0)
    running = job(1, state=JobState.RUNNING, gpu_ids=(0,), est_minutes=60, started_at=NOW - 1800)
    top = job(2, gpus=2, priority=10)  # needs both GPUs: in 30 min
    short = job(3, est_minutes=10)
    long = job(4, est_minutes=120, priority=5)
    decision = decide([running, top, long, short], cluster)
    assert started(decision) == {3: (1,)}
    (gpu_ids, at) = decision.reservations[2]
    assert gpu_ids == (0, 1) and at == pytest.approx(NOW + 1800)
    assert "GPUs 0,1 reserved for it in ~30 min" in decision.reasons[2]
    assert decision.reasons[4].startswith("waiting: reservation for job 2")
    # without backfill nothing jumps the queue
    decision = decide([running, top, long, short], cluster, backfill=False)
    assert decision.starts == ()
    assert decision.reasons[3] == "queued behind job 2 (backfill is off)"


def test_a_timeout_bounds_a_backfilled_job() -> None:
    cluster = gpus(80.0, 80.0)
    running = job(1, state=JobState.RUNNING, gpu_ids=(0,), est_minutes=60, started_at=NOW - 1800)
    top = job(2, gpus=2, priority=10)
    capped = job(3, est_minutes=120, timeout="20m")
    assert started(decide([running, top, capped], cluster)) == {3: (1,)}


# ----------------------------------------------------------------------------- index


def test_an_index_gives_the_same_decision_and_updates() -> None:
    cluster = gpus(80.0, 80.0, 80.0)
    jobs = [
        job(1, state=JobState.RUNNING, gpu_ids=(0,)),
        job(2, gpus=2, priority=5),
        job(3, vram_gb=8, user="b"),
        job(4, gpus=0),
        job(5, state=JobState.HELD),
        job(6, deps=(Dependency(job_id=1),)),
    ]
    for strategy in ("fifo", "priority", "fair_share", "sjf"):
        settings = SchedulerSettings(strategy=strategy)
        index = QueueIndex.build(jobs, settings)
        for given in (jobs, index):
            assert len(given) == 6
        plain = schedule(SchedulerInput(jobs, {}, cluster, NOW), settings)
        indexed = schedule(SchedulerInput(index, {}, cluster, NOW), settings)
        assert plain == indexed
        assert dict(plain.reasons) == dict(indexed.reasons)
    index = QueueIndex.build(jobs, SchedulerSettings())
    moved = index.updated([jobs[1].transition(JobState.HELD)], removed=[3])
    assert len(moved) == 5 and len(index) == 6
    held = moved.get(2)
    assert held is not None and held.state is JobState.HELD
    decision = schedule(SchedulerInput(moved, {}, cluster, NOW), SchedulerSettings())
    assert decision.reasons[2] == "held"
    assert 3 not in decision.reasons


def test_backfill_tries_a_bounded_number_of_jobs_per_pass() -> None:
    BACKFILL_MAX_JOB_TEST = SchedulerSettings().backfill_max_job_test

    cluster = gpus(80.0, 80.0)
    running = job(1, state=JobState.RUNNING, gpu_ids=(0,), est_minutes=60, started_at=NOW - 60)
    top = job(2, gpus=2, priority=10)
    longs = [job(10 + i, est_minutes=600) for i in range(BACKFILL_MAX_JOB_TEST + 5)]
    late_short = job(5000, est_minutes=5)
    decision = decide([running, top, *longs, late_short], cluster)
    assert decision.starts == ()  # the short job sits beyond what backfill looks at
    assert "backfill looks at 1000 jobs a pass" in decision.reasons[5000]
    assert decision.reasons[10].startswith("waiting: reservation for job 2")
    early_short = job(9, est_minutes=5)
    assert started(decide([running, top, *longs, early_short], cluster)) == {9: (1,)}


def test_sharing_jobs_spread_over_idle_gpus_by_default() -> None:
    jobs = [job(1, vram_gb=6), job(2, vram_gb=6), job(3, vram_gb=6)]
    assert started(decide(jobs, gpus(24.0, 24.0, 24.0))) == {1: (0,), 2: (1,), 3: (2,)}
    running = job(4, state=JobState.RUNNING, vram_gb=6, gpu_ids=(0,))
    assert started(decide([running, job(5, vram_gb=6)], gpus(24.0, 24.0))) == {5: (1,)}


def test_pack_keeps_whole_gpus_free() -> None:
    jobs = [job(1, vram_gb=6), job(2, vram_gb=6), job(3, vram_gb=6)]
    assert started(decide(jobs, gpus(24.0, 24.0, 24.0), packing="pack")) == {
        1: (0,),
        2: (0,),
        3: (0,),
    }
