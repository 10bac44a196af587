"""A discrete-event simulator that drives the real :func:`schedule` in simulated time.

``loradeck simulate FILE --gpus sim:8`` plans a night's sweep before launching it, and the
makespan benchmark measures the policies with it. Every job is submitted at time 0 (or at
its ``submit_times`` entry) and runs for its duration: the given one, else ``est_minutes``,
else ``default_est_minutes``; a job whose duration exceeds its ``timeout`` ends TIMEOUT at
the timeout. Jobs never fail otherwise and are not retried. Between events the running
jobs are charged to fair-share, and every job that ends is recorded in the runtime history,
exactly as the engine would.

Dependencies are resolved within the list: a name means every job of that name, a number
means the job at that (1-based) position, which is also its simulated id.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from pathlib import Path

from loradeck.core.errors import ValidationError
from loradeck.core.models import Dependency, Job, JobSpec, JobState
from loradeck.core.scheduler.decide import schedule
from loradeck.core.scheduler.fairshare import FairShareUsage
from loradeck.core.scheduler.history import RuntimeHistory
from loradeck.core.scheduler.model import ClusterView, SchedulerInput
from loradeck.core.scheduler.queue import QueueIndex
from loradeck.core.scheduler.report import (
    SimJobResult,
    SimReport,
    compare_table,
    gpu_seconds,
    lower_bound,
)
from loradeck.core.settings import SchedulerSettings, Strategy

_SIM_DIR = Path("/sim")
_EPS = 1e-9


def resolve_dependencies(jobs: Sequence[JobSpec]) -> list[tuple[Dependency, ...]]:
    """Each job's dependencies as simulated ids (1-based positions); errors name the job."""
    by_name: dict[str, list[int]] = {}
    for job_id, spec in enumerate(jobs, start=1):
        by_name.setdefault(spec.name, []).append(job_id)
    resolved: list[tuple[Dependency, ...]] = []
    problems: list[str] = []
    for job_id, spec in enumerate(jobs, start=1):
        deps: list[Dependency] = []
        for ref in spec.depends_on:
            if isinstance(ref.job, int):
                targets = [ref.job] if 1 <= ref.job <= len(jobs) else []
            else:
                targets = by_name.get(ref.job, [])
            targets = [t for t in targets if t != job_id]
            if not targets:
                problems.append(
                    f"job {job_id} ({spec.name!r}): depends on {ref.job!r}, which is not "
                    f"in the simulated list (use a job name from the file or a position "
                    f"1..{len(jobs)})"
                )
            deps.extend(Dependency(job_id=t, condition=ref.condition) for t in targets)
        resolved.append(tuple(deps))
    if problems:
        raise ValidationError(problems)
    _refuse_cycles(jobs, resolved)
    return resolved


