"""Reading sample images (any PIL format, or ``.npy`` arrays) and writing contact sheets.

Needs numpy and Pillow (installed with ``loradeck[eval]``), not torch. An image that cannot
be read is a :class:`LoadedImage` with an ``error``, never an exception: one bad file must
not stop a checkpoint's other images from being scored.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, UnidentifiedImageError

Pixels = npt.NDArray[np.float32]
"""H x W x 3 float32 in [0, 255]; may hold NaN (broken generator output)."""


@dataclass(frozen=True)
class LoadedImage:
    """An image read from disk, or why it could not be."""

    path: Path
    pixels: Pixels | None
    error: str | None = None


def _scaled(array: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Float data in [0, 1] is scaled to [0, 255]; anything larger is taken as it is."""
    finite = array[np.isfinite(array)]
    if finite.size and float(finite.max()) <= 1.0:
        return array * 255.0
    return array


def _as_rgb(array: npt.NDArray[np.float64], where: Path) -> Pixels:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW as written by torch
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"{where}: array of shape {array.shape} is not an image")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[:, :, :3], dtype=np.float32)


def _read_pil(path: Path) -> Pixels:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()
            if image.mode in ("F", "I", "I;16", "I;16B", "I;16L"):
                data = np.asarray(image, dtype=np.float64)
                if image.mode.startswith("I"):
                    data = data / 257.0 if float(np.nanmax(data)) > 255 else data
                else:
                    data = _scaled(data)
                return _as_rgb(data, path)
            rgb = image.convert("RGB")
            return np.asarray(rgb, dtype=np.float32).copy()


def _read_npy(path: Path) -> Pixels:
    array = np.load(path, allow_pickle=False)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: array of {array.dtype} is not an image")
    data = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.floating):
        data = _scaled(data)
    return _as_rgb(data, path)


def load_image(path: Path) -> LoadedImage:
    """Read one sample image; a missing, corrupt or non-image file gives an ``error``."""
    try:
        pixels = _read_npy(path) if path.suffix.lower() == ".npy" else _read_pil(path)
    except FileNotFoundError:
        return LoadedImage(path, None, f"{path}: missing (deleted while evaluating?)")
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        return LoadedImage(path, None, f"{path}: not a readable image ({err})")
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        # PIL raises OSError for truncated files and SyntaxError for broken headers.
        return LoadedImage(path, None, f"{path}: corrupt image ({err})")
    return LoadedImage(path, pixels)


def list_images(folders: Sequence[Path], *, limit: int) -> list[Path]:
    """Image files under ``folders`` (recursively, ``.npy`` excluded: trainers cache
    latents next to images), at most ``limit``, spread evenly over the sorted list."""
    suffixes = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
    found: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)
    if len(found) <= limit:
        return found
    step = len(found) / limit
    return [found[int(i * step)] for i in range(limit)]


def to_uint8(pixels: Pixels) -> npt.NDArray[np.uint8]:
    """H x W x 3 uint8 for models and thumbnails; NaN becomes 0."""
    clean = np.nan_to_num(pixels, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(clean), 0, 255).astype(np.uint8)


def write_contact_sheet(
    images: Sequence[LoadedImage],
    path: Path,
    *,
    captions: Sequence[str] | None = None,
    cell: int = 160,
) -> Path:
    """A grid of thumbnails (one row per up to ``ceil(sqrt(n))`` images) as a PNG.

    Unreadable images are shown as a crossed cell, so the grid keeps its order."""
    count = max(1, len(images))
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    caption_height = 14 if captions else 0
    sheet = Image.new("RGB", (columns * cell, rows * (cell + caption_height)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for index, loaded in enumerate(images):
        x = (index % columns) * cell
        y = (index // columns) * (cell + caption_height)
        if loaded.pixels is None:
            draw.line((x + 8, y + 8, x + cell - 8, y + cell - 8), fill=(200, 60, 60), width=3)
            draw.line((x + 8, y + cell - 8, x + cell - 8, y + 8), fill=(200, 60, 60), width=3)
        else:
            thumb = Image.fromarray(to_uint8(loaded.pixels))
            thumb.thumbnail((cell - 4, cell - 4))
            sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        if captions and index < len(captions):
            draw.text((x + 4, y + cell), captions[index][:28], fill=(220, 220, 220))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path
