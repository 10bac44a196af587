"""Scoring every checkpoint of one run and writing its results.

The steps: find checkpoints and samples (:mod:`.discovery`), read the prompts, generate
images where the trainer saved none (``generate_command``), then per checkpoint read its
images, measure sharpness and artifacts, read the validation loss from the log, and, if a
CLIP model can be loaded, the CLIP score, consistency and FID. Each checkpoint is handled
on its own (its images are dropped before the next one is read), and a problem with one
(corrupt images, no samples, a failed generation) is recorded in its result while the
others are still scored. Metrics that need CLIP are reported unavailable, with the
reason, when its weights are not here; the rest are computed regardless.

torch is imported only when a CLIP metric is asked for (:func:`default_clip_provider`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loradeck.core.evaluation.discovery import Entry, SampleImage, discover_first, file_name_for
from loradeck.core.evaluation.errors import PromptFileError
from loradeck.core.evaluation.generate import generate, seeds_for
from loradeck.core.evaluation.jobinputs import EvalTarget
from loradeck.core.evaluation.prompts import Prompt, prompts_from_setting, read_prompt_file
from loradeck.core.evaluation.results import (
    CheckpointResult,
    EvalResults,
    MetricValue,
)
from loradeck.core.evaluation.scoring import (
    METRICS,
    Candidate,
    best_index,
    check_metric_settings,
    combined_scores,
    effective_weights,
)
from loradeck.core.evaluation.valloss import ValLoss, read_val_losses, val_loss_for
from loradeck.core.settings import EvaluationSettings

if TYPE_CHECKING:
    from loradeck.core.evaluation.clip import ClipScorer

Log = Callable[[str], None]


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: ``evaluation`` settings plus what the command line may change."""

    metrics: tuple[str, ...] = ("clip_score", "fid", "consistency", "sharpness", "val_loss")
    weights: Mapping[str, float] = field(default_factory=dict)
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    test_prompts: tuple[Prompt, ...] = ()
    test_prompts_error: str | None = None
    num_samples: int = 4
    generate_command: str | None = None
    device: str = "auto"
    batch_size: int = 32
    fid_min_images: int = 8
    max_reference_images: int = 1000
    contact_sheets: bool = True

    @classmethod
    def from_settings(cls, settings: EvaluationSettings, **changes: Any) -> EvalOptions:
        """Options from settings; a ``test_prompts`` file that does not parse is kept as an
        error (reported in the results), not raised. Bad metric names raise."""
        check_metric_settings(settings.metrics, settings.weights)
        prompts: list[Prompt] = []
        error: str | None = None
        try:
            prompts = prompts_from_setting(settings.test_prompts)
        except PromptFileError as err:
            error = f"evaluation.test_prompts: {err.message}"
        values: dict[str, Any] = {
            "metrics": tuple(dict.fromkeys(settings.metrics)),
            "weights": dict(settings.weights),
            "clip_model": settings.clip_model,
            "clip_pretrained": settings.clip_pretrained,
            "test_prompts": tuple(prompts),
            "test_prompts_error": error,
            "num_samples": settings.num_samples_per_checkpoint,
            "generate_command": settings.generate_command,
        }
        values.update(changes)
        return cls(**values)

    @property
    def needs_clip(self) -> bool:
        return any(METRICS[name].needs_clip for name in self.metrics if name in METRICS)


ClipProvider = Callable[[], "ClipScorer"]


def default_clip_provider(options: EvalOptions) -> ClipProvider:
    """Loads the configured CLIP model; probes the Hub first (see :mod:`.weights`)."""

    def load() -> ClipScorer:
        from loradeck.core.evaluation.weights import prepare_hub_env

        online = prepare_hub_env(options.clip_model, options.clip_pretrained)
        from loradeck.core.evaluation.clip import ClipScorer

        return ClipScorer.load(
            options.clip_model, options.clip_pretrained, device=options.device, online=online
        )

    return load


@dataclass
class _Prompts:
    """Which prompt each sample was made from."""

    trainer: list[Prompt] | None
    trainer_error: str | None
    test: list[Prompt]
    test_error: str | None

    def for_generation(self) -> list[Prompt]:
        return self.test or [p for p in (self.trainer or []) if p.enabled]

    def lookup(self, image: SampleImage, generated: bool) -> tuple[str | None, str | None]:
        """The prompt text of ``image``, or why it is unknown."""
        if generated:
            return image.prompt_text, None
        index = image.prompt_index
        for prompts in (self.trainer, self.test if self.trainer is None else None):
            if prompts and index is not None:
                if index < len(prompts):
                    return prompts[index].text, None
                return None, (
                    f"{image.path.name}: prompt index {index}, but there are {len(prompts)} prompts"
                )
        if image.prompt_text:
            return image.prompt_text, None
        return None, self.trainer_error or self.test_error or (
            "no prompts for the samples: the trainer's prompt file was not found; "
            "set evaluation.test_prompts"
        )


def _read_prompts(target: EvalTarget, options: EvalOptions) -> _Prompts:
    trainer: list[Prompt] | None = None
    error: str | None = None
    if target.prompt_file is not None:
        try:
            trainer = read_prompt_file(target.prompt_file)
        except PromptFileError as err:
            error = err.message
    elif target.inline_prompts:
        trainer = list(target.inline_prompts)
    return _Prompts(trainer, error, list(options.test_prompts), options.test_prompts_error)


