"""Sharpness, artifact detection, robust image reading and contact sheets (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from loradeck.core.evaluation.images import list_images, load_image, write_contact_sheet
from loradeck.core.evaluation.quality import artifact, laplacian_variance


def _shapes(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, size - 16, 2)
        pixels[y : y + 16, x : x + 16] = rng.integers(40, 256, 3)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blur_ranks_below_the_original(seed: int) -> None:
    original = _shapes(seed=seed)
    pixels = np.asarray(original, dtype=np.float32)
    slightly = np.asarray(original.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
    heavily = np.asarray(original.filter(ImageFilter.GaussianBlur(3)), dtype=np.float32)
    assert laplacian_variance(pixels) > laplacian_variance(slightly) > laplacian_variance(heavily)


def test_laplacian_matches_a_known_value() -> None:
    pixels = np.zeros((5, 5, 3), dtype=np.float32)
    pixels[2, 2] = 255.0  # one white dot: interior Laplacian is -4*255 at the dot, 255 around
    values = np.zeros((3, 3))
    values[1, 1] = -4 * 255.0
    values[0, 1] = values[1, 0] = values[1, 2] = values[2, 1] = 255.0
    assert laplacian_variance(pixels) == pytest.approx(values.var())
    assert laplacian_variance(np.zeros((2, 2, 3), dtype=np.float32)) == 0.0


def test_artifacts() -> None:
    normal = np.asarray(_shapes(), dtype=np.float32)
    assert artifact(normal) is None
    assert artifact(np.zeros((8, 8, 3), dtype=np.float32)) == "black"
    assert artifact(np.full((8, 8, 3), 3.0, dtype=np.float32)) == "black"
    assert artifact(np.full((8, 8, 3), 128.0, dtype=np.float32)) == "constant"
    broken = normal.copy()
    broken[3, 3, 1] = np.nan
    assert artifact(broken) == "nan"
    assert laplacian_variance(broken) == 0.0


def test_loading_good_corrupt_missing_and_arrays(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    _shapes().save(good)
    assert load_image(good).pixels is not None
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    assert "corrupt image" in (load_image(truncated).error or "")
    text = tmp_path / "text.png"
    text.write_text("not an image", encoding="utf-8")
    assert "not a readable image" in (load_image(text).error or "")
    assert "missing" in (load_image(tmp_path / "gone.png").error or "")
    nan = tmp_path / "nan.npy"
    data = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)  # CHW in [0, 1]
    data[0, 0, 0] = np.nan
    np.save(nan, data)
    loaded = load_image(nan)
    assert loaded.pixels is not None and loaded.pixels.shape == (16, 16, 3)
    assert artifact(loaded.pixels) == "nan"
    assert float(np.nanmax(loaded.pixels)) > 1.0  # scaled to 0..255
    np.save(tmp_path / "flat.npy", np.zeros(5))
    assert "not an image" in (load_image(tmp_path / "flat.npy").error or "")
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(gray16)
    loaded16 = load_image(gray16)
    assert loaded16.pixels is not None and loaded16.pixels.max() == pytest.approx(255.0)


def test_contact_sheet_and_reference_listing(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    paths = [tmp_path / "imgs" / f"{index}.png" for index in range(5)]
    for index, path in enumerate(paths):
        _shapes(seed=index).save(path)
    loaded = [load_image(p) for p in paths] + [load_image(tmp_path / "missing.png")]
    sheet = write_contact_sheet(loaded, tmp_path / "sheets" / "a.png", captions=["x"] * 6, cell=40)
    with Image.open(sheet) as image:
        assert image.size == (3 * 40, 2 * (40 + 14))
    (tmp_path / "imgs" / "cache.npy").write_bytes(b"")
    assert list_images([tmp_path / "imgs"], limit=10) == sorted(paths)
    assert len(list_images([tmp_path / "imgs"], limit=2)) == 2
