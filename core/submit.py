"""Turning a validated batch plan into stored jobs, atomically.

Everything that can fail is checked before the store transaction commits: unknown
dependencies, cycles, jobs that can never fit the machine, unreadable trainer configs.
Either every job of a plan is stored, or none is.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loradeck.core.batch import (
    BatchPlan,
    PlannedJob,
    check_dependencies,
    fill_command,
    plan_single,
)
from loradeck.core.configcopy import write_config_copy
from loradeck.core.errors import LoradeckError, UnknownJobError, ValidationError
from loradeck.core.home import Home, ensure_private_dir
from loradeck.core.models import Batch, Dependency, Job, JobSpec
from loradeck.core.settings import Settings
from loradeck.core.store import Store, Transaction

#: A check run on each spec before submission; returns why it can never run, or None.
FitCheck = Callable[[JobSpec], str | None]


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _resolve_deps(
    planned: PlannedJob,
    ids_by_name: dict[str, int],
    tx: Transaction,
    problems: list[str],
    where: str,
) -> tuple[Dependency, ...]:
    deps: list[Dependency] = []
    for ref in planned.dep_names:
        target: int | None
        if isinstance(ref.job, int):
            try:
                target = tx.get(ref.job).id
            except UnknownJobError:
                problems.append(
                    f"{where}: {planned.source}: depends_on: no job with id {ref.job} "
                    "in this home (`loradeck list` shows the ids)"
                )
                continue
        else:
            target = ids_by_name.get(ref.job)
            if target is None:
                found = tx.find_by_name(ref.job)
                target = found.id if found is not None else None
            if target is None:
                problems.append(
                    f"{where}: {planned.source}: depends_on: no job named {ref.job!r} "
                    "in this batch or in the store"
                )
                continue
        deps.append(Dependency(job_id=target, condition=ref.condition))
    return tuple(deps)


def submit_plan(
    store: Store,
    home: Home,
    plan: BatchPlan,
    *,
    fit_check: FitCheck | None = None,
    user: str | None = None,
    now: float | None = None,
) -> tuple[Batch | None, list[Job]]:
    """Store every job of ``plan``; returns the batch record (file batches) and the jobs.

    Raises :class:`ValidationError` listing every problem; nothing is stored then.
    """
    where = plan.label or (str(plan.path) if plan.path is not None else "submit")
    submitter = user or current_user()
    created = time.time() if now is None else now
    problems: list[str] = []
    if fit_check is not None:
        for planned in plan.jobs:
            why = fit_check(planned.spec)
            if why is not None:
                problems.append(f"{where}: {planned.source}: {why}")
    if problems:
        raise ValidationError(problems)

    with store.transaction() as tx:
        check_dependencies(plan, lambda name: tx.find_by_name(name) is not None)
        ids = [tx.next_job_id() for _ in plan.jobs]
        ids_by_name = {
            planned.spec.name: job_id for planned, job_id in zip(plan.jobs, ids, strict=True)
        }
        all_deps = [_resolve_deps(p, ids_by_name, tx, problems, where) for p in plan.jobs]
        if problems:
            raise ValidationError(problems)
        batch: Batch | None = None
        if plan.path is not None:
            batch = Batch(
                id=tx.next_batch_id(),
                path=plan.path,
                digest=plan.digest,
                submitted_at=created,
                job_ids=tuple(ids),
            )
            tx.put_batch(batch)
        context = _JobContext(home, submitter, created, where, batch.id if batch else None)
        jobs = [
            _build_job(planned, job_id, deps, context)
            for planned, job_id, deps in zip(plan.jobs, ids, all_deps, strict=True)
        ]
        for job in jobs:
            tx.put(job)
    return batch, jobs


@dataclass(frozen=True)
class _JobContext:
    home: Home
    submitter: str
    created: float
    where: str
    batch_id: int | None


def _build_job(
    planned: PlannedJob, job_id: int, deps: tuple[Dependency, ...], ctx: _JobContext
) -> Job:
    spec = planned.spec
    if spec.user is None:
        spec = spec.model_copy(update={"user": ctx.submitter})
    # The job folder is made when something is first written there (a config copy now,
    # the run script at launch): 10,000 mkdirs would dominate a big submit.
    job_dir = ctx.home.job_dir(job_id)
    output_dir = spec.output_dir or job_dir
    config_copy: Path | None = None
    if spec.config is not None:
        ensure_private_dir(job_dir)
        dest = job_dir / f"config{spec.config.suffix}"
        try:
            config_copy = write_config_copy(spec.config, dest, planned.grid_values)
        except LoradeckError as err:
            raise ValidationError(f"{ctx.where}: {planned.source}: config: {err.message}") from err
    command = fill_command(
        planned.command_template,
        config=config_copy,
        output_dir=output_dir,
        job_id=job_id,
        name=spec.name,
    )
    return Job(
        id=job_id,
        spec=spec,
        deps=deps,
        batch_id=ctx.batch_id,
        command=command,
        config_copy=config_copy,
        output_dir=output_dir,
        log_file=job_dir / "output.log",
        created_at=ctx.created,
        reason="submitted",
    )


def find_previous_batch(store: Store, plan: BatchPlan) -> Batch | None:
    """The newest stored batch from the same file with the same bytes (for resuming)."""
    if plan.path is None:
        return None
    for batch in reversed(store.batches()):
        if batch.path == plan.path and batch.digest == plan.digest:
            return batch
    return None


def resolve_job_refs(store: Store, refs: Sequence[str]) -> list[Job]:
    """Jobs named on a command line by id (``12``) or exact name; unknown ones are errors."""
    jobs: list[Job] = []
    for ref in refs:
        text = ref.strip()
        if text.isdigit():
            jobs.append(store.get(int(text)))
            continue
        found = store.find_by_name(text)
        if found is None:
            raise UnknownJobError(
                f"no job with id or name {ref!r} in this home; `loradeck list` shows them"
            )
        jobs.append(found)
    return jobs


def _trains(job: Job) -> bool:
    """Whether a job looks like training (worth an evaluation job): it has a trainer
    config or GPUs. A CPU job without a config (a merge, a report) has no checkpoints."""
    return job.spec.config is not None or job.spec.trainer is not None or job.spec.gpus > 0


def submit_with_evaluation(
    store: Store,
    home: Home,
    plan: BatchPlan,
    settings: Settings,
    *,
    fit_check: FitCheck | None = None,
    settings_file: Path | None = None,
) -> tuple[Batch | None, list[Job]]:
    """:func:`submit_plan`, plus one evaluation job per training job when
    ``evaluation.auto_evaluate`` is on. Returns the training jobs and then their
    evaluation jobs (each depends afterok on its training job). Jobs with neither a
    trainer config nor GPUs are not evaluated."""
    batch, jobs = submit_plan(store, home, plan, fit_check=fit_check)
    if not settings.evaluation.auto_evaluate:
        return batch, jobs
    from loradeck.core.evaluation.commands import evaluation_job_fields
    from loradeck.core.evaluation.leaderboard import EVALUATION_TAG

    planned: list[PlannedJob] = []
    for job in jobs:
        if not _trains(job) or EVALUATION_TAG in job.spec.tags:
            continue
        fields = evaluation_job_fields(
            job, home=home.root, settings=settings, settings_file=settings_file
        )
        planned.extend(plan_single(fields, base_dir=job.job_dir, settings=settings).jobs)
    if not planned:
        return batch, jobs
    evaluation_plan = BatchPlan(
        path=None, digest="", name=None, jobs=tuple(planned), label="auto-evaluation"
    )
    _, evaluations = submit_plan(store, home, evaluation_plan)
    return batch, [*jobs, *evaluations]
