"""Checkpoint and sample discovery per trainer layout, on folders built in tmp_path.

The builders here (``kohya_run``...) are shared by the other evaluation tests.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loradeck.core.evaluation.discovery import checkpoint_metadata, discover, layout_for

STAMP = "20261128115732"


def image(path: Path, seed: int = 0, size: int = 48, *, value: float | None = None) -> Path:
    """A small PNG of coloured blocks (or one flat ``value``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if value is not None:
        pixels = np.full((size, size, 3), value, dtype=np.uint8)
    else:
        blocks = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))
    Image.fromarray(pixels).save(path)
    return path


def safetensors(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A valid, tiny safetensors file (header only, one 0-byte tensor)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header: dict[str, object] = {"t": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


PROMPTS = (
    "a large red circle at the center --n blurry --w 48 --h 48 --d 42 --l 7 --s 20\n"
    "a small yellow triangle at the left --d 43\n"
    "# a comment\n"
    "\n"
    "a white square at the bottom --d 44\n"
)


def kohya_run(root: Path, *, epochs: tuple[int, ...] = (5, 10, 15, 20), prompts: int = 3) -> Path:
    """A kohya (toy trainer) output folder: epoch checkpoints, a final one, samples."""
    for epoch in epochs:
        for index in range(prompts):
            name = f"toy_e{epoch:06d}_{index:02d}_{STAMP}_{42 + index}.png"
            image(root / "sample" / name, seed=epoch * 10 + index)
        if epoch != epochs[-1]:
            safetensors(root / f"toy-{epoch:06d}.safetensors", {"ss_epoch": str(epoch)})
    safetensors(root / "toy.safetensors", {"ss_epoch": str(epochs[-1]), "ss_steps": "1600"})
    (root / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    return root


def test_kohya_pairs_epoch_samples_and_the_final_checkpoint(tmp_path: Path) -> None:
    run = kohya_run(tmp_path / "run")
    found = discover(run)
    assert found.layout == "kohya"
    keys = [e.key for e in found.entries]
    assert keys == [
        "toy-000005.safetensors",
        "toy-000010.safetensors",
        "toy-000015.safetensors",
        "toy.safetensors",
    ]
    final = found.entries[-1]
    assert final.final and final.epoch == 20 and final.step == 1600
    assert [s.prompt_index for s in final.samples] == [0, 1, 2]
    assert [s.seed for s in final.samples] == [42, 43, 44]
    assert all("_e000020_" in s.path.name for s in final.samples)


def test_kohya_final_without_metadata_takes_the_last_samples(tmp_path: Path) -> None:
    run = kohya_run(tmp_path / "run", epochs=(1, 2))
    safetensors(run / "toy.safetensors")  # no metadata: epoch unknown
    entries = discover(run).entries
    assert [e.key for e in entries] == ["toy-000001.safetensors", "toy.safetensors"]
    assert entries[1].epoch == 2 and len(entries[1].samples) == 3


def test_kohya_step_samples_and_samples_without_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (100, 200, 300):
        image(run / "sample" / f"x_{step:06d}_00_{STAMP}.png", seed=step)
    image(run / "sample" / f"e000000_00_{STAMP}.png")  # sample_at_first, no output_name
    safetensors(run / "x-step00000200.safetensors")
    entries = discover(run).entries
    by_key = {e.key: e for e in entries}
    assert by_key["x-step00000200.safetensors"].step == 200
    assert by_key["x-step00000200.safetensors"].samples[0].seed is None
    assert {"samples step 100", "samples step 300", "samples e000000"} <= set(by_key)
    assert by_key["samples step 100"].checkpoint is None


def test_kohya_empty_sample_folder_is_noted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "sample").mkdir(parents=True)
    safetensors(run / "toy-000001.safetensors")
    found = discover(run)
    assert [e.key for e in found.entries] == ["toy-000001.safetensors"]
    assert found.entries[0].samples == ()
    assert any("no images" in note for note in found.notes)


def test_ai_toolkit_layout_under_the_training_folder(tmp_path: Path) -> None:
    run = tmp_path / "output" / "myrender-v2"
    for step in (250, 500):
        for index in range(2):
            image(run / "samples" / f"1718000000{step}__{step:09d}_{index}.jpg", seed=step + index)
        safetensors(run / f"myrender-v2_{step:09d}.safetensors")
    safetensors(run / "myrender-v2.safetensors")
    found = discover(tmp_path / "output", hint="ai-toolkit")
    assert found.layout == "ai-toolkit" and found.root == run
    keys = [e.key for e in found.entries]
    assert keys[:2] == ["myrender-v2_000000250.safetensors", "myrender-v2_000000500.safetensors"]
    assert [s.prompt_index for s in found.entries[1].samples] == [0, 1]
    assert found.entries[-1].final and found.entries[-1].samples == ()


def test_diffusers_checkpoint_folders(tmp_path: Path) -> None:
    run = tmp_path / "out"
    for step in (500, 1000, 1500):
        (run / f"checkpoint-{step}").mkdir(parents=True)
    safetensors(run / "pytorch_lora_weights.safetensors")
    found = discover(run)
    assert found.layout == "diffusers"
    assert [(e.key, e.step) for e in found.entries][:3] == [
        ("checkpoint-500", 500),
        ("checkpoint-1000", 1000),
        ("checkpoint-1500", 1500),
    ]
    assert found.entries[-1].key == "pytorch_lora_weights.safetensors"
    assert all(e.samples == () for e in found.entries)


def test_onetrainer_samples_and_saves(tmp_path: Path) -> None:
    ws = tmp_path / "workspace"
    for index, prompt in enumerate(("a dog", "a cat")):
        folder = ws / "samples" / f"{index} - {prompt}"
        for step, epoch in ((100, 1), (200, 2)):
            image(folder / f"2026-01-01_10-00-00-training-sample-{step}-{epoch}-0.png", seed=step)
    image(ws / "samples" / "0 - a dog - no-ema" / "x-training-sample-100-1-0.png")
    safetensors(ws / "save" / "lora2026-01-01_10-00-00-save-200-2-0.safetensors")
    found = discover(ws, hint="onetrainer")
    assert found.layout == "onetrainer"
    by_key = {e.key: e for e in found.entries}
    saved = by_key["lora2026-01-01_10-00-00-save-200-2-0.safetensors"]
    assert (saved.step, saved.epoch) == (200, 2)
    assert [(s.prompt_index, s.prompt_text) for s in saved.samples] == [(0, "a dog"), (1, "a cat")]
    assert by_key["samples e000001"].checkpoint is None
    assert any("no-ema" in note for note in found.notes)


def test_plain_folders_one_per_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "gen"
    for name in ("ckpt-a", "ckpt-b"):
        for index in range(2):
            image(root / name / f"{index:02d}.png", seed=index)
    safetensors(root / "ckpt-b.safetensors")
    (root / "evaluation" / "contact_sheets").mkdir(parents=True)
    image(root / "evaluation" / "contact_sheets" / "x.png")  # our own output: ignored
    found = discover(root)
    assert found.layout == "folders"
    assert [e.key for e in found.entries] == ["ckpt-a", "ckpt-b.safetensors"]
    assert found.entries[1].checkpoint == root / "ckpt-b.safetensors"
    assert [s.prompt_index for s in found.entries[0].samples] == [0, 1]


def test_nothing_found_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert discover(tmp_path / "empty").entries == ()
    missing = discover(tmp_path / "nope")
    assert missing.entries == () and "no such folder" in missing.notes[0]


def test_checkpoint_metadata_reads_only_the_header(tmp_path: Path) -> None:
    path = safetensors(tmp_path / "a.safetensors", {"ss_epoch": "3", "ss_steps": "90"})
    assert checkpoint_metadata(path) == {"ss_epoch": "3", "ss_steps": "90"}
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 4)
    assert checkpoint_metadata(tmp_path / "bad.safetensors") == {}


@pytest.mark.parametrize(
    ("name", "layout"),
    [("kohya", "kohya"), ("kohya-sdxl", "kohya"), ("ai_toolkit", "ai-toolkit"), ("x", None)],
)
def test_layout_for_trainer_names(name: str, layout: str | None) -> None:
    assert layout_for(name) == layout
