"""The ``loradeck`` command line.

Exit codes: 0 ok; 1 jobs failed (headless mode); 2 bad input or unknown id (the
message goes to stderr); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from loradeck.core.actions import (
    SlurmControl,
    apply_hold,
    apply_priority,
    apply_release,
    cancel_job,
    retry_job,
)
from loradeck.core.errors import (
    ExecutorError,
    IllegalTransitionError,
    LoradeckError,
    ValidationError,
)
from loradeck.core.evaluation.commands import (
    add_eval_arguments,
    add_results_arguments,
    cmd_eval,
    cmd_results,
)
from loradeck.core.home import Home
from loradeck.core.jobview import job_details, job_to_json, jobs_table
from loradeck.core.models import Job, JobState
from loradeck.core.settings import Settings, load_settings
from loradeck.core.store import Store
from loradeck.core.submit import FitCheck, resolve_job_refs, submit_with_evaluation

if TYPE_CHECKING:
    from loradeck.core.gpu import GpuInventory

EXIT_OK = 0
EXIT_JOBS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with our message style on bad arguments."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"loradeck: {message}\n")


class Context:
    """What every command needs: settings, the home and (lazily) the store."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        settings = load_settings(Path(args.config) if args.config else None)
        if getattr(args, "executor", None):
            kind = settings.executor.model_copy(update={"kind": args.executor})
            settings = settings.model_copy(update={"executor": kind})
        self.settings: Settings = settings
        slurm = settings.executor.kind == "slurm"
        # In Slurm mode job folders go on the shared root, where compute nodes see them.
        self.home = Home.open(args.home, shared_root=settings.slurm.shared_root if slurm else None)
        self._store: Store | None = None
        self._slurm: SlurmControl | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.home.root)
        return self._store

    @property
    def slurm(self) -> SlurmControl | None:
        """The Slurm executor in Slurm mode (for hold, release and priority of jobs
        handed to Slurm), else None. Nothing asks Slurm until a job needs it."""
        if self.settings.executor.kind != "slurm":
            return None
        if self._slurm is None:
            from loradeck.core.executor.slurm import SlurmExecutor

            self._slurm = SlurmExecutor(self.settings.slurm, home=self.home)
        return self._slurm

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


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


# --------------------------------------------------------------------------- engine


def _engine(ctx: Context, *, gpus: str | None = None, session: str | None = None) -> Any:
    from loradeck.core.runtime import build_engine

    return build_engine(
        ctx.home,
        ctx.settings,
        gpus=gpus or ctx.args.gpus_spec,
        tmux_session=session or ctx.args.tmux_session,
        tmux_socket=ctx.args.tmux_socket,
    )


def cmd_run_batch(ctx: Context) -> int:
    from loradeck.core.headless import run_batch

    path = Path(ctx.args.run_batch).expanduser().absolute()
    return run_batch(
        path,
        home=ctx.home,
        settings=ctx.settings,
        engine=_engine(ctx),
        fresh=ctx.args.fresh,
        cancel_on_exit=ctx.args.cancel_on_exit,
    )


def cmd_serve(ctx: Context) -> int:
    from loradeck.core.headless import serve

    return serve(_engine(ctx))


def demo_batch_path() -> Path:
    """The demo batch shipped with loradeck (configs/demo/batch.toml)."""
    from importlib.resources import files

    return Path(str(files("loradeck.configs") / "demo" / "batch.toml"))


def demo_settings(settings: Settings) -> Settings:
    """The demo scores its own checkpoints: an evaluation job after each training job."""
    evaluation = settings.evaluation.model_copy(update={"auto_evaluate": True})
    return settings.model_copy(update={"evaluation": evaluation})


def cmd_demo(ctx: Context) -> int:
    from loradeck.core.headless import run_batch

    gpus = ctx.args.gpus_spec or "sim:4"
    session = ctx.args.tmux_session or "loradeck-demo"
    print(
        f"loradeck demo: a toy LoRA sweep on {gpus} GPUs; state in {ctx.home.root}; "
        f"watch the jobs with: tmux attach -t {session}",
        file=sys.stderr,
    )
    ctx.settings = demo_settings(ctx.settings)
    return run_batch(
        demo_batch_path(),
        home=ctx.home,
        settings=ctx.settings,
        engine=_engine(ctx, gpus=gpus, session=session),
        fresh=ctx.args.fresh,
        cancel_on_exit=ctx.args.cancel_on_exit,
    )


