"""The simulator, fair-share, runtime history and the seeded workloads."""

from __future__ import annotations

import math

import pytest

from loradeck.core.errors import ValidationError
from loradeck.core.models import DependencyRef, JobSpec, JobState
from loradeck.core.scheduler import ClusterView, FairShareUsage, RuntimeHistory, name_stem
from loradeck.core.scheduler.report import SimReport
from loradeck.core.scheduler.simulate import compare_strategies, simulate
from loradeck.core.scheduler.workload import long_queue, standard_workload
from loradeck.core.settings import SchedulerSettings

HOUR = 3600.0


def spec(name: str, **fields: object) -> JobSpec:
    return JobSpec.model_validate({"name": name, "command": "true", **fields})


def gpu_seconds_by_user(report: SimReport, until: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for job in report.jobs:
        if job.started is None or job.ended is None:
            continue
        held = max(min(job.ended, until) - job.started, 0.0)
        out[job.user] = out.get(job.user, 0.0) + held * job.gpus
    return out


# ----------------------------------------------------------------------------- fair-share


def test_fair_share_gives_two_users_equal_shares_over_a_day() -> None:
    # ana submits three times as many jobs as ben, and first; both have work all day
    jobs = [spec(f"ana-{i}", user="ana", est_minutes=40 + 10 * (i % 5)) for i in range(240)]
    jobs += [spec(f"ben-{i}", user="ben", est_minutes=70 + 10 * (i % 5)) for i in range(80)]
    cluster = ClusterView.uniform(8)
    fair = simulate(jobs, None, cluster, SchedulerSettings(strategy="fair_share"))
    used = gpu_seconds_by_user(fair, until=24 * HOUR)
    share = used["ben"] / (used["ana"] + used["ben"])
    assert 0.45 <= share <= 0.55, share
    # the same batch under fifo leaves ben nothing that day: the property is not free
    fifo = simulate(jobs, None, cluster, SchedulerSettings(strategy="fifo"))
    assert gpu_seconds_by_user(fifo, until=24 * HOUR).get("ben", 0.0) == 0.0


def test_fair_share_usage_decays_and_orders_users() -> None:
    usage = FairShareUsage.empty(half_life_s=10.0).charge(
        "ana", "p", 100.0, at=0.0, half_life_s=10.0
    )
    assert usage.user_usage("ana", 10.0) == pytest.approx(50.0)
    assert usage.project_usage("p", 20.0) == pytest.approx(25.0)
    usage = usage.charge("ben", "p", 10.0, at=10.0, half_life_s=10.0)
    assert usage.factor("ben", "p", 10.0) > usage.factor("ana", "p", 10.0)
    assert usage.factor("carl", "q", 10.0) == 1.0
    assert 0.0 < usage.factor("ana", "p", 10.0) < 1.0
    with pytest.raises(ValueError, match="GPU-seconds"):
        usage.charge("ana", "p", -1.0, at=11.0, half_life_s=10.0)


# ----------------------------------------------------------------------------- history


def test_name_stems_and_runtime_history() -> None:
    assert name_stem("hero-v2") == "hero"
    assert name_stem("hero-lr1e-4-r16") == "hero"
    assert name_stem("hero_3") == "hero"
    assert name_stem("run12") == "run"
    assert name_stem("sd15-hero-3") == "sd15-hero"
    assert name_stem("42") == "42"
    history = RuntimeHistory.empty()
    for seconds in (100.0, 300.0, 200.0):
        history = history.record_job(spec("hero-1"), seconds)
    assert history.estimate(spec("hero-99")) == 200.0
    assert history.estimate(spec("other")) is None
    with_config = history.record("config:/c.toml", 50.0)
    assert with_config.estimate(spec("hero-2", trainer="kohya", config="/c.toml")) == 50.0


# ----------------------------------------------------------------------------- simulation


def test_simulated_times_add_up() -> None:
    jobs = [spec(f"j{i}", est_minutes=60) for i in range(4)]
    report = simulate(jobs, None, ClusterView.uniform(2), SchedulerSettings())
    assert report.makespan_s == pytest.approx(2 * HOUR)
    assert report.lower_bound_s == pytest.approx(2 * HOUR)
    assert report.utilisation == pytest.approx(1.0)
    assert report.ratio == pytest.approx(1.0)
    assert [j.state for j in report.jobs] == [JobState.COMPLETED] * 4
    stats = report.waits[0]
    assert stats.n_jobs == 4 and stats.mean_s == pytest.approx(0.5 * HOUR)
    assert stats.p95_s == pytest.approx(HOUR)


def test_dependencies_by_name_hold_in_simulated_time() -> None:
    jobs = [
        spec("train", est_minutes=30),
        spec("eval", est_minutes=10, depends_on=["train"]),
        spec("report", gpus=0, est_minutes=5, depends_on=["afterany:eval"]),
        spec("cleanup", gpus=0, est_minutes=1, depends_on=[DependencyRef(job=1)]),
    ]
    report = simulate(jobs, None, ClusterView.uniform(4), SchedulerSettings())
    train, evaluate, summary, cleanup = report.jobs
    assert evaluate.started == pytest.approx(train.ended)
    assert summary.started == pytest.approx(evaluate.ended)
    assert cleanup.started == pytest.approx(train.ended)
    assert report.lower_bound_s == pytest.approx(45 * 60)  # the chain
    assert report.makespan_s == pytest.approx(45 * 60)


def test_bad_dependencies_are_refused_with_the_job_named() -> None:
    with pytest.raises(ValidationError, match=r"job 1 \('a'\): depends on 'nope'"):
        simulate(
            [spec("a", depends_on=["nope"])], None, ClusterView.uniform(1), SchedulerSettings()
        )
    cycle = [spec("a", depends_on=["b"]), spec("b", depends_on=["a"])]
    with pytest.raises(ValidationError, match="cycle"):
        simulate(cycle, None, ClusterView.uniform(1), SchedulerSettings())
    with pytest.raises(ValidationError, match="2 durations for 1 jobs"):
        simulate([spec("a")], [1.0, 2.0], ClusterView.uniform(1), SchedulerSettings())


@pytest.mark.parametrize("action", ["cancel", "hold"])
def test_a_timeout_fails_afterok_dependents(action: str) -> None:
    jobs = [
        spec("train", est_minutes=60, timeout="30m"),
        spec("eval", depends_on=["train"]),
        spec("rescue", depends_on=["afternotok:train"], est_minutes=5),
    ]
    settings = SchedulerSettings(on_dependency_failure=action)
    report = simulate(jobs, None, ClusterView.uniform(1), settings)
    train, evaluate, rescue = report.jobs
    assert train.state is JobState.TIMEOUT and train.run_s == pytest.approx(1800)
    assert evaluate.started is None
    assert evaluate.state is (JobState.CANCELLED if action == "cancel" else JobState.HELD)
    assert evaluate.reason == "dependency 1 failed (timeout)"
    assert rescue.started == pytest.approx(1800)


def test_backfill_fills_the_gap_in_the_simulation() -> None:
    jobs = [
        spec("first", est_minutes=60),
        spec("wide", gpus=2, est_minutes=60, priority=5),
        spec("short", est_minutes=30),
    ]
    on = simulate(jobs, None, ClusterView.uniform(2), SchedulerSettings(strategy="fifo"))
    off = simulate(
        jobs, None, ClusterView.uniform(2), SchedulerSettings(strategy="fifo", backfill=False)
    )
    assert on.jobs[2].started == 0.0 and on.jobs[1].started == pytest.approx(HOUR)
    assert off.jobs[2].started == pytest.approx(2 * HOUR)
    assert on.makespan_s < off.makespan_s


def test_sjf_does_not_leave_the_longest_job_to_the_end() -> None:
    jobs = [spec(f"short-{i}", est_minutes=60) for i in range(4)] + [spec("long", est_minutes=300)]
    cluster = ClusterView.uniform(2)
    sjf = simulate(jobs, None, cluster, SchedulerSettings(strategy="sjf"))
    # pure shortest-first would run the four short jobs two by two, then the long one
    # alone: 2 h + 5 h. sjf starts the long one at once, beside the short ones in turn.
    assert sjf.jobs[4].started == 0.0
    assert sjf.makespan_s == pytest.approx(5 * HOUR) == sjf.lower_bound_s
    assert [j.started for j in sjf.jobs[:4]] == pytest.approx([0, HOUR, 2 * HOUR, 3 * HOUR])


def test_text_report_and_comparison() -> None:
    jobs = [spec(f"job-{i}", est_minutes=20 + 10 * i, priority=i % 2) for i in range(6)]
    cluster = ClusterView.uniform(2)
    text = simulate(jobs, None, cluster, SchedulerSettings()).format_text(width=60)
    lines = text.splitlines()
    assert lines[0] == "6 jobs on 2 GPUs, strategy priority, backfill on"
    assert lines[1].startswith("makespan     ")
    assert any(line.startswith("waits        priority 1: mean") for line in lines)
    rows = [line for line in lines if line.startswith("GPU ")]
    assert len(rows) == 2 and all(len(row) <= 60 for row in rows)
    assert "A" in rows[0] + rows[1]  # job 1 is drawn as A
    table = compare_strategies(jobs, None, cluster, SchedulerSettings())
    assert len(table.splitlines()) == 2 + 8
    assert {line.split()[0] for line in table.splitlines()[2:]} == {
        "fifo",
        "priority",
        "fair_share",
        "sjf",
    }


def test_workloads_are_seeded() -> None:
    one, again, other = (
        standard_workload(200, 1),
        standard_workload(200, 1),
        standard_workload(200, 2),
    )
    assert one == again and one != other
    counts = {g: sum(1 for j in one.jobs if j.gpus == g) for g in (1, 2, 4)}
    assert counts[1] > counts[2] > counts[4] > 0
    assert all(math.isfinite(d) and d > 0 for d in one.durations)
    queue = long_queue(300, busy_gpus=3)
    assert sum(1 for j in queue.jobs if j.state is JobState.RUNNING) == 3
    assert 30 <= sum(1 for j in queue.jobs if j.deps) <= 90


@pytest.mark.parametrize("strategy", ["fifo", "priority", "fair_share", "sjf"])
def test_a_queue_index_and_a_plain_list_simulate_alike(strategy: str) -> None:
    work = standard_workload(120, seed=3, gpus=4)
    settings = SchedulerSettings(strategy=strategy)
    indexed = simulate(work.jobs, work.durations, work.cluster, settings)
    plain = simulate(work.jobs, work.durations, work.cluster, settings, use_index=False)
    assert indexed == plain
    assert indexed.ratio < 1.5
