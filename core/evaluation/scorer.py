"""Scoring one checkpoint's images; the CLIP model and FID reference are loaded once per
run, on first use, and a failure to load them is a reason recorded, not an exception."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from loradeck.core.evaluation.discovery import Entry, SampleImage, file_name_for
from loradeck.core.evaluation.errors import WeightsUnavailableError
from loradeck.core.evaluation.images import (
    LoadedImage,
    list_images,
    load_image,
    to_uint8,
    write_contact_sheet,
)
from loradeck.core.evaluation.jobinputs import EvalTarget
from loradeck.core.evaluation.quality import artifact, laplacian_variance
from loradeck.core.evaluation.results import CheckpointResult, ClipInfo, ImageScore, MetricValue
from loradeck.core.evaluation.scoring import METRICS

if TYPE_CHECKING:
    import torch

    from loradeck.core.evaluation.clip import ClipScorer
    from loradeck.core.evaluation.evaluator import EvalOptions
    from loradeck.core.evaluation.fid import FidScorer

Lookup = Callable[[SampleImage, bool], tuple[str | None, str | None]]
NO_IMAGES = "no readable sample images"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


class RunScorer:
    """Scores the checkpoints of one run, one at a time."""

    def __init__(
        self,
        options: EvalOptions,
        target: EvalTarget,
        clip: Callable[[], ClipScorer],
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self.options = options
        self.target = target
        self.log = log
        self.problems: list[str] = []
        self._provider = clip
        self._clip: ClipScorer | None = None
        self._clip_reason: str | None = None
        self._fid: FidScorer | None = None
        self._fid_reason: str | None = None
        self._fid_tried = False
        self._texts: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------- lazy models
    def _load_clip(self) -> ClipScorer | None:
        if self._clip is not None or self._clip_reason is not None:
            return self._clip
        try:
            self._clip = self._provider()
        except WeightsUnavailableError as err:
            self._clip_reason = err.message
        except ImportError as err:
            self._clip_reason = (
                f"torch/open_clip cannot be imported ({err}); install loradeck[eval]"
            )
        if self._clip_reason:
            self.log(f"CLIP metrics unavailable: {self._clip_reason}")
            self.problems.append(self._clip_reason)
        else:
            assert self._clip is not None
            self.log(
                f"CLIP: {self._clip.description or self.options.clip_model} on {self._clip.device}"
            )
        return self._clip

    @property
    def clip_info(self) -> ClipInfo:
        """The CLIP model as used (or why it could not be)."""
        return ClipInfo(
            model=self.options.clip_model,
            pretrained=self.options.clip_pretrained,
            device=str(self._clip.device) if self._clip is not None else None,
            available=self._clip is not None,
            reason=self._clip_reason
            or (None if self._clip or self.options.needs_clip else "no CLIP metric enabled"),
        )

    def _load_fid(self, clip: ClipScorer) -> FidScorer | None:
        if self._fid_tried:
            return self._fid
        self._fid_tried = True
        folders = list(self.target.reference_dirs)
        if not folders:
            self._fid_reason = (
                "no reference images: FID compares with the run's training images, and none "
                "were found; set evaluation.reference_dir"
            )
            return None
        import torch

        from loradeck.core.evaluation.fid import FidScorer

        sized: list[torch.Tensor] = []
        for path in list_images(folders, limit=self.options.max_reference_images):
            loaded = load_image(path)
            if loaded.pixels is not None and artifact(loaded.pixels) != "nan":
                sized.append(clip.to_model_size([to_uint8(loaded.pixels)]))
        if not sized:
            where = ", ".join(str(f) for f in folders)
            self._fid_reason = f"no readable reference images in {where}"
            return None
        self._fid = FidScorer(
            clip,
            torch.cat(sized),
            batch_size=self.options.batch_size,
            min_images=self.options.fid_min_images,
        )
        return self._fid

    def _text_features(self, clip: ClipScorer, texts: Sequence[str]) -> list[torch.Tensor]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if missing:
            for text, row in zip(missing, clip.encode_texts(missing), strict=True):
                self._texts[text] = row
        return [self._texts[t] for t in texts]

    # ----------------------------------------------------------------- scoring
    def score(
        self,
        entry: Entry,
        samples: Sequence[SampleImage],
        generated: bool,
        lookup: Lookup,
        errors: Sequence[str],
    ) -> CheckpointResult:
        """The result of one checkpoint: per-image scores, metrics, errors, contact sheet."""
        problems = list(errors)
        loaded = [load_image(sample.path) for sample in samples]
        rows: list[ImageScore] = []
        for sample, image in zip(samples, loaded, strict=True):
            prompt, why = lookup(sample, generated)
            row = ImageScore(
                path=sample.path, prompt_index=sample.prompt_index, prompt=prompt, seed=sample.seed
            )
            if image.pixels is None:
                problems.append(image.error or f"{sample.path}: unreadable")
                rows.append(row.model_copy(update={"error": image.error}))
                continue
            if why and why not in problems:
                problems.append(why)
            flaw = artifact(image.pixels)
            sharpness = laplacian_variance(image.pixels) if flaw != "nan" else None
            rows.append(row.model_copy(update={"artifact": flaw, "sharpness": sharpness}))
        metrics = self._quality_metrics(rows)
        if any(METRICS[m].needs_clip for m in self.options.metrics):
            rows, clip_metrics = self._clip_metrics(rows, loaded, problems)
            metrics.update(clip_metrics)
        ordered = {m: metrics[m] for m in (*self.options.metrics, "artifacts") if m in metrics}
        sheet = None
        if self.options.contact_sheets and loaded:
            sheet = write_contact_sheet(
                loaded,
                self.target.results_dir / "contact_sheets" / f"{file_name_for(entry.key)}.png",
                captions=[_caption(row) for row in rows],
            )
        return CheckpointResult(
            key=entry.key,
            checkpoint=entry.checkpoint,
            epoch=entry.epoch,
            step=entry.step,
            final=entry.final,
            metrics=ordered,
            images=rows,
            errors=problems,
            contact_sheet=sheet,
        )

    def _quality_metrics(self, rows: Sequence[ImageScore]) -> dict[str, MetricValue]:
        readable = [row for row in rows if row.error is None]
        metrics: dict[str, MetricValue] = {}
        sharp = [row.sharpness for row in readable if row.sharpness is not None]
        metrics["sharpness"] = (
            MetricValue(value=_mean(sharp), n=len(sharp))
            if sharp
            else MetricValue(reason=NO_IMAGES)
        )
        flawed = sum(1 for row in readable if row.artifact is not None)
        metrics["artifacts"] = (
            MetricValue(value=flawed / len(readable), n=len(readable))
            if readable
            else MetricValue(reason=NO_IMAGES)
        )
        return metrics

    def _clip_metrics(
        self, rows: list[ImageScore], loaded: Sequence[LoadedImage], problems: list[str]
    ) -> tuple[list[ImageScore], dict[str, MetricValue]]:
        wanted = [m for m in self.options.metrics if METRICS[m].needs_clip]
        usable = [i for i, row in enumerate(rows) if row.error is None and row.artifact != "nan"]
        clip = self._load_clip()
        if clip is None:
            return rows, {m: MetricValue(reason=self._clip_reason) for m in wanted}
        if not usable:
            return rows, {m: MetricValue(reason=NO_IMAGES) for m in wanted}
        pixels = [loaded[i].pixels for i in usable]
        sized = clip.to_model_size([to_uint8(p) for p in pixels if p is not None])
        features = clip.encode_sized(sized, batch_size=self.options.batch_size)
        metrics: dict[str, MetricValue] = {}
        if "clip_score" in wanted:
            rows, metrics["clip_score"] = self._clip_score(clip, rows, usable, features, problems)
        if "consistency" in wanted:
            metrics["consistency"] = _consistency(rows, usable, features)
        if "fid" in wanted:
            fid = self._load_fid(clip)
            why = self._fid_reason if fid is None else fid.why_not(len(usable))
            metrics["fid"] = (
                MetricValue(reason=why)
                if why or fid is None
                else MetricValue(value=fid.distance(sized), n=len(usable))
            )
        return rows, metrics

    def _clip_score(
        self,
        clip: ClipScorer,
        rows: list[ImageScore],
        usable: Sequence[int],
        features: torch.Tensor,
        problems: Sequence[str],
    ) -> tuple[list[ImageScore], MetricValue]:
        import torch

        with_prompt = [(pos, i) for pos, i in enumerate(usable) if rows[i].prompt]
        if not with_prompt:
            reason = next(
                (p for p in problems if "prompt" in p), "the samples' prompts are unknown"
            )
            return rows, MetricValue(reason=reason)
        texts = self._text_features(clip, [rows[i].prompt or "" for _, i in with_prompt])
        scores = clip.clip_scores(features[[pos for pos, _ in with_prompt]], torch.stack(texts))
        rows = list(rows)
        for (_, i), value in zip(with_prompt, scores.tolist(), strict=True):
            rows[i] = rows[i].model_copy(update={"clip_score": float(value)})
        return rows, MetricValue(value=float(scores.mean()), n=len(with_prompt))


def _consistency(
    rows: Sequence[ImageScore], usable: Sequence[int], features: torch.Tensor
) -> MetricValue:
    from loradeck.core.evaluation.clip import mean_pairwise_cosine

    groups: dict[str, list[int]] = {}
    for pos, i in enumerate(usable):
        key = rows[i].prompt or (
            f"#{rows[i].prompt_index}" if rows[i].prompt_index is not None else None
        )
        if key is not None:
            groups.setdefault(key, []).append(pos)
    values = [
        value
        for members in groups.values()
        if (value := mean_pairwise_cosine(features[members])) is not None
    ]
    if not values:
        return MetricValue(
            reason="each prompt has one image here; consistency needs several seeds per prompt "
            "(repeat a prompt with other --d seeds, or generate_command with "
            "num_samples_per_checkpoint >= 2)"
        )
    pairs = sum(len(m) * (len(m) - 1) // 2 for m in groups.values())
    return MetricValue(value=_mean(values), n=pairs)


def _caption(row: ImageScore) -> str:
    parts = [f"#{row.prompt_index}" if row.prompt_index is not None else Path(row.path).stem[:10]]
    if row.seed is not None:
        parts.append(f"s{row.seed}")
    if row.clip_score is not None:
        parts.append(f"clip {row.clip_score:.1f}")
    if row.artifact or row.error:
        parts.append(row.artifact or "error")
    return " ".join(parts)
