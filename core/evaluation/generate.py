"""``evaluation.generate_command``: images for checkpoints whose trainer saved none.

The command template is run by bash once per checkpoint and seed, with ``{checkpoint}``,
``{prompts}`` (a kohya ``.txt`` prompt file), ``{out_dir}`` (an empty folder) and
``{seed}`` filled in, shell-quoted. It writes one image per prompt into ``{out_dir}``,
named with the prompt's index first (``00.png``, ``01-anything.png``); when the names carry
no index and there are exactly as many images as prompts, sorted order is used.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loradeck.core.evaluation.discovery import IMAGE_SUFFIXES, SampleImage
from loradeck.core.evaluation.prompts import Prompt, write_prompt_file

PLACEHOLDERS = ("checkpoint", "prompts", "out_dir", "seed")
_LEADING_NUMBER = re.compile(r"^(\d+)")


@dataclass(frozen=True)
class Generated:
    """The images written for one checkpoint, and what went wrong."""

    images: tuple[SampleImage, ...]
    errors: tuple[str, ...]


def fill_template(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` for the known placeholders only, each value shell-quoted;
    other braces (``${VAR}``, awk) are left alone."""
    text = template
    for name in PLACEHOLDERS:
        if name in values:
            text = text.replace("{" + name + "}", shlex.quote(values[name]))
    return text


def seeds_for(count: int) -> list[int]:
    """The seeds used for every checkpoint (the same ones, so checkpoints compare)."""
    return list(range(count))


def _collect(
    out_dir: Path, prompts: Sequence[Prompt], seed: int
) -> tuple[list[SampleImage], list[str]]:
    files = sorted(
        p for p in out_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        return [], [f"generate_command wrote no images into {out_dir} (seed {seed})"]
    indexed = [(_LEADING_NUMBER.match(p.name), p) for p in files]
    if all(match for match, _ in indexed):
        images = [SampleImage(p, int(m[1]), None, seed) for m, p in indexed if m]
        bad = [
            img
            for img in images
            if img.prompt_index is not None and img.prompt_index >= len(prompts)
        ]
        errors = [
            f"{img.path}: prompt index {img.prompt_index}, but there are {len(prompts)} prompts"
            for img in bad
        ]
        return [img for img in images if img not in bad], errors
    if len(files) == len(prompts):
        return [SampleImage(p, i, None, seed) for i, p in enumerate(files)], []
    return [SampleImage(p, None, None, seed) for p in files], [
        f"{out_dir}: {len(files)} images for {len(prompts)} prompts and no prompt index in "
        "their names; name them 00.png, 01.png... (the prompt's index first)"
    ]


def generate(
    template: str,
    *,
    checkpoint: Path,
    prompts: Sequence[Prompt],
    out_dir: Path,
    seeds: Sequence[int],
    log: Callable[[str], None] = print,
) -> Generated:
    """Run ``template`` for each seed; collect the images. Failures are errors, not raised."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    prompt_file = write_prompt_file(prompts, out_dir / "prompts.txt")
    images: list[SampleImage] = []
    errors: list[str] = []
    for seed in seeds:
        folder = out_dir / f"seed-{seed}"
        folder.mkdir()
        command = fill_template(
            template,
            {
                "checkpoint": str(checkpoint),
                "prompts": str(prompt_file),
                "out_dir": str(folder),
                "seed": str(seed),
            },
        )
        log(f"generating: {command}")
        try:
            done = subprocess.run(["bash", "-c", command], cwd=out_dir, check=False)
        except OSError as err:
            errors.append(f"generate_command could not start: {err}")
            break
        if done.returncode != 0:
            errors.append(
                f"generate_command exited with status {done.returncode} for {checkpoint.name} "
                f"(seed {seed}); its output is in this job's log"
            )
            continue
        found, problems = _collect(folder, prompts, seed)
        images += found
        errors += problems
    return Generated(tuple(images), tuple(errors))