def cmd_simulate(ctx: Context) -> int:
    """Plan a batch: durations from est_minutes, GPUs from --gpus (default sim:8)."""
    from loradeck.core.batch import load_batch
    from loradeck.core.clusterview import cluster_from_snapshot
    from loradeck.core.gpu import GpuInventory
    from loradeck.core.scheduler import compare_strategies, simulate

    plan = load_batch(Path(ctx.args.file).expanduser().absolute(), ctx.settings)
    inventory = GpuInventory(ctx.args.gpus_spec or "sim:8")
    try:
        cluster = cluster_from_snapshot(inventory.snapshot(), ctx.settings)
    finally:
        inventory.close()
    if not cluster.gpus:
        raise ValidationError("simulate: no GPUs to plan for; use --gpus sim:N (e.g. sim:8)")
    updates: dict[str, Any] = {}
    if ctx.args.strategy:
        updates["strategy"] = ctx.args.strategy
    if ctx.args.no_backfill:
        updates["backfill"] = False
    scheduler = ctx.settings.scheduler.model_copy(update=updates)
    specs = [planned.spec for planned in plan.jobs]
    if ctx.args.compare:
        print(compare_strategies(specs, None, cluster, scheduler))
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        print(simulate(specs, None, cluster, scheduler).format_text(width=width))
    return EXIT_OK


def cmd_gpus(ctx: Context) -> int:
    if ctx.settings.executor.kind == "slurm":
        return _slurm_nodes(ctx)
    from loradeck.core.gpu import GpuInventory

    with GpuInventory(ctx.args.gpus_spec or ctx.settings.resources.gpus) as inventory:
        print(gpu_report(ctx.store, inventory, as_json=ctx.args.json))
    return EXIT_OK


def gpu_report(store: Store, inventory: GpuInventory, *, as_json: bool) -> str:
    """``loradeck gpus``: the inventory with each GPU's loradeck jobs; on real GPUs the
    running jobs' processes are told apart from foreign ones."""
    from loradeck.core.clusterview import local_job_pids, sim_usage
    from loradeck.core.gpu import format_inventory, inventory_json

    running = [job for job in store.jobs(active_only=True) if job.state == JobState.RUNNING]
    jobs_by_gpu: dict[int, list[str]] = {}
    for job in running:
        for gpu in job.gpu_ids:
            jobs_by_gpu.setdefault(gpu, []).append(f"{job.id} {job.name}")
    snapshot = inventory.snapshot(sim_usage=sim_usage(inventory.spec, running))
    pids = set() if inventory.spec.simulated else local_job_pids(running)
    if as_json:
        return json.dumps(inventory_json(snapshot, jobs_by_gpu, loradeck_pids=pids), indent=2)
    return format_inventory(snapshot, jobs_by_gpu, loradeck_pids=pids)


