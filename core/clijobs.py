"""``loradeck`` commands on the queue: submit, batch, list, status, and the actions
(cancel, hold, release, retry, priority), each on the same store the engine uses."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loradeck.core.actions import (
    apply_hold,
    apply_priority,
    apply_release,
    cancel_job,
    retry_job,
)
from loradeck.core.clicontext import EXIT_BAD_INPUT, EXIT_OK, Context
from loradeck.core.errors import (
    ExecutorError,
    IllegalTransitionError,
    LoradeckError,
    ValidationError,
)
from loradeck.core.jobview import job_details, job_to_json, jobs_table
from loradeck.core.models import Job, JobState
from loradeck.core.store import Store
from loradeck.core.submit import FitCheck, resolve_job_refs, submit_with_evaluation

# --------------------------------------------------------------------------- submit


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValidationError(f"--env {pair!r}: expected NAME=VALUE")
        env[key] = value
    return env


def _command_from_argv(argv: Sequence[str]) -> str | None:
    """One argument is a bash command line as written; several are an argv, quoted."""
    if not argv:
        return None
    if len(argv) == 1:
        return argv[0]
    return shlex.join(argv)


def cmd_submit(ctx: Context) -> int:
    from loradeck.core.batch import plan_single

    args = ctx.args
    command = _command_from_argv(args.command)
    fields: dict[str, Any] = {
        "name": args.name,
        "command": command,
        "trainer": args.trainer,
        "config": args.trainer_config,
        "parser": args.parser,
        "workdir": args.workdir,
        "env": _parse_env(args.env),
        "venv": args.venv,
        "conda": args.conda,
        "gpus": args.gpus,
        "vram_gb": args.vram_gb,
        "exclusive": args.exclusive or None,
        "priority": args.priority,
        "user": args.user,
        "project": args.project,
        "depends_on": args.depends_on or None,
        "retries": args.retries,
        "retry_backoff": args.retry_backoff,
        "timeout": args.timeout,
        "est_minutes": args.est_minutes,
        "tags": args.tag or None,
        "on_oom": args.on_oom,
        "output_dir": args.output_dir,
    }
    fields = {k: v for k, v in fields.items() if v is not None and v != {}}
    if "name" not in fields:
        fields["name"] = _default_name(command, args.trainer_config)
    if command is None and args.trainer_config is None:
        raise ValidationError(
            "submit: give a command after `--` (loradeck submit -- python train.py) "
            "or --config FILE --trainer NAME"
        )
    plan = plan_single(fields, base_dir=Path.cwd(), settings=ctx.settings)
    _, jobs = _submit(ctx, plan)
    _print_submitted(ctx, jobs)
    return EXIT_OK


def _default_name(command: str | None, config: str | None) -> str:
    if config:
        return Path(config).stem
    assert command is not None
    try:
        first = shlex.split(command)[0]
    except (ValueError, IndexError):
        first = command.split()[0] if command.split() else "job"
    return Path(first).name or "job"


def _fit_check(ctx: Context) -> FitCheck | None:
    """Rejects jobs that can never fit this machine's GPUs (when the GPUs are known)."""
    from loradeck.core.clusterview import cluster_from_snapshot, fit_check_for
    from loradeck.core.gpu import GpuInventory

    if ctx.settings.executor.kind == "slurm":
        return None  # this machine's GPUs say nothing; sbatch refuses what cannot fit
    try:
        inventory = GpuInventory(ctx.args.gpus_spec or ctx.settings.resources.gpus)
        try:
            snapshot = inventory.snapshot()
        finally:
            inventory.close()
    except LoradeckError:
        return None
    if not snapshot.gpus:
        # No GPUs known (no NVML): do not reject; the engine explains why jobs wait.
        return None
    return fit_check_for(cluster_from_snapshot(snapshot, ctx.settings))


def _submit(ctx: Context, plan: Any) -> tuple[Any, list[Job]]:
    return submit_with_evaluation(
        ctx.store,
        ctx.home,
        plan,
        ctx.settings,
        fit_check=_fit_check(ctx),
        settings_file=Path(ctx.args.config).absolute() if ctx.args.config else None,
    )


def _print_submitted(ctx: Context, jobs: Sequence[Job]) -> None:
    if ctx.args.json:
        print(json.dumps([job_to_json(job) for job in jobs], indent=2))
        return
    for job in jobs:
        print(f"submitted job {job.id}: {job.name}")


def cmd_batch(ctx: Context) -> int:
    from loradeck.core.batch import load_batch

    path = Path(ctx.args.file).expanduser().absolute()
    plan = load_batch(path, ctx.settings)
    if ctx.args.dry_run:
        return _print_plan(ctx, plan)
    batch, jobs = _submit(ctx, plan)
    if ctx.args.json:
        print(
            json.dumps(
                {
                    "batch_id": batch.id if batch else None,
                    "jobs": [job_to_json(job) for job in jobs],
                },
                indent=2,
            )
        )
    else:
        label = f"batch {batch.id}" if batch else "batch"
        print(f"{label}: submitted {len(jobs)} jobs ({jobs[0].id}-{jobs[-1].id}) from {path}")
    return EXIT_OK


