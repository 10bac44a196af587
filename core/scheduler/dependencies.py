"""Dependency conditions, as in Slurm.

- ``afterok``: may start once the dependency COMPLETED; fails if it ended any other way.
- ``afterany``: may start once the dependency ended, however it ended.
- ``afternotok``: may start once the dependency ended FAILED, CANCELLED or TIMEOUT; fails
  if it COMPLETED (like Slurm's "DependencyNeverSatisfied", with kill_invalid_depend).

A failed dependency ends the dependent CANCELLED, or holds it, per
``scheduler.on_dependency_failure``. A dependency whose state nobody knows keeps the job
waiting (it may be a job that another process is still submitting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from loradeck.core.models import TERMINAL_STATES, Dependency, DependencyCondition, JobState

_OK = DependencyCondition.AFTEROK
_ANY = DependencyCondition.AFTERANY
_NOTOK = DependencyCondition.AFTERNOTOK
_COMPLETED = JobState.COMPLETED
_BAD_ENDS = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT})


class DependencyVerdict(NamedTuple):
    """What a job's dependencies say now."""

    ready: bool
    """Every condition holds."""
    failed_dep: int | None
    """A dependency that can no longer be satisfied (then ``ready`` is False)."""
    reason: str
    """Why not ready ("" when ready)."""


READY = DependencyVerdict(True, None, "")


def _failure_text(dep_id: int, state: JobState, condition: DependencyCondition) -> str:
    if condition is DependencyCondition.AFTERNOTOK:
        return f"dependency {dep_id} completed (afternotok runs only after a failure)"
    if state is JobState.FAILED:
        return f"dependency {dep_id} failed"
    return f"dependency {dep_id} failed ({state.value.lower()})"


def check_dependencies(
    deps: Sequence[Dependency], state_of: Callable[[int], JobState | None]
) -> DependencyVerdict:
    """The verdict on ``deps``; ``state_of`` gives a job's state, or None when unknown."""
    if len(deps) == 1:  # the common case, kept cheap: a pass may judge thousands
        dep = deps[0]
        if state_of(dep.job_id) is _COMPLETED and dep.condition is not _NOTOK:
            return READY
    waiting: list[str] = []
    for dep in deps:
        state = state_of(dep.job_id)
        condition = dep.condition
        if state is None:
            waiting.append(f"{dep.job_id} (unknown job)")
            continue
        if not state.is_terminal:
            waiting.append(f"{dep.job_id} ({state.value})")
            continue
        if condition is _ANY:
            continue
        bad = state in _BAD_ENDS
        if bad == (condition is _OK):
            return DependencyVerdict(False, dep.job_id, _failure_text(dep.job_id, state, condition))
    if not waiting:
        return READY
    shown = ", ".join(waiting[:3]) + (f" and {len(waiting) - 3} more" if len(waiting) > 3 else "")
    noun = "job" if len(waiting) == 1 else "jobs"
    return DependencyVerdict(False, None, f"dependency: waiting for {noun} {shown}")


def first_failure(
    deps: Sequence[Dependency], state_of: Callable[[int], JobState | None]
) -> tuple[int, str] | None:
    """The first dependency that can no longer be satisfied, with the reason, or None.

    What :func:`check_dependencies` says about failures, without building the waiting
    text: a pass asks this of every pending job with dependencies."""
    for dep in deps:
        state = state_of(dep.job_id)
        if state is None or state not in TERMINAL_STATES or dep.condition is _ANY:
            continue
        if (state in _BAD_ENDS) == (dep.condition is _OK):
            return dep.job_id, _failure_text(dep.job_id, state, dep.condition)
    return None