def _slurm_nodes(ctx: Context) -> int:
    """In Slurm mode the GPUs are the partition's: its nodes as sinfo shows them."""
    import dataclasses

    from loradeck.core.executor.slurm import SlurmExecutor

    executor = SlurmExecutor(ctx.settings.slurm, home=ctx.home)
    nodes = executor.nodes()
    if ctx.args.json:
        print(json.dumps([dataclasses.asdict(node) for node in nodes], indent=2))
        return EXIT_OK
    where = ctx.settings.slurm.partition or "every partition"
    if not nodes:
        print(f"no Slurm nodes in {where}")
        return EXIT_OK
    rows = [("NODE", "PARTITION", "STATE", "GPUS", "CPUS", "MEM GiB", "REASON")]
    for node in nodes:
        rows.append(
            (
                node.name,
                node.partition,
                node.state,
                f"{node.gpus_used}/{node.gpus_total}",
                f"{node.cpus_used}/{node.cpus_total}",
                f"{node.mem_used_mb / 1024:.1f}/{node.mem_total_mb / 1024:.1f}",
                node.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"Slurm nodes of {where} (GPUs, CPUs and memory: in use/total)")
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loradeck",
        description="Queue, schedule, watch and score LoRA / fine-tuning runs.",
    )
    parser.add_argument(
        "--home", help="state folder (default: $LORADECK_HOME or the user state dir)"
    )
    parser.add_argument(
        "--config", help="settings file (default: the user config dir's config.toml)"
    )
    parser.add_argument(
        "--gpus", dest="gpus_spec", help="auto, a list like 0,2,3, or sim:N / sim:NxG"
    )
    parser.add_argument("--version", action="version", version="loradeck 0.1.0")
    parser.add_argument(
        "--run-batch", metavar="FILE", help="run a batch headless until its jobs end, then exit"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="with --run-batch: submit again, do not resume"
    )
    parser.add_argument(
        "--cancel-on-exit",
        action="store_true",
        help="with --run-batch: Ctrl-C also cancels running jobs",
    )
    parser.add_argument(
        "--executor",
        choices=["tmux", "slurm"],
        help="run jobs in tmux windows or hand them to Slurm (default: executor.kind)",
    )
    parser.add_argument("--tmux-session", help="tmux session for job windows (default: loradeck)")
    parser.add_argument("--tmux-socket", help="tmux socket name (-L) for a private server")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("submit", help="submit one job: loradeck submit [options] -- COMMAND")
    p.add_argument("--name", help="job name (default: from the command or config)")
    p.add_argument("--config", dest="trainer_config", help="trainer config file (with --trainer)")
    p.add_argument("--trainer", help="trainer preset (kohya, ai-toolkit, onetrainer, ...)")
    p.add_argument("--parser", help="log parser preset (auto-detected by default)")
    p.add_argument("--gpus", type=int, help="GPUs (0 for a CPU job)")
    p.add_argument("--vram-gb", type=float, help="VRAM per GPU in GiB (unset: whole GPUs)")
    p.add_argument("--exclusive", action="store_true", help="never share a GPU")
    p.add_argument("--priority", type=int, help="higher runs first")
    p.add_argument("--depends-on", action="append", metavar="JOB", help="NAME, ID or afterany:NAME")
    p.add_argument("--retries", type=int)
    p.add_argument("--retry-backoff", help="seconds before the first retry")
    p.add_argument("--timeout", help="90, 45m, 2h, 01:30:00")
    p.add_argument("--est-minutes", type=float)
    p.add_argument("--workdir")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--venv")
    p.add_argument("--conda")
    p.add_argument("--user")
    p.add_argument("--project")
    p.add_argument("--tag", action="append")
    p.add_argument("--on-oom", choices=["fail", "smaller_batch", "wait_for_memory"])
    p.add_argument("--output-dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("batch", help="submit a batch file (TOML or YAML)")
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true", help="validate and show, submit nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("list", help="list jobs")
    p.add_argument("--state", action="append", help="pending, running, ..., or active")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", help="show jobs in detail")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    for name, func, text in (
        ("cancel", cmd_cancel, "cancel jobs (running ones are stopped by the engine)"),
        ("hold", cmd_hold, "keep pending jobs from starting"),
        ("release", cmd_release, "let held jobs start again"),
        ("retry", cmd_retry, "put finished jobs back in the queue"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("ids", nargs="+", metavar="ID")
        p.set_defaults(func=func)

    p = sub.add_parser("serve", help="host the engine headless until Ctrl-C")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run the demo sweep (a toy LoRA trainer on sim:4 GPUs)")
    p.add_argument("--headless", action="store_true", help="never open the TUI")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="score a job's (or a folder's) checkpoints now")
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("results", help="the checkpoint leaderboard")
    add_results_arguments(p)
    p.set_defaults(func=cmd_results)

    p = sub.add_parser(
        "simulate", help="run a batch through the scheduler in simulated time (plan a night)"
    )
    p.add_argument("file")
    p.add_argument("--strategy", choices=["fifo", "priority", "fair_share", "sjf"])
    p.add_argument("--no-backfill", action="store_true")
    p.add_argument("--compare", action="store_true", help="every strategy side by side")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "gpus",
        help="show the GPUs, their memory, and who uses them (Slurm: the partition's nodes)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gpus)

    p = sub.add_parser("priority", help="set a job's priority")
    p.add_argument("id", metavar="ID")
    p.add_argument("value", type=int, metavar="N")
    p.set_defaults(func=cmd_priority)
    return parser


def _strip_separator(args: argparse.Namespace) -> None:
    command = getattr(args, "command", None)
    if isinstance(command, list) and command and command[0] == "--":
        args.command = command[1:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _strip_separator(args)
    if args.run_batch:
        args.func = cmd_run_batch
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_OK
    ctx: Context | None = None
    try:
        ctx = Context(args)
        code: int = args.func(ctx)
        return code
    except LoradeckError as err:
        print(f"loradeck: {err.title}: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("loradeck: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
