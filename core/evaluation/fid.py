"""FID of each checkpoint's samples against a reference image folder, with torchmetrics'
``FrechetInceptionDistance`` and CLIP image embeddings as its features.

torch-fidelity's Inception weights cannot be downloaded everywhere, so FID is computed on
the CLIP model's image features instead (the "FD with CLIP features" of the literature):
its values are not comparable to published Inception FIDs, only between checkpoints
evaluated with the same CLIP model and reference folder. The reference features are
computed once (``reset_real_features=False``) and reused for every checkpoint.
"""

from __future__ import annotations

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from loradeck.core.evaluation.clip import ClipScorer

MIN_IMAGES = 8
"""Fewer images than this on either side gives no FID: the covariance is too noisy."""


class ClipFeatures(torch.nn.Module):
    """A feature extractor for torchmetrics' FID: uint8 images in, CLIP embeddings out.

    FID passes uint8 N x 3 x H x W batches (``normalize=False``); images not of the
    model's size are resized here. ``num_features`` tells FID the embedding size."""

    def __init__(self, scorer: ClipScorer) -> None:
        super().__init__()
        self.scorer = scorer
        self.num_features = scorer.embed_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
        height, width = self.scorer.preprocess.size
        if tuple(images.shape[-2:]) != (height, width):
            images = self.scorer._resize_crop(images.cpu(), images.shape[-2], images.shape[-1])
        return self.scorer.encode_model_input(images)


class FidScorer:
    """FID of image sets against one reference set (all model-sized uint8 batches)."""

    def __init__(
        self,
        scorer: ClipScorer,
        reference: torch.Tensor,
        *,
        batch_size: int = 32,
        min_images: int = MIN_IMAGES,
    ) -> None:
        self.batch_size = batch_size
        self.min_images = max(2, min_images)
        self.reference_count = int(reference.shape[0])
        self.metric = FrechetInceptionDistance(
            feature=ClipFeatures(scorer), reset_real_features=False, normalize=False
        )
        self._feed(reference, real=True)

    def _feed(self, images: torch.Tensor, *, real: bool) -> None:
        for start in range(0, int(images.shape[0]), self.batch_size):
            self.metric.update(images[start : start + self.batch_size], real=real)

    def why_not(self, count: int) -> str | None:
        """Why there is no FID for a set of ``count`` images, or None."""
        if self.reference_count < self.min_images:
            return (
                f"the reference folder has {self.reference_count} readable images; FID needs "
                f"at least {self.min_images} (set evaluation.reference_dir)"
            )
        if count < self.min_images:
            return (
                f"{count} images; FID needs at least {self.min_images} for a stable estimate "
                "(more prompts, or a higher evaluation.num_samples_per_checkpoint)"
            )
        return None

    def distance(self, images: torch.Tensor) -> float:
        """FID of ``images`` (uint8 N x 3 x H x W) against the reference; check
        :meth:`why_not` first."""
        self.metric.reset()
        self._feed(images, real=False)
        return max(0.0, float(self.metric.compute()))
