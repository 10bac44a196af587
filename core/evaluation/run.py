"""The evaluation process: ``python -m loradeck.core.evaluation.run``.

It runs as a job of its own (a tmux window, a GPU from the scheduler) or in the
foreground for ``loradeck eval``, so that a crash here never touches the engine or the
TUI. It writes ``<job folder>/evaluation/results.json`` and a contact sheet per
checkpoint, prints a table, and exits 0 when results were written (even with
per-checkpoint errors or unavailable metrics), 2 when there was nothing to evaluate or
the input is bad, 1 on a crash.

    python -m loradeck.core.evaluation.run --home HOME --job 12 [--config settings.toml]
    python -m loradeck.core.evaluation.run --path /runs/lora-a [--prompts prompts.txt]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from loradeck.core.errors import LoradeckError
from loradeck.core.evaluation.jobinputs import EvalTarget, target_for_job, target_for_path
from loradeck.core.evaluation.results import RESULTS_FILE, EvalResults, write_results
from loradeck.core.settings import Settings, load_settings

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loradeck.core.evaluation.run",
        description="Score a run's checkpoints and write its evaluation results.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--job", type=int, help="a job id in --home's store")
    what.add_argument("--path", help="a trainer's output folder (or one checkpoint file)")
    parser.add_argument("--home", help="the loradeck home holding --job")
    parser.add_argument("--config", help="settings file (default: the user's config.toml)")
    parser.add_argument("--out", help="results folder (default: <job folder>/evaluation)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--prompts", help="prompt file for the samples (with --path)")
    parser.add_argument("--reference", help="reference images for FID")
    parser.add_argument("--clip-model", help="override evaluation.clip_model")
    parser.add_argument("--clip-pretrained", help="override evaluation.clip_pretrained")
    parser.add_argument("--batch-size", type=int, default=32, help="images per CLIP batch")
    return parser


def _target(args: argparse.Namespace, settings: Settings) -> EvalTarget:
    reference = Path(args.reference).expanduser() if args.reference else None
    reference = reference or settings.evaluation.reference_dir
    if args.path:
        path = Path(args.path).expanduser().absolute()
        if not path.exists():
            raise LoradeckError(f"{path}: no such file or folder", title="nothing to evaluate")
        prompts = Path(args.prompts).expanduser().absolute() if args.prompts else None
        return target_for_path(path, reference_dir=reference, prompt_file=prompts)
    if not args.home:
        raise LoradeckError("--job needs --home (the loradeck home of that job)", title="bad usage")
    from loradeck.core.store import Store

    with Store(Path(args.home).expanduser()) as store:
        job = store.get(args.job)
    target = target_for_job(job, reference_dir=reference)
    if args.prompts:
        from dataclasses import replace

        target = replace(target, prompt_file=Path(args.prompts).expanduser().absolute())
    return target


def run(argv: Sequence[str] | None = None) -> int:
    """Evaluate, write the results, print the table; returns the exit status."""
    args = build_parser().parse_args(argv)
    settings = load_settings(Path(args.config).expanduser() if args.config else None)
    from loradeck.core.evaluation.evaluator import EvalOptions, evaluate
    from loradeck.core.evaluation.weights import prepare_hub_env

    changes: dict[str, object] = {"device": args.device, "batch_size": max(1, args.batch_size)}
    if args.clip_model:
        changes["clip_model"] = args.clip_model
    if args.clip_pretrained is not None:
        changes["clip_pretrained"] = args.clip_pretrained
    options = EvalOptions.from_settings(settings.evaluation, **changes)
    if options.needs_clip:
        # Before anything imports huggingface_hub: it reads HF_HUB_OFFLINE only once.
        prepare_hub_env(options.clip_model, options.clip_pretrained)
    target = _target(args, settings)
    if args.out:
        from dataclasses import replace

        target = replace(target, results_dir=Path(args.out).expanduser().absolute())
    results = evaluate(target, options, log=lambda text: print(text, flush=True))
    path = write_results(results, target.results_dir / RESULTS_FILE)
    _print_summary(results, path)
    return EXIT_BAD_INPUT if results.error else EXIT_OK


def _print_summary(results: EvalResults, path: Path) -> None:
    from loradeck.core.evaluation.leaderboard import build_leaderboard, format_table

    board = build_leaderboard([("run", results)], metrics=results.metrics, weights=results.weights)
    print(format_table(board))
    shown = results.clip.reason if results.clip else None  # already logged when it happened
    for problem in results.problems:
        if problem != shown:
            print(f"note: {problem}", file=sys.stderr)
    if results.error:
        print(f"loradeck eval: {results.error}", file=sys.stderr)
    print(f"results: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except LoradeckError as err:
        print(f"loradeck eval: {err.title}: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("loradeck eval: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
