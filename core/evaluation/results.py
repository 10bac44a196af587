"""What an evaluation writes: ``<job folder>/evaluation/results.json``, and its summary.

The file holds every checkpoint's raw metric values (a value, or ``None`` with the reason),
its per-image scores, its errors, its combined score within the job and the job's best
checkpoint. A sweep's leaderboard re-normalises the raw values across jobs
(:mod:`loradeck.core.evaluation.leaderboard`), so the file never has to be rewritten when
another job of the sweep finishes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from loradeck.core.evaluation.errors import EvaluationError
from loradeck.core.models import EvalSummary

RESULTS_FOLDER = "evaluation"
RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricValue(_Frozen):
    """One metric of one checkpoint: a value, or ``None`` and why not."""

    value: float | None = None
    reason: str | None = None
    """Why there is no value (too few images, weights unavailable, no validation loss...)."""
    n: int = 0
    """How many images (or image pairs, or log values) the value is computed from."""


class ImageScore(_Frozen):
    """One sample image of a checkpoint."""

    path: Path
    prompt_index: int | None = None
    prompt: str | None = None
    seed: int | None = None
    clip_score: float | None = None
    sharpness: float | None = None
    artifact: str | None = None
    """``nan``, ``black`` or ``constant`` when the image is broken that way."""
    error: str | None = None
    """Why the image could not be read."""


class CheckpointResult(_Frozen):
    """One checkpoint (or one group of samples without a checkpoint file)."""

    key: str
    """Stable name: the checkpoint's file name, or ``samples e000005`` without a file."""
    checkpoint: Path | None = None
    epoch: int | None = None
    step: int | None = None
    final: bool = False
    """The trainer's final save."""
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    combined: float | None = None
    """Weighted, normalised score within the job (0..1, higher is better)."""
    images: list[ImageScore] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    """Per-checkpoint problems; the other checkpoints are still scored."""
    contact_sheet: Path | None = None


class ClipInfo(_Frozen):
    """The CLIP model used (or why none could be)."""

    model: str
    pretrained: str
    device: str | None = None
    available: bool = False
    reason: str | None = None


class EvalResults(_Frozen):
    """The whole results file of one evaluation."""

    version: int = SCHEMA_VERSION
    job_id: int | None = None
    job_name: str | None = None
    batch_id: int | None = None
    source: Path
    """The folder the checkpoints and samples were found in."""
    layout: str | None = None
    """kohya, ai-toolkit, diffusers, onetrainer or folders."""
    created_at: float
    seconds: float = 0.0
    metrics: list[str] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)
    clip: ClipInfo | None = None
    prompts: list[str] = Field(default_factory=list)
    reference_dir: Path | None = None
    checkpoints: list[CheckpointResult] = Field(default_factory=list)
    best: str | None = None
    """Key of the best checkpoint."""
    problems: list[str] = Field(default_factory=list)
    """Problems that concern the whole evaluation (prompt file, reference folder...)."""
    error: str | None = None
    """Set when nothing could be evaluated at all."""

    def checkpoint(self, key: str) -> CheckpointResult | None:
        return next((c for c in self.checkpoints if c.key == key), None)

    @property
    def best_checkpoint(self) -> CheckpointResult | None:
        return self.checkpoint(self.best) if self.best is not None else None


def results_path(folder: Path) -> Path:
    """``<folder>/evaluation/results.json``: ``folder`` is a job folder or an output folder."""
    return folder / RESULTS_FOLDER / RESULTS_FILE


def write_results(results: EvalResults, path: Path) -> Path:
    """Write atomically (temporary file + rename), so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = results.model_dump_json(indent=2)
    fd, temp = tempfile.mkstemp(prefix=".results-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def read_results(path: Path) -> EvalResults:
    """Read a results file; raises :class:`EvaluationError` naming it if it does not parse."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise EvaluationError(f"{path}: no results yet; run `loradeck eval` first") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvaluationError(f"{path}: cannot read the results file ({err})") from err
    try:
        return EvalResults.model_validate(data)
    except pydantic.ValidationError as err:
        raise EvaluationError(
            f"{path}: not a loradeck results file ({err.error_count()} problems); "
            "evaluate again to rewrite it"
        ) from err


def summarize(results: EvalResults, path: Path) -> EvalSummary:
    """The store's summary of ``results`` (written at ``path``)."""
    best = results.best_checkpoint
    return EvalSummary(
        results_file=path,
        evaluated_at=results.created_at,
        checkpoints=len(results.checkpoints),
        best_key=best.key if best else None,
        best_checkpoint=best.checkpoint if best else None,
        best_score=best.combined if best else None,
        error=results.error,
    )


def read_summary(folder: Path) -> EvalSummary | None:
    """The summary of ``<folder>/evaluation/results.json``, or None if there is none yet."""
    path = results_path(folder)
    if not path.exists():
        return None
    return summarize(read_results(path), path)
