"""The facade's heavier operations, as functions of a store, a home and settings:
submitting a batch file, queueing an evaluation, the leaderboard's entries and the
command that shows a job's window.

Each imports what it needs (batch loading, the scheduler, evaluation) when called, so
that the facade, and a user interface, load without them. All may block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from loradeck.core import events as ev
from loradeck.core.errors import LoradeckError
from loradeck.core.facadeviews import AttachPlan, CheckpointEntry, SubmitOutcome
from loradeck.core.filetails import checkpoints_from_events
from loradeck.core.home import Home
from loradeck.core.models import Job, JobSpec, JobState
from loradeck.core.settings import Settings

if TYPE_CHECKING:
    from loradeck.core.executor import Executor
    from loradeck.core.store import Store

FitCheck = Callable[[JobSpec], "str | None"]


def submit_batch_file(
    store: Store,
    home: Home,
    settings: Settings,
    path: Path,
    *,
    resume: bool,
    fit_check: FitCheck | None,
    config_path: Path | None,
) -> SubmitOutcome:
    """Validate and submit a batch file; ValidationError lists every problem and then
    nothing is stored. With ``resume``, an unfinished earlier submission of the same file
    is followed instead of submitting it again. ``fit_check`` refuses jobs that can never
    run here (None: no check, e.g. with Slurm)."""
    from loradeck.core.batch import load_batch
    from loradeck.core.submit import find_previous_batch, submit_with_evaluation

    plan = load_batch(path.expanduser().absolute(), settings)
    if resume:
        previous = find_previous_batch(store, plan)
        if previous is not None and any(store.get(i).state.is_active for i in previous.job_ids):
            return SubmitOutcome(
                previous.id, previous.job_ids, f"following batch {previous.id} again"
            )
    batch, jobs = submit_with_evaluation(
        store, home, plan, settings, fit_check=fit_check, settings_file=config_path
    )
    ids = tuple(job.id for job in jobs)
    label = f"batch {batch.id}" if batch is not None else "batch"
    return SubmitOutcome(
        batch.id if batch else None, ids, f"{label}: {len(ids)} jobs submitted from {path}"
    )


def queue_evaluation(
    store: Store, home: Home, settings: Settings, job: Job, *, config_path: Path | None
) -> str:
    """Queue an evaluation job for ``job``'s checkpoints: it starts as soon as a GPU is
    free (for a job still running: once it completes). Returns what was queued."""
    from loradeck.core.batch import plan_single
    from loradeck.core.evaluation.commands import evaluation_job_fields
    from loradeck.core.evaluation.leaderboard import is_evaluation_job
    from loradeck.core.submit import submit_plan

    if is_evaluation_job(job):
        raise LoradeckError(
            f"job {job.id} is an evaluation job; evaluate its training job", title="evaluate"
        )
    fields = evaluation_job_fields(
        job, home=home.root, settings=settings, settings_file=config_path
    )
    if job.state.is_terminal:
        fields["depends_on"] = []  # run as soon as a GPU is free
    plan = plan_single(fields, base_dir=job.job_dir, settings=settings)
    _, queued = submit_plan(store, home, plan)
    return f"evaluation of job {job.id} queued as job {queued[0].id}"


def leaderboard_entries(
    jobs: Sequence[Job], events: Sequence[ev.Event], settings: Settings
) -> list[CheckpointEntry]:
    """Evaluated checkpoints (ranked within their sweep), then the ones only seen in the
    logs so far (``events``, newest first) in that order."""
    from loradeck.core.evaluation.leaderboard import load_leaderboard

    seen = checkpoints_from_events(events)
    evaluation = settings.evaluation
    board = load_leaderboard(jobs, metrics=evaluation.metrics, weights=evaluation.weights)
    at = {entry.path: entry.at for entry in seen}
    scored = [
        CheckpointEntry(
            job_id=row.job_id or 0,
            job_name=row.job_name,
            path=str(row.checkpoint or row.key),
            step=row.step,
            at=at.get(str(row.checkpoint), 0.0),
            score=row.combined,
            rank=row.rank,
            group=row.group,
            best=row.best_in_group,
            metrics=tuple(row.metrics.items()),
        )
        for row in board.rows
    ]
    listed = {entry.path for entry in scored}
    return scored + [entry for entry in seen if entry.path not in listed]


def attach_plan(executor: Executor, job: Job, environ: Mapping[str, str]) -> AttachPlan:
    """Inside a client of the jobs' tmux server: switch it to the job's window. Anywhere
    else: an attach command to run in the terminal (outside any tmux). With Slurm (no
    window): follow the job's output."""
    from loradeck.core.executor import TmuxExecutor

    if not isinstance(executor, TmuxExecutor):
        return AttachPlan(tuple(executor.attach_command(job)), suspend=True, env=None)
    if job.state != JobState.RUNNING and not job.executor_ref:
        raise LoradeckError(
            f"job {job.id} has no tmux window ({job.state.value.lower()})", title="attach"
        )
    if executor.inside_same_server(environ):
        return AttachPlan(tuple(executor.switch_command(job)), suspend=False, env=None)
    env = {k: v for k, v in environ.items() if k not in ("TMUX", "TMUX_PANE")}
    return AttachPlan(tuple(executor.attach_command(job)), suspend=True, env=env)
