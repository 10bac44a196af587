"""What to hand to Slurm now: the scheduling pass of the engine in Slurm mode. Pure.

With Slurm, Slurm places jobs (nodes, GPUs, backfill). loradeck's part is only to hand
pending jobs over in its policy's order (``scheduler.strategy``), at most
``slurm.max_submitted`` at a time, and to keep its own dependency rules:

* A job is *handed over* while it is RUNNING in loradeck (PENDING or RUNNING in Slurm),
  or HELD with its attempt held in Slurm (:func:`~loradeck.core.actions.held_in_slurm`);
  handed-over jobs count against ``max_submitted``.
* A pending job may go once each dependency either ended in a way its condition accepts
  (then Slurm needs no dependency), or is handed over on its **last** attempt (then
  Slurm's own ``--dependency`` waits for it). A dependency that may still be retried
  keeps the job in loradeck: Slurm would judge it by an attempt that does not count.
  A dependency handed over earlier in the same pass counts as handed over.
* A dependency that can no longer be satisfied gives a
  :class:`~loradeck.core.scheduler.DependencyFailure` (cancel or hold, per
  ``scheduler.on_dependency_failure``), exactly as without Slurm.
* HELD jobs and jobs in retry backoff (``not_before``) wait, with a reason.

:func:`slurm_decision` returns a :class:`~loradeck.core.scheduler.Decision` whose starts
carry no GPU ids, so the engine launches them as it launches its own decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from loradeck.core.actions import held_in_slurm
from loradeck.core.models import Dependency, Job, JobState
from loradeck.core.scheduler import (
    Decision,
    DependencyFailure,
    FairShareUsage,
    RuntimeHistory,
    Start,
    held_reason,
)
from loradeck.core.scheduler.dependencies import check_dependencies, first_failure
from loradeck.core.scheduler.policies import Entry, Group, ordered, static_key
from loradeck.core.scheduler.text import fmt_span
from loradeck.core.settings import SchedulerSettings

_DEFAULT_SCHEDULER = SchedulerSettings()


def slurm_decision(
    jobs: Sequence[Job],
    dep_states: Mapping[int, JobState],
    *,
    max_submitted: int,
    settings: SchedulerSettings = _DEFAULT_SCHEDULER,
    now: float = 0.0,
    usage: FairShareUsage | None = None,
    history: RuntimeHistory | None = None,
) -> Decision:
    """Which pending jobs to hand to Slurm now, in order, and why the others wait.

    ``jobs`` are the active jobs (PENDING, HELD, RUNNING = handed over); ``dep_states``
    the state of every job they depend on (terminal ones included), as for
    :func:`~loradeck.core.scheduler.schedule`."""
    by_id = {job.id: job for job in jobs}
    if len(by_id) != len(jobs):
        raise ValueError("two jobs with one id")
    handed = sum(1 for job in jobs if job.state == JobState.RUNNING or held_in_slurm(job))
    room = max(0, max_submitted - handed)
    reasons: dict[int, str] = {}
    failures: list[DependencyFailure] = []
    chosen: list[int] = []
    chosen_set: set[int] = set()

    def state_of(job_id: int) -> JobState | None:
        job = by_id.get(job_id)
        if job is not None:
            return job.state
        return dep_states.get(job_id)

    waiting: list[Job] = []
    for job in _in_policy_order(jobs, settings, now, usage, history):
        if job.state == JobState.HELD:
            reasons[job.id] = held_reason(job)
            continue
        if job.deps:
            failed = first_failure(job.deps, state_of)
            if failed is not None:
                dep_id, text = failed
                failures.append(
                    DependencyFailure(job.id, dep_id, settings.on_dependency_failure, text)
                )
                continue
        if job.not_before is not None and job.not_before > now:
            kept = job.reason if job.reason.startswith("retry ") else ""
            reasons[job.id] = kept or f"retry backoff: {fmt_span(job.not_before - now)} left"
            continue
        waiting.append(job)

    # Sweep until nothing more can go: a job may wait only for a dependency that an
    # earlier sweep of this pass handed over.
    progress = True
    while waiting and progress and len(chosen) < room:
        progress = False
        still: list[Job] = []
        for job in waiting:
            if len(chosen) >= room:
                still.append(job)
                continue
            blocker = _blocker(job.deps, by_id, state_of, chosen_set)
            if blocker is None:
                chosen.append(job.id)
                chosen_set.add(job.id)
                progress = True
            else:
                reasons[job.id] = blocker
                still.append(job)
        waiting = still
    full = (
        f"waiting: {handed + len(chosen)} jobs are in Slurm already "
        f"(slurm.max_submitted = {max_submitted})"
    )
    for job in waiting:
        # A job the sweeps never judged waits for room; one they did, for its dependency.
        reasons.setdefault(job.id, full)
    return Decision(
        starts=tuple(Start(job_id, ()) for job_id in chosen),
        reasons=reasons,
        dependency_failures=tuple(failures),
        reservations={},
    )


def slurm_handover(
    jobs: Sequence[Job],
    dep_states: Mapping[int, JobState],
    *,
    max_submitted: int,
    settings: SchedulerSettings = _DEFAULT_SCHEDULER,
    now: float = 0.0,
    usage: FairShareUsage | None = None,
    history: RuntimeHistory | None = None,
) -> list[int]:
    """The ids of the jobs :func:`slurm_decision` hands over now, in order."""
    decision = slurm_decision(
        jobs,
        dep_states,
        max_submitted=max_submitted,
        settings=settings,
        now=now,
        usage=usage,
        history=history,
    )
    return [start.job_id for start in decision.starts]


def _blocker(
    deps: Sequence[Dependency],
    by_id: Mapping[int, Job],
    state_of: Callable[[int], JobState | None],
    chosen: set[int],
) -> str | None:
    """Why ``deps`` keep a job in loradeck, or None when it may go to Slurm."""
    for dep in deps:
        state = state_of(dep.job_id)
        if state is None:
            return f"dependency: waiting for job {dep.job_id} (unknown job)"
        if state.is_terminal:
            continue  # first_failure accepted it: satisfied
        if dep.job_id in chosen:
            continue
        if state == JobState.RUNNING:
            other = by_id.get(dep.job_id)
            if other is not None and other.attempts > other.spec.retries:
                continue  # its last attempt: Slurm's --dependency judges it
            return f"dependency: waiting for job {dep.job_id} (RUNNING; it may be retried)"
        verdict = check_dependencies((dep,), state_of)
        return verdict.reason or f"dependency: waiting for job {dep.job_id} ({state.value})"
    return None


def _in_policy_order(
    jobs: Sequence[Job],
    settings: SchedulerSettings,
    now: float,
    usage: FairShareUsage | None,
    history: RuntimeHistory | None,
) -> list[Job]:
    """PENDING and HELD jobs in the order ``scheduler.strategy`` gives them."""
    rate = settings.aging_per_hour / 3600.0
    groups: dict[Group, list[Entry]] = {}
    for job in jobs:
        if job.state in (JobState.PENDING, JobState.HELD):
            group, key = static_key(job, settings.strategy, rate)
            groups.setdefault(group, []).append((key, job.id, job))
    for entries in groups.values():
        entries.sort(key=lambda entry: (entry[0], entry[1]))
    stream = ordered(
        groups,
        settings,
        now=now,
        usage=usage or FairShareUsage.empty(settings.fair_share_half_life_hours * 3600),
        history=history or RuntimeHistory.empty(),
    )
    return [item[3] for item in stream]
