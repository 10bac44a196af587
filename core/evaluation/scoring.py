"""The metrics loradeck knows, and how they combine into one score.

Each metric is min-max normalised over the checkpoints compared (one job's, or a whole
sweep's), turned so that 1 is best, weighted and averaged. A checkpoint that lacks a
metric other checkpoints have gets 0 (worst) for it: a checkpoint whose images failed must
not win on the metrics that remain. A metric no checkpoint has is left out. When all
values of a metric are equal it cannot tell checkpoints apart and counts 1 for each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loradeck.core.evaluation.errors import EvaluationError


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means for ranking."""

    name: str
    higher_is_better: bool
    needs_clip: bool
    label: str
    description: str


METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo("clip_score", True, True, "CLIP", "100 x cosine(image, prompt), clamped at 0"),
        MetricInfo("fid", False, True, "FID", "Frechet distance of CLIP features to references"),
        MetricInfo("consistency", True, True, "consist", "mean pairwise cosine across seeds"),
        MetricInfo("sharpness", True, False, "sharp", "variance of the Laplacian (blur: low)"),
        MetricInfo("artifacts", False, False, "artif", "share of NaN, black or constant images"),
        MetricInfo("val_loss", False, False, "val_loss", "the trainer's validation loss"),
    )
}
"""Every metric, by the name used in ``evaluation.metrics`` and ``evaluation.weights``."""


def check_metric_settings(metrics: Sequence[str], weights: Mapping[str, float]) -> None:
    """Raise :class:`EvaluationError` for unknown metric names or bad weights."""
    known = ", ".join(METRICS)
    problems: list[str] = []
    for name in metrics:
        if name not in METRICS:
            problems.append(f"evaluation.metrics: {name!r} is not a metric; known: {known}")
    for name, weight in weights.items():
        if name not in METRICS:
            problems.append(f"evaluation.weights: {name!r} is not a metric; known: {known}")
        elif not math.isfinite(weight) or weight < 0:
            problems.append(f"evaluation.weights.{name} = {weight}: give a number >= 0")
    if problems:
        raise EvaluationError("\n".join(problems))


def effective_weights(metrics: Sequence[str], weights: Mapping[str, float]) -> dict[str, float]:
    """The weight of each enabled metric (1.0 unless ``weights`` says otherwise)."""
    return {name: float(weights.get(name, 1.0)) for name in dict.fromkeys(metrics)}


Row = Mapping[str, float | None]
"""One checkpoint's raw metric values by name (None: not available)."""


def combined_scores(rows: Sequence[Row], weights: Mapping[str, float]) -> list[float | None]:
    """The combined score (0..1, higher better) of each row; None when it has no metric."""
    columns: dict[str, tuple[float, float]] = {}
    for name, weight in weights.items():
        if weight <= 0 or name not in METRICS:
            continue
        values = [v for row in rows if (v := row.get(name)) is not None and math.isfinite(v)]
        if values:
            columns[name] = (min(values), max(values))
    scores: list[float | None] = []
    total = sum(weights[name] for name in columns)
    for row in rows:
        if total <= 0 or not any(_usable(row.get(name)) for name in columns):
            scores.append(None)
            continue
        acc = 0.0
        for name, (low, high) in columns.items():
            value = row.get(name)
            if not _usable(value):
                continue
            assert value is not None
            norm = 1.0 if high == low else (value - low) / (high - low)
            if not METRICS[name].higher_is_better and high != low:
                norm = 1.0 - norm
            acc += weights[name] * norm
        scores.append(acc / total)
    return scores


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class Candidate:
    """One entry competing for best: its score, whether it has a checkpoint file, and its
    position in training order (later wins a tie: it trained longer)."""

    score: float | None
    has_file: bool
    order: int


def best_index(candidates: Sequence[Candidate]) -> int | None:
    """Index of the best candidate: the highest score among those with a checkpoint file
    (among all, if none has one); ties go to the later one. None when nothing is scored."""
    scored = [(i, c) for i, c in enumerate(candidates) if c.score is not None]
    with_file = [(i, c) for i, c in scored if c.has_file]
    pool = with_file or scored
    if not pool:
        return None
    index, _ = max(pool, key=lambda item: (item[1].score, item[1].order))
    return index
