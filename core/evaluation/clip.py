"""CLIP image and text embeddings with open_clip: batched, fp16 on a GPU, fp32 on a CPU.

Imports torch and open_clip: only evaluation code imports this module, and only inside
the evaluation process. The CLIP score is torchmetrics' definition,
``max(100 * cos(image, text), 0)``, for each image and its prompt.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import open_clip
import torch
from torch.nn import functional

from loradeck.core.evaluation.errors import WeightsUnavailableError
from loradeck.core.evaluation.weights import ResolvedWeights, resolve_weights

Uint8Image = npt.NDArray[np.uint8]
"""H x W x 3 uint8."""


@dataclass(frozen=True)
class Preprocess:
    """How images are brought to the model's input (open_clip's preprocess config)."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """open_clip warns on the root logger for every random or partial initialisation;
    those warnings are expected here (tests, tiny models) and only add noise."""
    quiet = _BelowError()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _input_dtype(model: Any) -> torch.dtype:
    """The dtype the image tower takes: its first convolution's or linear layer's.

    In fp16, open_clip keeps some parameters (embeddings, logit scale) in fp32, so the
    first parameter of the model says nothing about what its layers compute in."""
    tower = getattr(model, "visual", model)
    for module in tower.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            weight: torch.Tensor = module.weight
            return weight.dtype
    first: torch.Tensor = next(model.parameters())
    return first.dtype


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` is the first visible CUDA GPU if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ClipScorer:
    """One loaded CLIP model: embeds images and texts, scores image/prompt pairs."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        preprocess: Preprocess,
        *,
        device: torch.device,
        description: str = "",
    ) -> None:
        self.model: Any = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = device
        self.dtype = _input_dtype(model)
        self.description = description
        self.embed_dim = int(self._embed_dim())

    def _embed_dim(self) -> int:
        projection = getattr(self.model, "text_projection", None)
        if isinstance(projection, torch.Tensor):
            return int(projection.shape[-1])
        with torch.inference_mode():
            return int(self.encode_texts(["x"]).shape[-1])

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls, model: str, pretrained: str, *, device: str = "auto", online: bool = True
    ) -> ClipScorer:
        """Load ``model`` with ``pretrained`` weights (see :mod:`...weights`).

        Raises :class:`WeightsUnavailableError` when the weights are not here (offline)
        or cannot be loaded."""
        resolved = resolve_weights(model, pretrained, online=online)
        return cls.from_resolved(resolved, device=device)

    @classmethod
    def from_resolved(cls, resolved: ResolvedWeights, *, device: str = "auto") -> ClipScorer:
        target = pick_device(device)
        # fp16 halves the memory and doubles the speed on a GPU; CPUs are slow at it.
        precision = "fp16" if target.type == "cuda" else "fp32"
        try:
            with quiet_open_clip():
                model = open_clip.create_model(
                    resolved.model_name,
                    pretrained=resolved.pretrained,
                    precision=precision,
                    device=target,
                    force_quick_gelu=resolved.force_quick_gelu,
                    force_preprocess_cfg=resolved.preprocess or None,
                )
                tokenizer = open_clip.get_tokenizer(resolved.model_name)
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise WeightsUnavailableError(
                f"cannot load CLIP {resolved.description or resolved.model_name}: {err}"
            ) from err
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", 224)
        preprocess = Preprocess(
            size=(size, size) if isinstance(size, int) else (int(size[0]), int(size[1])),
            mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            resize_mode=str(cfg.get("resize_mode", "shortest")),
        )
        return cls(model, tokenizer, preprocess, device=target, description=resolved.description)

    # ----------------------------------------------------------------- images
    def to_model_size(self, images: Sequence[Uint8Image]) -> torch.Tensor:
        """Images resized and centre-cropped to the model's input: uint8 N x 3 x H x W.

        Images of one size are resized together (one call per size, not per image)."""
        height, width = self.preprocess.size
        out = torch.empty((len(images), 3, height, width), dtype=torch.uint8)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(tuple(image.shape), []).append(index)
        for shape, indices in by_shape.items():
            batch = torch.from_numpy(np.stack([images[i] for i in indices])).permute(0, 3, 1, 2)
            out[indices] = self._resize_crop(batch, shape[0], shape[1])
        return out

    def _resize_crop(self, batch: torch.Tensor, h: int, w: int) -> torch.Tensor:
        height, width = self.preprocess.size
        if (h, w) == (height, width):
            return batch
        if self.preprocess.resize_mode == "squash":
            new_h, new_w = height, width
        else:
            scale = max(height / h, width / w)
            new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
        mode = "bicubic" if self.preprocess.interpolation == "bicubic" else "bilinear"
        resized = functional.interpolate(
            batch.float(), size=(new_h, new_w), mode=mode, antialias=True, align_corners=False
        )
        top, left = (new_h - height) // 2, (new_w - width) // 2
        cropped = resized[:, :, top : top + height, left : left + width]
        return cropped.round().clamp(0, 255).to(torch.uint8)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (0..255) or float (0..1) N x 3 x H x W to the model's normalised input."""
        x = batch.to(self.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.preprocess.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std, device=self.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    def encode_model_input(self, batch: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings (float32, on the CPU) of model-sized images."""
        with torch.inference_mode():
            features: torch.Tensor = self.model.encode_image(self.normalize(batch), normalize=True)
        return features.float().cpu()

    def encode_images(self, images: Sequence[Uint8Image], *, batch_size: int = 32) -> torch.Tensor:
        """Unit-length embeddings of ``images``, ``batch_size`` at a time: N x D float32."""
        if not images:
            return torch.empty((0, self.embed_dim))
        parts = [
            self.encode_model_input(self.to_model_size(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        return torch.cat(parts)

    def encode_sized(self, batch: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
        """Embeddings of model-sized uint8 images (:meth:`to_model_size`), in batches."""
        parts = [
            self.encode_model_input(batch[start : start + batch_size])
            for start in range(0, int(batch.shape[0]), batch_size)
        ]
        return torch.cat(parts) if parts else torch.empty((0, self.embed_dim))

    # ----------------------------------------------------------------- texts
    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
        """Unit-length embeddings of ``texts`` (truncated to the context length)."""
        parts = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            with torch.inference_mode():
                features: torch.Tensor = self.model.encode_text(tokens, normalize=True)
                parts.append(features.float().cpu())
        return torch.cat(parts) if parts else torch.empty((0, 0))

    # ----------------------------------------------------------------- scores
    @staticmethod
    def clip_scores(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Row-wise ``max(100 * cos, 0)`` of matching image and text embeddings."""
        cosine = functional.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
        return (100.0 * cosine).clamp(min=0.0)

    def score(
        self, images: Sequence[Uint8Image], prompts: Sequence[str], *, batch_size: int = 32
    ) -> npt.NDArray[np.float64]:
        """The CLIP score of each image with its prompt (same length sequences)."""
        if len(images) != len(prompts):
            raise ValueError("score() needs one prompt per image")
        unique = list(dict.fromkeys(prompts))
        texts = self.encode_texts(unique)
        rows = torch.stack([texts[unique.index(p)] for p in prompts]) if prompts else texts
        scores = self.clip_scores(self.encode_images(images, batch_size=batch_size), rows)
        return scores.double().numpy()


def mean_pairwise_cosine(features: torch.Tensor) -> float | None:
    """Mean cosine similarity over all pairs of rows; None for fewer than two rows."""
    count = int(features.shape[0])
    if count < 2:
        return None
    unit = functional.normalize(features.double(), dim=-1)
    similarity = unit @ unit.T
    total = similarity.sum() - similarity.diagonal().sum()
    return float(total / (count * (count - 1)))