def _refuse_cycles(jobs: Sequence[JobSpec], deps: Sequence[tuple[Dependency, ...]]) -> None:
    state = [0] * (len(jobs) + 1)  # 0 new, 1 on the path, 2 done
    for root in range(1, len(jobs) + 1):
        if state[root]:
            continue
        stack = [(root, iter(d.job_id for d in deps[root - 1]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state[child] == 1:
                raise ValidationError(
                    f"job {child} ({jobs[child - 1].name!r}) depends on itself through "
                    "a cycle of dependencies; remove one of them"
                )
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(d.job_id for d in deps[child - 1])))


def true_durations(
    jobs: Sequence[JobSpec], durations: Sequence[float] | None, settings: SchedulerSettings
) -> list[float]:
    """Run time of each job: the given duration, else est_minutes, else the default; cut
    at the job's timeout."""
    if durations is not None and len(durations) != len(jobs):
        raise ValidationError(
            f"simulate: {len(durations)} durations for {len(jobs)} jobs; give one per job"
        )
    out: list[float] = []
    for index, spec in enumerate(jobs):
        if durations is not None:
            seconds = float(durations[index])
        elif spec.est_minutes is not None:
            seconds = spec.est_minutes * 60.0
        else:
            seconds = settings.default_est_minutes * 60.0
        if not seconds > 0:
            raise ValidationError(f"simulate: job {index + 1} has duration {seconds!r}; use > 0")
        out.append(seconds)
    return out


def simulate(
    jobs: Sequence[JobSpec],
    durations: Sequence[float] | None,
    cluster: ClusterView,
    settings: SchedulerSettings,
    *,
    submit_times: Sequence[float] | None = None,
    use_index: bool = True,
) -> SimReport:
    """Run ``jobs`` through :func:`schedule` in simulated time and report how it went.

    ``use_index`` keeps the queue in a :class:`QueueIndex` between passes, as an engine
    with long queues would; without it every pass gets a plain list (same decisions)."""
    deps = resolve_dependencies(jobs)
    runtimes = true_durations(jobs, durations, settings)
    submits = [0.0] * len(jobs) if submit_times is None else [float(t) for t in submit_times]
    if len(submits) != len(jobs):
        raise ValidationError(f"simulate: {len(submits)} submit times for {len(jobs)} jobs")
    half_life = settings.fair_share_half_life_hours * 3600.0
    arrivals = sorted(range(1, len(jobs) + 1), key=lambda i: (submits[i - 1], i))
    active: dict[int, Job] = {}
    states: dict[int, JobState] = {}
    final: dict[int, Job] = {}
    ends: list[tuple[float, int]] = []
    usage, history = FairShareUsage.empty(half_life), RuntimeHistory.empty()
    # the engine's way to keep passes fast: an index updated with what changed
    index = QueueIndex.build((), settings) if use_index else None
    changed: list[Job] = []
    now, next_arrival, passes = 0.0, 0, 0
    if arrivals:
        now = submits[arrivals[0] - 1]

    def put(job: Job) -> None:
        active[job.id] = job
        states[job.id] = job.state
        changed.append(job)

    def finish(job: Job) -> None:
        del active[job.id]
        final[job.id] = job
        states[job.id] = job.state
        changed.append(job)

    while True:
        while next_arrival < len(arrivals) and submits[arrivals[next_arrival] - 1] <= now:
            job_id = arrivals[next_arrival]
            spec = jobs[job_id - 1]
            put(
                Job(
                    id=job_id,
                    spec=spec,
                    deps=deps[job_id - 1],
                    command=spec.command or "true",
                    output_dir=_SIM_DIR,
                    log_file=_SIM_DIR / "log",
                    created_at=submits[job_id - 1],
                )
            )
            next_arrival += 1
        if index is not None:
            index = index.updated(changed)
        changed.clear()
        decision = schedule(
            SchedulerInput(
                jobs=index if index is not None else list(active.values()),
                dep_states=states,
                cluster=cluster,
                now=now,
                usage=usage,
                history=history,
            ),
            settings,
        )
        passes += 1
        for failure in decision.dependency_failures:
            job = active[failure.job_id]
            if failure.action == "cancel":
                finish(job.transition(JobState.CANCELLED, reason=failure.reason, ended_at=now))
            else:
                put(job.transition(JobState.HELD, reason=failure.reason))
        for start in decision.starts:
            job = active[start.job_id]
            put(job.transition(JobState.RUNNING, started_at=now, gpu_ids=start.gpu_ids, attempts=1))
            limit = job.spec.timeout
            run = runtimes[job.id - 1] if limit is None else min(runtimes[job.id - 1], limit)
            heapq.heappush(ends, (now + run, job.id))
        if decision.dependency_failures and not decision.starts:
            continue  # dependents of the cancelled jobs are judged at the same instant
        upcoming = [ends[0][0]] if ends else []
        if next_arrival < len(arrivals):
            upcoming.append(submits[arrivals[next_arrival] - 1])
        if not upcoming:
            break
        later = min(upcoming)
        usage = _charge(usage, active.values(), now, later, half_life)
        now = later
        while ends and ends[0][0] <= now + _EPS:
            _, job_id = heapq.heappop(ends)
            job = active[job_id]
            timed_out = job.spec.timeout is not None and runtimes[job_id - 1] > job.spec.timeout
            end_state = JobState.TIMEOUT if timed_out else JobState.COMPLETED
            finish(job.transition(end_state, ended_at=now))
            history = history.record_job(job.spec, now - (job.started_at or 0.0))
    final.update(active)  # whatever never ran (held, or waiting on a dependency forever)
    results = tuple(_result(final[i], decision.reasons.get(i, "")) for i in sorted(final))
    weights = _gpu_weights(jobs, cluster, settings)
    return SimReport(
        strategy=settings.strategy,
        backfill=settings.backfill,
        gpu_ids=tuple(g.index for g in cluster.gpus),
        jobs=results,
        lower_bound_s=lower_bound(results, deps, weights, len(cluster.gpus), settings),
        gpu_seconds=gpu_seconds(results, weights),
        passes=passes,
    )


def _charge(
    usage: FairShareUsage, jobs: Iterable[Job], start: float, end: float, half_life: float
) -> FairShareUsage:
    """Charge the running GPU jobs for [start, end], as the engine does between passes."""
    span = end - start
    if span <= 0:
        return usage
    charges = [
        (job.user, job.spec.project, job.spec.gpus * span)
        for job in jobs
        if job.state is JobState.RUNNING and job.spec.gpus
    ]
    return usage.charge_many(charges, end, half_life) if charges else usage


def _gpu_weights(
    jobs: Sequence[JobSpec], cluster: ClusterView, settings: SchedulerSettings
) -> tuple[float, ...]:
    """Share of each of its GPUs a job occupies (1 for whole GPUs; less when shared)."""
    largest = max((cluster.usable_gb(g) for g in cluster.gpus), default=0.0)
    weights: list[float] = []
    for spec in jobs:
        if spec.vram_gb is None or spec.exclusive or largest <= 0:
            weights.append(1.0)
        else:
            weights.append(min(1.0, max(spec.vram_gb / largest, 1.0 / settings.max_jobs_per_gpu)))
    return tuple(weights)


def _result(job: Job, reason: str) -> SimJobResult:
    return SimJobResult(
        job_id=job.id,
        name=job.name,
        user=job.user,
        project=job.spec.project,
        priority=job.priority,
        gpus=job.gpus,
        submitted=job.created_at,
        started=job.started_at,
        ended=job.ended_at,
        gpu_ids=job.gpu_ids,
        state=job.state,
        reason=job.reason or reason,
    )


STRATEGIES: tuple[Strategy, ...] = ("fifo", "priority", "fair_share", "sjf")


def run_strategies(
    jobs: Sequence[JobSpec],
    durations: Sequence[float] | None,
    cluster: ClusterView,
    settings: SchedulerSettings,
    *,
    backfill: Sequence[bool] = (True, False),
) -> list[SimReport]:
    """:func:`simulate` under every strategy, for each backfill setting given."""
    return [
        simulate(jobs, durations, cluster, settings.model_copy(update=dict(strategy=s, backfill=b)))
        for s in STRATEGIES
        for b in backfill
    ]


def compare_strategies(
    jobs: Sequence[JobSpec],
    durations: Sequence[float] | None,
    cluster: ClusterView,
    settings: SchedulerSettings,
    *,
    backfill: Sequence[bool] = (True, False),
) -> str:
    """Every strategy side by side, with and without backfill (``simulate --compare``)."""
    return compare_table(run_strategies(jobs, durations, cluster, settings, backfill=backfill))
