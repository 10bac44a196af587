"""What the engine hands to Slurm, and when (core/slurmmode.py): a pure function; jobs
held in Slurm (core/actions.py); where job folders go with a shared root (core/home.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loradeck.core.actions import (
    apply_hold,
    apply_priority,
    apply_release,
    apply_toggle_hold,
    cancel_job,
    held_in_slurm,
    hold_job,
    into_slurm_hold,
    out_of_slurm_hold,
    release_job,
    toggle_hold,
)
from loradeck.core.batch import plan_single
from loradeck.core.errors import IllegalTransitionError, SettingsError
from loradeck.core.home import Home
from loradeck.core.models import Dependency, DependencyCondition, Job, JobSpec, JobState
from loradeck.core.settings import SchedulerSettings, Settings, load_settings
from loradeck.core.slurmmode import slurm_decision, slurm_handover
from loradeck.core.store import Store
from loradeck.core.submit import submit_plan

NOW = 1_000_000.0


def job(
    job_id: int,
    state: JobState = JobState.PENDING,
    *,
    deps: tuple[int, ...] = (),
    condition: DependencyCondition = DependencyCondition.AFTEROK,
    priority: int = 0,
    retries: int = 0,
    attempts: int = 0,
    not_before: float | None = None,
) -> Job:
    folder = Path("/h/jobs") / str(job_id)
    made = Job(
        id=job_id,
        spec=JobSpec(name=f"j{job_id}", command="true", priority=priority, retries=retries),
        deps=tuple(Dependency(job_id=d, condition=condition) for d in deps),
        command="true",
        output_dir=folder,
        log_file=folder / "output.log",
        created_at=NOW - 100 + job_id,
        attempts=attempts,
        not_before=not_before,
    )
    return made if state == JobState.PENDING else made.model_copy(update={"state": state})


def handover(
    jobs: list[Job], dep_states: dict[int, JobState] | None = None, **kw: object
) -> list[int]:
    options: dict[str, object] = {"max_submitted": 100, "now": NOW, **kw}
    return slurm_handover(jobs, dep_states or {}, **options)  # type: ignore[arg-type]


def test_policy_order_and_max_submitted_counts_handed_over_jobs() -> None:
    jobs = [
        job(1, JobState.RUNNING, attempts=1),
        job(2, priority=1),
        job(3, priority=5),
        job(4),
    ]
    assert handover(jobs, max_submitted=3) == [3, 2]
    decision = slurm_decision(jobs, {}, max_submitted=3, now=NOW)
    assert "slurm.max_submitted = 3" in decision.reasons[4]
    fifo = SchedulerSettings(strategy="fifo")
    assert handover(jobs, max_submitted=3, settings=fifo) == [2, 3]


def test_held_and_backoff_wait_with_reasons() -> None:
    jobs = [job(1, JobState.HELD), job(2, not_before=NOW + 30), job(3)]
    decision = slurm_decision(jobs, {}, max_submitted=10, now=NOW)
    assert [s.job_id for s in decision.starts] == [3]
    assert all(s.gpu_ids == () for s in decision.starts)
    assert decision.reasons[1] == "held"
    assert "backoff" in decision.reasons[2]


def test_dependency_on_a_job_in_slurm_on_its_last_attempt_goes_now() -> None:
    dep = job(1, JobState.RUNNING, attempts=1, retries=0)
    assert handover([dep, job(2, deps=(1,))]) == [2]


def test_dependency_that_may_be_retried_keeps_the_job() -> None:
    dep = job(1, JobState.RUNNING, attempts=1, retries=2)
    decision = slurm_decision([dep, job(2, deps=(1,))], {}, max_submitted=10, now=NOW)
    assert decision.starts == ()
    assert "may be retried" in decision.reasons[2]


def test_chain_goes_in_one_pass_dependencies_first() -> None:
    # The dependent comes first in policy order; it still follows its dependency.
    jobs = [job(1, deps=(2,), priority=9), job(2, deps=(3,)), job(3)]
    assert handover(jobs) == [3, 2, 1]
    assert handover(jobs, max_submitted=2) == [3, 2]


def test_dependency_failures_follow_the_loradeck_rules() -> None:
    jobs = [job(2, deps=(1,)), job(3, deps=(1,), condition=DependencyCondition.AFTERANY)]
    decision = slurm_decision(jobs, {1: JobState.FAILED}, max_submitted=10, now=NOW)
    assert [s.job_id for s in decision.starts] == [3]
    (failure,) = decision.dependency_failures
    assert (failure.job_id, failure.failed_dep, failure.action) == (2, 1, "cancel")
    hold = SchedulerSettings(on_dependency_failure="hold")
    decision = slurm_decision(jobs, {1: JobState.FAILED}, max_submitted=10, settings=hold)
    assert decision.dependency_failures[0].action == "hold"


def test_completed_and_unknown_dependencies() -> None:
    assert handover([job(2, deps=(1,))], {1: JobState.COMPLETED}) == [2]
    decision = slurm_decision([job(2, deps=(9,))], {}, max_submitted=10, now=NOW)
    assert decision.starts == () and "unknown job" in decision.reasons[2]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([JobState.PENDING, JobState.HELD, JobState.RUNNING]),
            st.lists(st.integers(1, 12), max_size=3),
            st.integers(0, 2),
            st.integers(-3, 3),
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 15),
)
def test_properties(specs: list[tuple[JobState, list[int], int, int]], limit: int) -> None:
    jobs = []
    for index, (state, deps, retries, priority) in enumerate(specs, start=1):
        attempts = 1 if state == JobState.RUNNING else 0
        clean = tuple(sorted({d for d in deps if d != index}))
        jobs.append(
            job(index, state, deps=clean, retries=retries, priority=priority, attempts=attempts)
        )
    by_id = {j.id: j for j in jobs}
    decision = slurm_decision(jobs, {}, max_submitted=limit, now=NOW)
    chosen = [s.job_id for s in decision.starts]
    handed = sum(1 for j in jobs if j.state == JobState.RUNNING)
    assert len(chosen) <= max(0, limit - handed)
    assert len(set(chosen)) == len(chosen)
    for position, job_id in enumerate(chosen):
        assert by_id[job_id].state == JobState.PENDING
        for dep in by_id[job_id].deps:
            other = by_id.get(dep.job_id)
            assert other is not None
            in_slurm = other.state == JobState.RUNNING and other.attempts > other.spec.retries
            assert in_slurm or dep.job_id in chosen[:position]
    for j in jobs:
        if j.state != JobState.RUNNING and j.id not in chosen:
            assert j.id in decision.reasons


# --------------------------------------------------------------------------- held in Slurm


def handed_over(job_id: int, ref: str = "77") -> Job:
    """As the engine leaves a job it handed to Slurm (attempt 1, Slurm id ``ref``)."""
    return job(job_id).transition(
        JobState.RUNNING, attempts=1, started_at=NOW, executor_ref=ref, ended_at=None
    )


def test_a_job_held_in_slurm_keeps_its_attempt() -> None:
    running = handed_over(1)
    held = into_slurm_hold(running, "held by user; slurm: PENDING (JobHeldUser)")
    assert held.state == JobState.HELD and held_in_slurm(held)
    assert (held.attempts, held.executor_ref, held.started_at) == (1, "77", NOW)
    back = out_of_slurm_hold(held, "slurm: PENDING")
    assert back.state == JobState.RUNNING and (back.attempts, back.executor_ref) == (1, "77")
    # HELD jobs that wait in loradeck: never handed over, or their last attempt ended.
    assert not held_in_slurm(hold_job(job(2), NOW))
    retried = running.transition(JobState.PENDING, ended_at=NOW + 5, reason="retry 1/2")
    assert not held_in_slurm(hold_job(retried, NOW))


def test_release_and_cancel_of_a_job_held_in_slurm() -> None:
    held = into_slurm_hold(handed_over(1), "held by user")
    # Back to PENDING would hand it to Slurm a second time, next to the held one.
    with pytest.raises(IllegalTransitionError, match=r"held in Slurm \(job 77\)"):
        release_job(held, NOW)
    with pytest.raises(IllegalTransitionError, match="held in Slurm"):
        toggle_hold(held, NOW)
    cancelling = cancel_job(held, NOW)  # the engine scancels it, as a running job
    assert cancelling.state == JobState.RUNNING and cancelling.cancel_requested_at == NOW
    assert release_job(hold_job(job(2), NOW), NOW).state == JobState.PENDING


def test_jobs_held_in_slurm_count_against_max_submitted() -> None:
    jobs = [
        handed_over(1),
        into_slurm_hold(handed_over(2, "78"), "held by user"),
        job(3),
        job(4),
    ]
    assert handover(jobs, max_submitted=3) == [3]
    decision = slurm_decision(jobs, {}, max_submitted=3, now=NOW)
    assert decision.reasons[2] == "held by user"
    assert "3 jobs are in Slurm already" in decision.reasons[4]


def test_store_actions_without_slurm_are_the_pure_ones(tmp_path: Path) -> None:
    home = Home.open(tmp_path / "home")
    store = Store(home.root)
    try:
        plan = plan_single({"name": "a", "command": "true"}, base_dir=tmp_path, settings=Settings())
        _, (submitted,) = submit_plan(store, home, plan)
        assert apply_hold(store, submitted.id, NOW).state == JobState.HELD
        assert apply_toggle_hold(store, submitted.id, NOW).state == JobState.PENDING
        assert apply_priority(store, submitted.id, 7).priority == 7
        assert apply_release(store, apply_hold(store, submitted.id, NOW).id, NOW).reason == (
            "released by user"
        )
        store.update(submitted.id, lambda j: j.transition(JobState.RUNNING, attempts=1))
        with pytest.raises(IllegalTransitionError, match="RUNNING to HELD"):
            apply_hold(store, submitted.id, NOW)
    finally:
        store.close()


# --------------------------------------------------------------------------- shared root


def test_job_folders_go_on_the_shared_root(tmp_path: Path) -> None:
    plain = Home.open(tmp_path / "home")
    assert plain.jobs_dir == tmp_path / "home" / "jobs"
    shared = Home.open(tmp_path / "home", shared_root=tmp_path / "nfs")
    assert shared.key == plain.key and len(shared.key) == 12
    assert shared.job_dir(3) == tmp_path / "nfs" / f"loradeck-{plain.key}" / "jobs" / "3"
    assert Home.open(tmp_path / "other").key != plain.key
    # A home on the shared root keeps its own layout.
    inside = Home.open(tmp_path / "nfs" / "home", shared_root=tmp_path / "nfs")
    assert inside.jobs_dir == tmp_path / "nfs" / "home" / "jobs"


def test_shared_root_must_be_absolute(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[slurm]\nshared_root = "scratch/me"\n', encoding="utf-8")
    with pytest.raises(SettingsError, match=r"shared_root.*absolute"):
        load_settings(config)
    config.write_text('[slurm]\nshared_root = "~/scratch"\n', encoding="utf-8")
    assert load_settings(config).slurm.shared_root == Path("~/scratch").expanduser()
