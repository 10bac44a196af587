"""The toy trainer's data: drawn images, their captions, and kohya's prompt files.

Every image is a coloured shape on a plain background, drawn with PIL at 4x and
box-filtered down to 32x32 so edges are soft. Its caption names every slot::

    a small red circle at the left on a blue background

The generator's "tokenizer" reads a caption slot by slot (a bag of words that knows
which colour is the background), so prompts written by hand work as long as they use
the vocabulary below; unknown words are ignored.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
_DRAW_SCALE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.3, 0.5),
    "right": (0.7, 0.5),
    "top": (0.5, 0.3),
    "bottom": (0.5, 0.7),
    "center": (0.5, 0.5),
}
SIZES: dict[str, float] = {"small": 0.17, "large": 0.3}

_COLOUR_NAMES = tuple(COLOURS)
_POSITION_NAMES = tuple(POSITIONS)
_SIZE_NAMES = tuple(SIZES)
# Slot layout of a caption embedding: foreground colour, shape, position, size, background.
_SLOTS = (_COLOUR_NAMES, SHAPES, _POSITION_NAMES, _SIZE_NAMES, _COLOUR_NAMES)
EMBED_DIM = sum(len(slot) for slot in _SLOTS)


@dataclass(frozen=True)
class Scene:
    """What one image shows; its caption names every field."""

    colour: str
    shape: str
    position: str
    size: str
    background: str

    @property
    def caption(self) -> str:
        return (
            f"a {self.size} {self.colour} {self.shape} at the {self.position} "
            f"on a {self.background} background"
        )


def parse_caption(text: str) -> tuple[str | None, ...]:
    """The slots a caption names, in embedding order; None for a slot it leaves out."""
    words = re.findall(r"[a-z]+", text.lower().replace("centre", "center"))
    colour = shape = position = size = background = None
    for index, word in enumerate(words):
        if word in COLOURS:
            if words[index + 1 : index + 2] == ["background"]:
                background = background or word
            else:
                colour = colour or word
        elif word in SHAPES:
            shape = shape or word
        elif word in POSITIONS:
            position = position or word
        elif word in SIZES:
            size = size or word
    return (colour, shape, position, size, background)


def encode_captions(captions: list[str]) -> torch.Tensor:
    """One multi-hot row per caption, ``EMBED_DIM`` wide."""
    rows = torch.zeros(len(captions), EMBED_DIM)
    for row, caption in enumerate(captions):
        offset = 0
        for slot, value in zip(_SLOTS, parse_caption(caption), strict=True):
            if value is not None:
                rows[row, offset + slot.index(value)] = 1.0
            offset += len(slot)
    return rows


def draw(scene: Scene) -> np.ndarray:
    """The scene as a ``(32, 32, 3)`` uint8 array."""
    big = IMAGE_SIZE * _DRAW_SCALE
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    pen = ImageDraw.Draw(image)
    cx, cy = (c * big for c in POSITIONS[scene.position])
    r = SIZES[scene.size] * big
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        pen.polygon(((cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)), fill=fill)
    small = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def random_scene(rng: random.Random) -> Scene:
    colour, background = rng.sample(_COLOUR_NAMES, 2)
    return Scene(
        colour=colour,
        shape=rng.choice(SHAPES),
        position=rng.choice(_POSITION_NAMES),
        size=rng.choice(_SIZE_NAMES),
        background=background,
    )


class ToyDataset:
    """``size`` drawn scenes; the last ``validation_split`` of them held out."""

    def __init__(self, *, size: int, validation_split: float, seed: int) -> None:
        rng = random.Random(seed)
        scenes = [random_scene(rng) for _ in range(size)]
        held_out = max(1, round(size * validation_split)) if validation_split > 0 else 0
        held_out = min(held_out, size - 1)
        captions = [scene.caption for scene in scenes]
        pixels = np.stack([draw(scene) for scene in scenes]).astype(np.float32) / 255.0
        # Channels first, flattened: the decoder's output layout.
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).reshape(size, -1).contiguous()
        embeddings = encode_captions(captions)
        cut = size - held_out
        self.train_captions = captions[:cut]
        self.validation_captions = captions[cut:]
        self.train_images, self.validation_images = images[:cut], images[cut:]
        self.train_embeddings, self.validation_embeddings = embeddings[:cut], embeddings[cut:]

    @property
    def train_size(self) -> int:
        return len(self.train_captions)

    @property
    def validation_size(self) -> int:
        return len(self.validation_captions)


@dataclass(frozen=True)
class SamplePrompt:
    """One line of a kohya prompt file."""

    prompt: str
    negative: str = ""
    width: int = 64
    height: int = 64
    seed: int | None = None
    scale: float = 7.5
    steps: int = 30
    sampler: str = "ddim"

    def describe(self) -> list[str]:
        """The lines kohya logs before generating a sample."""
        return [
            f"prompt: {self.prompt}",
            f"negative_prompt: {self.negative}",
            f"height: {self.height}",
            f"width: {self.width}",
            f"sample_steps: {self.steps}",
            f"scale: {self.scale}",
            f"sample_sampler: {self.sampler}",
            *([f"seed: {self.seed}"] if self.seed is not None else []),
        ]


_OPTION_RE = re.compile(r"^(ss|n|w|h|d|l|s)\s+(.+?)\s*$")
_MAX_SIDE = 1024


def parse_prompt_line(line: str) -> SamplePrompt:
    """``prompt --n negative --w 64 --h 64 --d 42 --l 7 --s 20 --ss euler_a``.

    As in kohya, an option that does not parse is skipped, never fatal.
    """
    prompt, *options = line.split(" --")
    found = SamplePrompt(prompt=prompt.strip())
    for option in options:
        match = _OPTION_RE.match(option.strip())
        if match is None:
            continue
        key, value = match.groups()
        try:
            if key == "w":
                found = replace(found, width=min(max(int(value), 8), _MAX_SIDE))
            elif key == "h":
                found = replace(found, height=min(max(int(value), 8), _MAX_SIDE))
            elif key == "d":
                found = replace(found, seed=int(value))
            elif key == "s":
                found = replace(found, steps=int(value))
            elif key == "l":
                found = replace(found, scale=float(value))
            elif key == "n":
                found = replace(found, negative=value)
            else:
                found = replace(found, sampler=value)
        except ValueError:
            continue
    return found


def read_sample_prompts(path: Path) -> list[SamplePrompt]:
    """Every prompt of a kohya ``.txt`` prompt file (blank lines and ``#`` comments skipped)."""
    text = path.read_text(encoding="utf-8")
    return [
        parse_prompt_line(line.strip())
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def to_png(pixels: torch.Tensor, *, width: int, height: int, path: Path) -> None:
    """Save one decoder output (flat, channels first, 0..1) as a ``width x height`` PNG."""
    array = pixels.detach().reshape(3, IMAGE_SIZE, IMAGE_SIZE).permute(1, 2, 0).numpy()
    # A diverged run yields NaN: show it as black rather than failing to save.
    array = np.nan_to_num(array, nan=0.0).clip(0.0, 1.0)
    image = Image.fromarray((array * 255.0 + 0.5).astype(np.uint8))
    image.resize((width, height), Image.Resampling.BILINEAR).save(path, format="PNG")
