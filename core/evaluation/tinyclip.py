"""A tiny, randomly initialised open_clip model for tests, benchmarks and the GPU check.

Nothing is downloaded: the architecture is a config written here, the weights are drawn
from a fixed seed and saved next to it, so every process that loads the folder gets the
same model. Scores from it mean nothing; it exercises the real code paths quickly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
"""A ViT with 8x8 patches on 32x32 images and a 2-layer text tower (~1.7 M parameters;
the vocabulary must be CLIP's, as the tokenizer is)."""
TINY_NAME = "loradeck-tiny"
WEIGHTS_FILE = "open_clip_model.safetensors"


def write_tiny_model(folder: Path, *, seed: int = 0) -> str:
    """Write the tiny model (config and seeded random weights) into ``folder``; returns the
    ``local-dir:`` model name to give ``evaluation.clip_model``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from loradeck.core.evaluation.clip import quiet_open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "open_clip_config.json"
    config.write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}, indent=2))
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        with quiet_open_clip():
            model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    finally:
        torch.random.set_rng_state(generator_state)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE)
    )
    return f"local-dir:{folder}"


def register_tiny_config(folder: Path) -> str:
    """Register the tiny architecture with open_clip under :data:`TINY_NAME` (as a
    built-in name, so ``clip_pretrained`` can be a weights file); returns the name."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TINY_NAME}.json"
    path.write_text(json.dumps(TINY_CONFIG, indent=2))
    open_clip.add_model_config(path)
    return TINY_NAME


def write_synthetic_run(
    folder: Path, *, checkpoints: int = 4, prompts: int = 4, size: int = 64, seed: int = 0
) -> Path:
    """A kohya-shaped output folder (``sample/`` images, epoch checkpoints with metadata,
    ``prompts.txt``) plus ``train/`` reference images, for benchmarks and the GPU check."""
    import struct

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)

    def picture(path: Path) -> None:
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((size // 8, size // 8, 1), dtype=np.uint8))
        Image.fromarray(pixels).save(path)

    (folder / "sample").mkdir(parents=True, exist_ok=True)
    (folder / "train").mkdir(exist_ok=True)
    texts = [
        f"a {c} shape number {i}"
        for i, c in zip(range(prompts), ["red", "blue", "green", "white"] * prompts, strict=False)
    ]
    (folder / "prompts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    for epoch in range(1, checkpoints + 1):
        for index in range(prompts):
            picture(folder / "sample" / f"toy_e{epoch:06d}_{index:02d}_20260101000000_{index}.png")
        header = json.dumps({"__metadata__": {"ss_epoch": str(epoch)}}).encode()
        (folder / f"toy-{epoch:06d}.safetensors").write_bytes(
            struct.pack("<Q", len(header)) + header
        )
    for index in range(max(16, prompts)):
        picture(folder / "train" / f"{index:04d}.png")
    return folder