def _print_plan(ctx: Context, plan: Any) -> int:
    if ctx.args.json:
        out = [
            {
                "index": p.index,
                "name": p.spec.name,
                "command": p.command_template,
                "gpus": p.spec.gpus,
                "depends_on": [str(d.job) for d in p.dep_names],
                "grid": {k: v for k, v in p.grid_values.items()},
            }
            for p in plan.jobs
        ]
        print(json.dumps(out, indent=2, default=str))
        return EXIT_OK
    print(f"{plan.path}: {len(plan.jobs)} jobs, valid (dry run: nothing submitted)")
    for p in plan.jobs:
        deps = ", ".join(str(d.job) for d in p.dep_names)
        after = f"  after {deps}" if deps else ""
        print(f"  {p.spec.name}  gpus={p.spec.gpus}{after}")
    return EXIT_OK


# --------------------------------------------------------------------------- queries


def cmd_list(ctx: Context) -> int:
    states: set[JobState] = set()
    for text in ctx.args.state or []:
        for part in text.split(","):
            name = part.strip().upper()
            if name == "ACTIVE":
                states.update(s for s in JobState if s.is_active)
                continue
            try:
                states.add(JobState(name))
            except ValueError as err:
                known = ", ".join(s.value.lower() for s in JobState)
                raise ValidationError(
                    f"--state {part!r}: unknown state; use one of {known} or active"
                ) from err
    jobs = ctx.store.jobs(active_only=bool(states) and all(s.is_active for s in states))
    if states:
        jobs = [job for job in jobs if job.state in states]
    if ctx.args.json:
        print(json.dumps([job_to_json(job) for job in jobs], indent=2))
    elif jobs:
        print(jobs_table(jobs))
    else:
        print("no jobs" + (" in that state" if states else ""))
    return EXIT_OK


def cmd_status(ctx: Context) -> int:
    jobs = resolve_job_refs(ctx.store, ctx.args.ids)
    if ctx.args.json:
        data: Any = [job_to_json(job) for job in jobs]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    else:
        print("\n\n".join(job_details(job) for job in jobs))
    return EXIT_OK


# --------------------------------------------------------------------------- actions


#: An action on one job of the store: (store, job id, now) -> the job as stored.
StoreAction = Callable[[Store, int, float], Job]


def _pure(action: Callable[[Job, float], Job]) -> StoreAction:
    """A pure action (see loradeck.core.actions) applied in one store transaction."""

    def apply(store: Store, job_id: int, now: float) -> Job:
        return store.update(job_id, lambda job: action(job, now))

    return apply


def _act_on_each(ctx: Context, refs: Sequence[str], action: StoreAction, verb: str) -> int:
    """Applies ``action`` to each job (each in its own durable transaction); reports
    each, and goes on after one that cannot be done (exit 2 then)."""
    failures = 0
    for job in resolve_job_refs(ctx.store, refs):
        try:
            updated = action(ctx.store, job.id, time.time())
        except (IllegalTransitionError, ExecutorError) as err:
            failures += 1
            text = err.message.removeprefix(f"job {job.id}: ")
            print(f"loradeck: job {job.id}: cannot {verb}: {text}", file=sys.stderr)
            continue
        print(f"job {updated.id} ({updated.name}): {updated.state.value.lower()}", end="")
        print(f" ({updated.reason})" if updated.reason else "")
    return EXIT_BAD_INPUT if failures else EXIT_OK


def cmd_cancel(ctx: Context) -> int:
    return _act_on_each(ctx, ctx.args.ids, _pure(cancel_job), "cancel")


def cmd_hold(ctx: Context) -> int:
    """Hold jobs; one already handed to Slurm is held there (while Slurm has not
    started it)."""
    return _act_on_each(
        ctx, ctx.args.ids, lambda store, i, now: apply_hold(store, i, now, slurm=ctx.slurm), "hold"
    )


def cmd_release(ctx: Context) -> int:
    return _act_on_each(
        ctx,
        ctx.args.ids,
        lambda store, i, now: apply_release(store, i, now, slurm=ctx.slurm),
        "release",
    )


def cmd_retry(ctx: Context) -> int:
    return _act_on_each(ctx, ctx.args.ids, _pure(retry_job), "retry")


def cmd_priority(ctx: Context) -> int:
    """Set a job's priority; for one in Slurm, its nice too where Slurm allows it."""
    value: int = ctx.args.value
    return _act_on_each(
        ctx,
        [ctx.args.id],
        lambda store, i, now: apply_priority(store, i, value, slurm=ctx.slurm),
        "change priority",
    )