def evaluate(
    target: EvalTarget,
    options: EvalOptions,
    *,
    clip: ClipProvider | None = None,
    log: Log = print,
) -> EvalResults:
    """Evaluate ``target``; never raises for bad inputs (they are in the results)."""
    started = time.time()
    discovery = discover_first(target.roots, hint=target.layout_hint)
    problems = [*target.notes, *discovery.notes]
    base = {
        "job_id": target.job_id,
        "job_name": target.name,
        "batch_id": target.batch_id,
        "source": discovery.root,
        "layout": discovery.layout,
        "created_at": started,
        "metrics": list(options.metrics),
        "weights": effective_weights(options.metrics, options.weights),
    }
    if not discovery.entries:
        where = ", ".join(str(r) for r in target.roots)
        error = f"nothing to evaluate: no checkpoints or sample images in {where}"
        return EvalResults(**base, problems=problems, error=error, seconds=time.time() - started)
    prompts = _read_prompts(target, options)
    for message in (prompts.trainer_error, prompts.test_error):
        if message:
            problems.append(message)
    log(f"evaluating {target.name}: {len(discovery.entries)} checkpoints in {discovery.root}")

    from loradeck.core.evaluation.scorer import RunScorer

    scorer = RunScorer(options, target, clip or default_clip_provider(options), log=log)
    losses: list[ValLoss] = []
    if "val_loss" in options.metrics and target.log_file is not None and target.log_file.exists():
        losses = read_val_losses(target.log_file)
    results: list[CheckpointResult] = []
    for number, entry in enumerate(discovery.entries, start=1):
        try:
            samples, generated, errors = _samples_for(entry, target, options, prompts, log)
            scored = scorer.score(entry, samples, generated, prompts.lookup, errors)
        except Exception as err:  # one checkpoint's failure must not stop the rest
            traceback.print_exc()
            scored = _failed(entry, f"evaluation failed: {type(err).__name__}: {err}")
        if "val_loss" in options.metrics:
            scored = _with_val_loss(scored, losses, target)
        results.append(scored)
        shown = ", ".join(
            f"{name}={m.value:.4g}" for name, m in scored.metrics.items() if m.value is not None
        )
        log(f"[{number}/{len(discovery.entries)}] {entry.key}: {shown or 'no metrics'}")
    weights = effective_weights(options.metrics, options.weights)
    rows = [{n: r.metrics[n].value if n in r.metrics else None for n in weights} for r in results]
    scores = combined_scores(rows, weights)
    results = [r.model_copy(update={"combined": s}) for r, s in zip(results, scores, strict=True)]
    best = best_index(
        [
            Candidate(s, r.checkpoint is not None, i)
            for i, (r, s) in enumerate(zip(results, scores, strict=True))
        ]
    )
    return EvalResults(
        **base,
        seconds=time.time() - started,
        clip=scorer.clip_info,
        prompts=[p.text for p in (prompts.trainer or prompts.test)],
        reference_dir=target.reference_dirs[0] if target.reference_dirs else None,
        checkpoints=results,
        best=results[best].key if best is not None else None,
        problems=[*problems, *scorer.problems],
    )


def _failed(entry: Entry, error: str) -> CheckpointResult:
    return CheckpointResult(
        key=entry.key,
        checkpoint=entry.checkpoint,
        epoch=entry.epoch,
        step=entry.step,
        final=entry.final,
        errors=[error],
    )


def _samples_for(
    entry: Entry, target: EvalTarget, options: EvalOptions, prompts: _Prompts, log: Log
) -> tuple[tuple[SampleImage, ...], bool, list[str]]:
    """The entry's samples, generated if it has none and a generate_command is set."""
    if entry.samples:
        return entry.samples, False, []
    if entry.checkpoint is None:
        return (), False, ["no sample images"]
    if not options.generate_command:
        return (
            (),
            False,
            [
                "no sample images for this checkpoint: enable sampling in the trainer "
                "(kohya: --sample_prompts with --sample_every_n_epochs) or set "
                "evaluation.generate_command"
            ],
        )
    chosen = prompts.for_generation()
    if not chosen:
        return (), False, ["generate_command needs prompts: set evaluation.test_prompts"]
    made = generate(
        options.generate_command,
        checkpoint=entry.checkpoint,
        prompts=chosen,
        out_dir=target.results_dir / "generated" / file_name_for(entry.key),
        seeds=seeds_for(options.num_samples),
        log=log,
    )
    images = tuple(
        SampleImage(i.path, i.prompt_index, chosen[i.prompt_index].text, i.seed)
        if i.prompt_index is not None
        else i
        for i in made.images
    )
    return images, True, list(made.errors)


def _with_val_loss(
    result: CheckpointResult, losses: Sequence[ValLoss], target: EvalTarget
) -> CheckpointResult:
    value = val_loss_for(list(losses), epoch=result.epoch, step=result.step, final=result.final)
    if value is not None:
        metric = MetricValue(value=value, n=1)
    elif target.log_file is None:
        metric = MetricValue(reason="no training log (evaluating a folder, not a job)")
    elif not losses:
        metric = MetricValue(reason="the trainer's log reports no validation loss")
    else:
        metric = MetricValue(reason="no validation loss logged at this checkpoint's epoch/step")
    return result.model_copy(update={"metrics": {**result.metrics, "val_loss": metric}})
