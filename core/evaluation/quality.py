"""Image quality without any model: sharpness and broken-image detection (numpy only)."""

from __future__ import annotations

import numpy as np

from loradeck.core.evaluation.images import Pixels

BLACK_LEVEL = 4.0
"""An image whose brightest value (0..255) is at most this is all black."""
CONSTANT_RANGE = 1.0
"""An image whose values span at most this (0..255) is one flat colour."""


def grayscale(pixels: Pixels) -> np.ndarray:
    """ITU-R 601 luma, as OpenCV's grayscale conversion."""
    weights = np.asarray([0.299, 0.587, 0.114], dtype=np.float64)
    return np.asarray(pixels[:, :, :3], dtype=np.float64) @ weights


def laplacian_variance(pixels: Pixels) -> float:
    """Variance of the 4-neighbour Laplacian of the grayscale image: low means blurred.

    The same measure as ``cv2.Laplacian(gray, cv2.CV_64F).var()`` on the image's
    interior; 0.0 for an image under 3 x 3 pixels or one with NaN."""
    gray = grayscale(pixels)
    if gray.shape[0] < 3 or gray.shape[1] < 3 or not np.isfinite(gray).all():
        return 0.0
    laplacian = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1]
    )
    return float(laplacian.var())


def artifact(pixels: Pixels) -> str | None:
    """``nan`` (non-finite values), ``black``, ``constant`` (one flat colour), or None."""
    if not np.isfinite(pixels).all():
        return "nan"
    if float(pixels.max()) <= BLACK_LEVEL:
        return "black"
    if float(np.ptp(pixels)) <= CONSTANT_RANGE:
        return "constant"
    return None
