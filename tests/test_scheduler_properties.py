"""Properties of a scheduling pass over random queues and GPU sets (hypothesis)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loradeck.core.models import (
    Dependency,
    DependencyCondition,
    Job,
    JobSpec,
    JobState,
)
from loradeck.core.scheduler import (
    ClusterView,
    Decision,
    GpuView,
    RuntimeHistory,
    SchedulerInput,
    bound_seconds,
    schedule,
)
from loradeck.core.scheduler.history import expected_seconds
from loradeck.core.scheduler.placement import WHOLE_GPU_FOREIGN_LIMIT
from loradeck.core.scheduler.policies import DRAIN_SLACK, ordered, static_key
from loradeck.core.scheduler.queue import QueueIndex, split_queue
from loradeck.core.settings import SchedulerSettings

NOW = 1_000_000.0
ARCHIVED = range(1, 6)  # ids of finished jobs that queued jobs may depend on
EPS = 1e-6
TERMINAL = [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT]

SETTINGS = st.builds(
    SchedulerSettings,
    strategy=st.sampled_from(["fifo", "priority", "fair_share", "sjf"]),
    backfill=st.booleans(),
    max_concurrent_jobs=st.sampled_from([0, 0, 2, 5]),
    max_jobs_per_gpu=st.integers(1, 4),
    aging_per_hour=st.sampled_from([0.0, 1.0, 30.0]),
    on_dependency_failure=st.sampled_from(["cancel", "hold"]),
)


@st.composite
def clusters(draw: st.DrawFn) -> ClusterView:
    count = draw(st.integers(0, 6))
    gpus = tuple(
        GpuView(
            index=i * draw(st.sampled_from([1, 2])),  # indices need not be contiguous
            total_gb=draw(st.sampled_from([24.0, 48.0, 80.0])),
            foreign_gb=draw(st.sampled_from([0.0, 0.0, 2.5, 10.0, 30.0])),
        )
        for i in range(count)
    )
    ids = sorted({g.index for g in gpus})
    gpus = tuple({g.index: g for g in gpus}[i] for i in ids)
    distance: dict[tuple[int, int], int] = {}
    if draw(st.booleans()):
        for a in ids:
            for b in ids:
                if a < b:
                    distance[(a, b)] = draw(st.sampled_from([0, 10, 20, 50]))
    cap = draw(st.sampled_from([None, None, 20.0, 40.0]))
    return ClusterView(gpus=gpus, distance=distance, max_vram_per_gpu=cap)


@st.composite
def specs(draw: st.DrawFn, index: int) -> JobSpec:
    gpus = draw(st.sampled_from([0, 1, 1, 1, 2, 3, 4]))
    vram = draw(st.sampled_from([None, None, 4.0, 8.0, 16.0, 40.0]))
    return JobSpec(
        name=f"{draw(st.sampled_from(['hero', 'style', 'pet']))}-{index}",
        command="true",
        gpus=gpus,
        vram_gb=vram,
        exclusive=gpus > 0 and draw(st.booleans()),
        priority=draw(st.sampled_from([0, 0, 5, 10])),
        user=draw(st.sampled_from(["ana", "ben", None])),
        project=draw(st.sampled_from(["a", "b"])),
        est_minutes=draw(st.sampled_from([None, 5.0, 30.0, 240.0])),
        timeout=draw(st.sampled_from([None, None, 600.0])),
    )


@dataclass
class World:
    inp: SchedulerInput
    settings: SchedulerSettings


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """A cluster already running what an earlier pass started, and a queue after it."""
    settings_ = draw(SETTINGS)
    cluster = draw(clusters())
    dep_states = {i: draw(st.sampled_from(TERMINAL)) for i in ARCHIVED}
    first = _jobs(draw, 10, draw(st.integers(0, 8)), dep_states)
    earlier = schedule(SchedulerInput(first, dep_states, cluster, NOW - 3000.0), settings_)
    # what the earlier pass started is running now; the rest of its queue is still there
    running = {
        s.job_id: next(j for j in first if j.id == s.job_id).transition(
            JobState.RUNNING,
            started_at=NOW - draw(st.sampled_from([60.0, 3000.0, 20000.0])),
            gpu_ids=s.gpu_ids,
        )
        for s in earlier.starts
    }
    second = _jobs(draw, 100, draw(st.integers(0, 12)), dep_states, earlier=first)
    jobs = [running.get(j.id, j) for j in first] + second
    for job in jobs:
        dep_states.setdefault(job.id, job.state)
    history = RuntimeHistory.empty()
    if draw(st.booleans()):
        history = history.record("stem:hero", 120.0).record("stem:style", 20000.0)
    return World(
        SchedulerInput(jobs=jobs, dep_states=dep_states, cluster=cluster, now=NOW, history=history),
        settings_,
    )


def _jobs(
    draw: st.DrawFn,
    first_id: int,
    count: int,
    dep_states: dict[int, JobState],
    earlier: list[Job] | None = None,
) -> list[Job]:
    out: list[Job] = []
    for offset in range(count):
        job_id = first_id + offset
        targets = [*ARCHIVED, *(j.id for j in earlier or [])]
        deps: tuple[Dependency, ...] = ()
        if targets and draw(st.integers(0, 4)) == 0:
            deps = (
                Dependency(
                    job_id=draw(st.sampled_from(targets)),
                    condition=draw(st.sampled_from(list(DependencyCondition))),
                ),
            )
        job = Job(
            id=job_id,
            spec=draw(specs(job_id)),
            deps=deps,
            command="true",
            output_dir=Path("/tmp/o"),
            log_file=Path("/tmp/o/log"),
            created_at=NOW - draw(st.sampled_from([10.0, 3600.0, 86400.0])) - job_id,
            not_before=draw(st.sampled_from([None, None, None, NOW - 5.0, NOW + 50.0])),
        )
        if draw(st.integers(0, 9)) == 0:
            job = job.transition(JobState.HELD)
        out.append(job)
    return out


# ----------------------------------------------------------------------------- helpers


def occupancy(world: World, decision: Decision) -> dict[int, list[Job]]:
    """GPU index -> jobs on it, running and started."""
    by_id = {j.id: j for j in world.inp.jobs}
    on: dict[int, list[Job]] = {g.index: [] for g in world.inp.cluster.gpus}
    for job in world.inp.jobs:
        if job.state is JobState.RUNNING:
            for gpu in job.gpu_ids:
                on[gpu].append(job)
    for start in decision.starts:
        for gpu in start.gpu_ids:
            on[gpu].append(by_id[start.job_id])
    return on


def fits(cluster: ClusterView, gpu: GpuView, jobs: list[Job], max_jobs: int) -> bool:
    """The placement rules, written out plainly."""
    usable = cluster.usable_gb(gpu)
    if not jobs:
        return True
    if any(j.spec.vram_gb is None or j.spec.exclusive for j in jobs):
        if len(jobs) != 1:
            return False
        only = jobs[0].spec
        if only.vram_gb is None:
            return gpu.foreign_gb <= WHOLE_GPU_FOREIGN_LIMIT * usable + EPS
        return only.vram_gb <= usable - gpu.foreign_gb + EPS
    declared = sum(j.spec.vram_gb or 0.0 for j in jobs)
    return len(jobs) <= max_jobs and declared <= usable - gpu.foreign_gb + EPS


def dep_ok(condition: DependencyCondition, state: JobState) -> bool:
    if condition is DependencyCondition.AFTEROK:
        return state is JobState.COMPLETED
    if condition is DependencyCondition.AFTERANY:
        return state.is_terminal
    return state in (JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- properties


@FAST
@given(worlds())
def test_no_gpu_ever_gets_more_jobs_or_vram_than_allowed(world: World) -> None:
    decision = schedule(world.inp, world.settings)
    on = occupancy(world, decision)
    started_ids = {s.job_id for s in decision.starts}
    for gpu in world.inp.cluster.gpus:
        jobs = on[gpu.index]
        if any(j.id in started_ids for j in jobs):
            assert fits(world.inp.cluster, gpu, jobs, world.settings.max_jobs_per_gpu), (
                gpu,
                [(j.id, j.spec.vram_gb, j.spec.exclusive) for j in jobs],
            )
    limit = world.settings.max_concurrent_jobs
    running = sum(1 for j in world.inp.jobs if j.state is JobState.RUNNING)
    if limit and decision.starts:
        assert running + len(decision.starts) <= limit


@FAST
@given(worlds())
def test_only_ready_pending_jobs_start_and_multi_gpu_jobs_get_all_their_gpus(
    world: World,
) -> None:
    decision = schedule(world.inp, world.settings)
    by_id = {j.id: j for j in world.inp.jobs}
    known = {g.index for g in world.inp.cluster.gpus}
    for start in decision.starts:
        job = by_id[start.job_id]
        assert job.state is JobState.PENDING
        assert job.not_before is None or job.not_before <= NOW
        for dep in job.deps:
            assert dep_ok(dep.condition, world.inp.dep_states[dep.job_id])
        assert len(start.gpu_ids) == job.spec.gpus
        assert len(set(start.gpu_ids)) == len(start.gpu_ids)
        assert set(start.gpu_ids) <= known
    failed = {f.job_id for f in decision.dependency_failures}
    assert not failed & {s.job_id for s in decision.starts}
    # every waiting job that did not start has a reason
    waiting = {j.id for j in world.inp.jobs if j.state in (JobState.PENDING, JobState.HELD)}
    assert set(decision.reasons) == waiting - {s.job_id for s in decision.starts}
    assert all(decision.reasons[i] for i in decision.reasons)


@FAST
@given(worlds())
def test_backfill_never_delays_the_reservation(world: World) -> None:
    decision = schedule(world.inp, world.settings)
    if not decision.reservations:
        return
    ((reserved_id, (gpu_ids, at)),) = decision.reservations.items()
    inp, default_s = world.inp, world.settings.default_est_minutes * 60.0
    by_id = {j.id: j for j in inp.jobs}
    ends: dict[int, float] = {}
    for job in inp.jobs:
        if job.state is JobState.RUNNING:
            began = job.started_at or NOW
            ends[job.id] = max(began + bound_seconds(job.spec, inp.history, default_s), NOW)
    for start in decision.starts:
        ends[start.job_id] = NOW + bound_seconds(by_id[start.job_id].spec, inp.history, default_s)
    on = occupancy(world, decision)
    reserved = by_id[reserved_id]
    assert len(gpu_ids) == reserved.spec.gpus
    for gpu in inp.cluster.gpus:
        if gpu.index in gpu_ids:
            still = [j for j in on[gpu.index] if ends[j.id] > at + EPS]
            assert fits(inp.cluster, gpu, [*still, reserved], world.settings.max_jobs_per_gpu)


@FAST
@given(worlds(), st.randoms(use_true_random=False))
def test_same_inputs_same_decision_whatever_the_order(world: World, rng: random.Random) -> None:
    first = schedule(world.inp, world.settings)
    again = schedule(world.inp, world.settings)
    shuffled = list(world.inp.jobs)
    rng.shuffle(shuffled)
    moved = schedule(
        SchedulerInput(
            jobs=shuffled,
            dep_states=world.inp.dep_states,
            cluster=world.inp.cluster,
            now=NOW,
            history=world.inp.history,
        ),
        world.settings,
    )
    index = QueueIndex.build(world.inp.jobs, world.settings)
    indexed = schedule(
        SchedulerInput(
            jobs=index,
            dep_states=world.inp.dep_states,
            cluster=world.inp.cluster,
            now=NOW,
            history=world.inp.history,
        ),
        world.settings,
    )
    assert first == again == moved == indexed
    assert dict(first.reasons) == dict(indexed.reasons)


@FAST
@given(worlds(), st.data())
def test_an_updated_index_equals_a_fresh_one(world: World, data: st.DataObject) -> None:
    jobs = list(world.inp.jobs)
    start = data.draw(st.integers(0, len(jobs)))
    index = QueueIndex.build(jobs[:start], world.settings)
    changed = [
        j.transition(JobState.HELD) if j.state is JobState.PENDING and j.id % 3 == 0 else j
        for j in jobs
    ]
    gone = [j.id for j in jobs if j.id % 5 == 0]
    final = [j for j in changed if j.id not in gone]
    index = index.updated(jobs[start:]).updated(final, removed=gone)
    fresh = QueueIndex.build(final, world.settings)
    assert sorted(j.id for j in index) == sorted(j.id for j in fresh)
    assert {g: [e[:2] for e in es] for g, es in index.gpu_groups.items()} == {
        g: [e[:2] for e in es] for g, es in fresh.gpu_groups.items()
    }
    assert {k: sorted(v) for k, v in index.dependents.items()} == {
        k: sorted(v) for k, v in fresh.dependents.items()
    }
    inp = SchedulerInput(index, world.inp.dep_states, world.inp.cluster, NOW, world.inp.usage)
    plain = SchedulerInput(final, world.inp.dep_states, world.inp.cluster, NOW, world.inp.usage)
    assert schedule(inp, world.settings) == schedule(plain, world.settings)


@FAST
@given(worlds(), st.integers(1, 8), st.floats(0.0, 1e6))
def test_sjf_is_shortest_first_after_the_few_jobs_that_would_overshoot_the_drain(
    world: World, gpu_count: int, busy_gpu_s: float
) -> None:
    settings_ = world.settings.model_copy(update={"strategy": "sjf"})
    history, default_s = world.inp.history, settings_.default_est_minutes * 60.0
    groups = split_queue(world.inp.jobs, settings_).gpu
    order = [
        item[-1]
        for item in ordered(
            groups,
            settings_,
            now=NOW,
            usage=world.inp.usage,
            history=history,
            gpu_count=gpu_count,
            busy_gpu_s=busy_gpu_s,
        )
    ]
    waiting = [e[2] for entries in groups.values() for e in entries]
    assert sorted(j.id for j in order) == sorted(j.id for j in waiting)
    expected = {j.id: expected_seconds(j.spec, history, default_s) for j in waiting}
    drain = (busy_gpu_s + sum(j.spec.gpus * expected[j.id] for j in waiting)) / gpu_count

    def margin(job: Job) -> float:
        """Overshoot beyond DRAIN_SLACK of the drain (>= 0: drain-critical)."""
        share = 1.0 - job.spec.gpus / gpu_count
        return expected[job.id] * share - DRAIN_SLACK * drain if share > 0 else -math.inf

    critical = [j for j in order if margin(j) >= 0]
    ambiguous = 1e-9 * (drain + 1.0)
    first = order[: len(critical)]
    # the jobs that jump the queue are those, and only those, that would overshoot
    assert all(margin(j) >= -ambiguous for j in first)
    assert all(margin(j) < ambiguous for j in order[len(critical) :])
    assert len(critical) <= gpu_count / DRAIN_SLACK
    if gpu_count == 1:
        assert not critical
    # longest first among them, then shortest first; ties by id
    keys = [(-expected[j.id], j.id) for j in first]
    keys_rest = [(expected[j.id], j.id) for j in order[len(critical) :]]
    assert keys == sorted(keys) and keys_rest == sorted(keys_rest)


@FAST
@given(worlds(), st.sampled_from(["fifo", "priority", "fair_share", "sjf"]))
def test_the_list_walk_keys_jobs_as_the_index_does(world: World, strategy: str) -> None:
    settings_ = world.settings.model_copy(update={"strategy": strategy})
    rate = settings_.aging_per_hour / 3600.0
    parts = split_queue(world.inp.jobs, settings_)
    want: dict[object, list[tuple[float, int]]] = {}
    for job in world.inp.jobs:
        if job.state is JobState.PENDING and job.spec.gpus:
            group, key = static_key(job, strategy, rate)
            want.setdefault(group, []).append((key, job.id))
    assert {g: [e[:2] for e in es] for g, es in parts.gpu.items()} == {
        g: sorted(keys) for g, keys in want.items()
    }
