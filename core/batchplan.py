"""A validated batch (:class:`BatchPlan` of :class:`PlannedJob`) and its dependency graph.

The loader (:mod:`loradeck.core.batch`) builds the plan, expanding a sweep's name in
``depends_on`` to all its jobs (:func:`expand_sweep_deps`) and refusing cycles
(:func:`cycle_problems`); the submitter checks the names outside the batch against the store
(:func:`check_dependencies`) and turns each planned job into a stored one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from loradeck.core.batchtext import show
from loradeck.core.configcopy import ConfigScalar
from loradeck.core.errors import ValidationError
from loradeck.core.models import DependencyRef, JobSpec


@dataclass(frozen=True)
class PlannedJob:
    """One job of a batch, validated, ready for the submitter.

    The submitter copies ``spec.config`` with ``grid_values`` written in
    (:func:`~loradeck.core.configcopy.write_config_copy`) and fills the command with
    :func:`~loradeck.core.batchtext.fill_command`.
    """

    spec: JobSpec
    """Paths absolute; ``workdir`` set; ``depends_on`` with sweep names expanded."""
    index: int
    """Position in the expanded batch (0-based)."""
    source: str
    """Where it came from, for messages: ``job[2] "hero-merge"``."""
    grid_values: Mapping[str, ConfigScalar]
    """The sweep values of this job ({} for a plain job)."""
    command_template: str
    """The command with grid keys filled and {config}/{name}/{output_dir}/{job_id} left."""
    dep_names: tuple[DependencyRef, ...]
    """Dependencies as written (names or ids), sweep names expanded."""


@dataclass(frozen=True)
class BatchPlan:
    """A validated batch: its jobs in file order."""

    path: Path | None
    """The batch file, absolute; None for ``loradeck submit`` and parsed text."""
    digest: str
    """sha256 of the file's bytes."""
    name: str | None
    """``[batch] name``, if given."""
    jobs: tuple[PlannedJob, ...]
    label: str = field(default="")
    """How messages name the file (the path as given)."""


def check_dependencies(plan: BatchPlan, known_names: Callable[[str], bool]) -> None:
    """Raise if a dependency name is neither in the batch nor ``known_names(name)``,
    or if dependencies within the batch form a cycle (``a -> b -> a``).

    Integer dependencies are store ids; the caller checks those.
    """
    problems: list[str] = []
    names = {job.spec.name for job in plan.jobs}
    label = plan.label or (str(plan.path) if plan.path else "batch")
    for job in plan.jobs:
        for dep in job.dep_names:
            if isinstance(dep.job, str) and dep.job not in names and not known_names(dep.job):
                problems.append(
                    f"{label}: {job.source}: depends_on: no job named {show(dep.job)} in this "
                    "batch or in the store (check the spelling, or give a job id)"
                )
    problems.extend(cycle_problems(label, plan.jobs))
    if problems:
        raise ValidationError(problems)


def expand_sweep_deps(
    job: PlannedJob, sweeps: Mapping[str, list[str]], names: set[str]
) -> PlannedJob:
    """Replace a sweep's name in ``depends_on`` by the names of all its jobs."""
    deps: list[DependencyRef] = []
    changed = False
    for dep in job.dep_names:
        members = sweeps.get(dep.job) if isinstance(dep.job, str) else None
        if members is not None and dep.job not in names:
            deps.extend(DependencyRef(job=m, condition=dep.condition) for m in members)
            changed = True
        else:
            deps.append(dep)
    if not changed:
        return job
    spec = job.spec.model_copy(update={"depends_on": deps})
    return replace(job, spec=spec, dep_names=tuple(deps))


def cycle_problems(label: str, jobs: list[PlannedJob] | tuple[PlannedJob, ...]) -> list[str]:
    """One problem per dependency cycle among ``jobs`` (by name), printed ``a -> b -> a``."""
    by_name = {job.spec.name: job for job in jobs}
    edges = {
        name: [d.job for d in job.dep_names if isinstance(d.job, str) and d.job in by_name]
        for name, job in by_name.items()
    }
    # Peel off jobs whose dependencies are all peeled (Kahn); what is left is in or
    # behind a cycle, and every job left has a dependency that is left.
    waiting = {name: len(set(deps)) for name, deps in edges.items()}
    dependents: dict[str, list[str]] = {name: [] for name in edges}
    for name, deps in edges.items():
        for dep in set(deps):
            dependents[dep].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    while ready:
        done = ready.pop()
        for other in dependents[done]:
            waiting[other] -= 1
            if waiting[other] == 0:
                ready.append(other)
    left = {name for name, count in waiting.items() if count > 0}
    problems: list[str] = []
    covered: set[str] = set()
    for start in by_name:
        if start not in left or start in covered:
            continue
        trail: list[str] = []
        at: dict[str, int] = {}
        node = start
        while node not in at and node not in covered:
            at[node] = len(trail)
            trail.append(node)
            node = next(d for d in edges[node] if d in left)
        covered.update(trail)
        if node in at:  # a new cycle, not one reported already
            cycle = [*trail[at[node] :], node]
            problems.append(
                f"{label}: {by_name[cycle[0]].source}: depends_on: dependency cycle: "
                f"{' -> '.join(cycle)} (each waits for the next; remove one dependency)"
            )
    return problems
