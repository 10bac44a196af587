"""The ``loradeck`` command line: the parser and ``main``.

Exit codes: 0 ok; 1 jobs failed (headless mode); 2 bad input or unknown id (the
message goes to stderr); 130 interrupted. The commands live in
:mod:`loradeck.core.clijobs` (the queue) and :mod:`loradeck.core.climachine` (engine,
planning, GPUs); what they share in :mod:`loradeck.core.clicontext`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from loradeck.core.clicontext import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    Context,
    Parser,
)
from loradeck.core.clijobs import (
    cmd_batch,
    cmd_cancel,
    cmd_hold,
    cmd_list,
    cmd_priority,
    cmd_release,
    cmd_retry,
    cmd_status,
    cmd_submit,
)
from loradeck.core.climachine import (
    cmd_demo,
    cmd_gpus,
    cmd_run_batch,
    cmd_serve,
    cmd_simulate,
    demo_batch_path,
    demo_settings,
    gpu_report,
)
from loradeck.core.errors import LoradeckError
from loradeck.core.evaluation.commands import (
    add_eval_arguments,
    add_results_arguments,
    cmd_eval,
    cmd_results,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_JOBS_FAILED",
    "EXIT_OK",
    "Context",
    "build_parser",
    "demo_batch_path",
    "demo_settings",
    "gpu_report",
    "main",
]

# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=Parser)

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
