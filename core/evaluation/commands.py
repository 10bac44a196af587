"""``loradeck eval`` and ``loradeck results``, and the evaluation job of a training job.

Light at import (no torch, numpy or PIL): the CLI imports this module for every command.
``loradeck eval`` runs the evaluation process in the foreground (a subprocess, so a crash
in torch never takes the CLI down) or, with ``--queue``, submits it as a job.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from loradeck.core.errors import UnknownJobError, ValidationError
from loradeck.core.evaluation.leaderboard import (
    EVALUATION_TAG,
    format_table,
    is_evaluation_job,
    load_leaderboard,
    to_csv,
    to_json,
)
from loradeck.core.evaluation.scoring import check_metric_settings
from loradeck.core.home import Home
from loradeck.core.models import Job
from loradeck.core.settings import Settings
from loradeck.core.store import Store

RUNNER_MODULE = "loradeck.core.evaluation.run"


class CliContext(Protocol):
    """What ``loradeck``'s command context offers (core/cli.py's ``Context``)."""

    args: argparse.Namespace
    settings: Settings
    home: Home

    @property
    def store(self) -> Store: ...


# --------------------------------------------------------------------------- job


def runner_argv(
    *,
    home: Path | None = None,
    job_id: int | None = None,
    path: Path | None = None,
    settings_file: Path | None = None,
    device: str | None = None,
    extra: list[str] | None = None,
    python: str | None = None,
) -> list[str]:
    """The evaluation process's command line for a job (``home`` + ``job_id``) or a path."""
    argv = [python or sys.executable, "-m", RUNNER_MODULE]
    if job_id is not None:
        if home is None:
            raise ValueError("a job needs its home")
        argv += ["--home", str(home), "--job", str(job_id)]
    elif path is not None:
        argv += ["--path", str(path)]
    else:
        raise ValueError("give a job or a path")
    if settings_file is not None:
        argv += ["--config", str(settings_file)]
    if device:
        argv += ["--device", device]
    return argv + (extra or [])


def evaluation_job_fields(
    job: Job, *, home: Path, settings: Settings, settings_file: Path | None = None
) -> dict[str, Any]:
    """The fields of the evaluation job of ``job`` (for ``batch.plan_single``): it runs
    after ``job`` succeeds, on ``evaluation.gpus`` GPUs with ``evaluation.vram_gb``, as the
    same user and project, tagged ``evaluation``."""
    evaluation = settings.evaluation
    argv = runner_argv(home=home, job_id=job.id, settings_file=settings_file)
    fields: dict[str, Any] = {
        "name": f"eval {job.name}"[:200],
        "command": shlex.join(argv),
        "gpus": evaluation.gpus,
        "depends_on": [{"job": job.id, "condition": "afterok"}],
        "priority": job.spec.priority,
        "project": job.spec.project,
        "tags": [EVALUATION_TAG],
        "workdir": str(job.job_dir),
    }
    if job.spec.user:
        fields["user"] = job.spec.user
    if evaluation.gpus > 0 and evaluation.vram_gb is not None:
        fields["vram_gb"] = evaluation.vram_gb
    return fields


# --------------------------------------------------------------------------- eval


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``loradeck eval ID|PATH``."""
    parser.add_argument("target", metavar="ID|PATH", help="a job id or name, or an output folder")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--prompts", help="prompt file for the samples (a folder's, mainly)")
    parser.add_argument("--reference", help="reference images for FID")
    parser.add_argument(
        "--queue", action="store_true", help="submit it as a job instead of running it now"
    )


def resolve_target(store: Store, text: str) -> Job | Path:
    """A job (by id or name) or an existing path; anything else is an error."""
    stripped = text.strip()
    if stripped.isdigit():
        return store.get(int(stripped))
    path = Path(stripped).expanduser()
    if path.exists():
        return path.absolute()
    found = store.find_by_name(stripped)
    if found is not None:
        return found
    raise UnknownJobError(
        f"{text!r} is neither a job id or name in this home nor an existing path; "
        "`loradeck list` shows the jobs"
    )


def cmd_eval(ctx: CliContext) -> int:
    """``loradeck eval ID|PATH``: evaluate now (foreground) or ``--queue`` it as a job."""
    args = ctx.args
    check_metric_settings(ctx.settings.evaluation.metrics, ctx.settings.evaluation.weights)
    settings_file = Path(args.config).absolute() if getattr(args, "config", None) else None
    target = resolve_target(ctx.store, args.target)
    if isinstance(target, Job) and is_evaluation_job(target):
        raise ValidationError(f"job {target.id} is an evaluation job; give its training job")
    if getattr(args, "queue", False):
        if not isinstance(target, Job):
            raise ValidationError("--queue needs a job id or name, not a path")
        return _queue(ctx, target, settings_file)
    extra: list[str] = []
    if getattr(args, "prompts", None):
        extra += ["--prompts", str(Path(args.prompts).expanduser().absolute())]
    if getattr(args, "reference", None):
        extra += ["--reference", str(Path(args.reference).expanduser().absolute())]
    argv = runner_argv(
        home=ctx.home.root if isinstance(target, Job) else None,
        job_id=target.id if isinstance(target, Job) else None,
        path=target if isinstance(target, Path) else None,
        settings_file=settings_file,
        device=getattr(args, "device", None),
        extra=extra,
    )
    return subprocess.run(argv, check=False).returncode


def _queue(ctx: CliContext, job: Job, settings_file: Path | None) -> int:
    from loradeck.core.batch import plan_single
    from loradeck.core.submit import submit_plan

    fields = evaluation_job_fields(
        job, home=ctx.home.root, settings=ctx.settings, settings_file=settings_file
    )
    if job.state.is_terminal:
        fields["depends_on"] = []  # the training job is over: run as soon as a GPU is free
    plan = plan_single(fields, base_dir=job.job_dir, settings=ctx.settings)
    _, jobs = submit_plan(ctx.store, ctx.home, plan)
    for queued in jobs:
        print(f"submitted evaluation job {queued.id}: {queued.name}")
    return 0


# --------------------------------------------------------------------------- results


def add_results_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``loradeck results [ID...] [--batch N] [--json|--csv]``."""
    parser.add_argument("ids", nargs="*", metavar="ID", help="jobs to rank together")
    parser.add_argument("--batch", type=int, help="only the jobs of this batch (a sweep)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true")


def cmd_results(ctx: CliContext) -> int:
    """``loradeck results``: every evaluated checkpoint, ranked within its sweep."""
    from loradeck.core.submit import resolve_job_refs

    args = ctx.args
    evaluation = ctx.settings.evaluation
    check_metric_settings(evaluation.metrics, evaluation.weights)
    if args.ids:
        jobs = resolve_job_refs(ctx.store, args.ids)
    else:
        jobs = ctx.store.jobs()
        if args.batch is not None:
            jobs = [job for job in jobs if job.batch_id == args.batch]
            if not jobs:
                raise UnknownJobError(f"no jobs in batch {args.batch}")
    board = load_leaderboard(
        jobs,
        metrics=evaluation.metrics,
        weights=evaluation.weights,
        group_by_batch=not args.ids,
    )
    if args.json:
        print(to_json(board))
    elif args.csv:
        sys.stdout.write(to_csv(board))
    else:
        print(format_table(board))
    return 0
