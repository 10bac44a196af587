"""One scanner per trainer's output layout (names as in /work/shared/TRAINER_LOGS.md).

kohya-ss/sd-scripts
    checkpoints ``{name}-{epoch:06d}.safetensors``, ``{name}-step{step:08d}.safetensors``,
    final ``{name}.safetensors``; samples ``sample/{name}_e{epoch:06d}_{idx:02d}_{ts}[_{seed}].png``
    or ``sample/{name}_{step:06d}_{idx:02d}_{ts}[_{seed}].png``.
ostris/ai-toolkit
    ``{name}/{name}_{step:09d}.safetensors``, final ``{name}/{name}.safetensors``; samples
    ``{name}/samples/{ms_time}__{step:09d}_{idx}.jpg`` (the output folder may be the
    training folder or the run's own folder).
diffusers examples
    ``checkpoint-{step}/`` folders, final ``pytorch_lora_weights.safetensors``; no samples
    on disk (use ``evaluation.generate_command``).
OneTrainer
    ``save/{prefix}{ts}-save-{step}-{epoch}-{epoch_step}.{ext}``; samples
    ``samples/{i} - {prompt}/{prefix}{ts}-training-sample-{step}-{epoch}-{epoch_step}.{ext}``.
folders (any other)
    one sub-folder of images per checkpoint (what ``generate_command`` writes), or a
    folder of images; a leading number in an image's name is its prompt index.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from loradeck.core.evaluation.discovery import (
    CHECKPOINT_SUFFIXES,
    IMAGE_SUFFIXES,
    CheckpointFile,
    SampleGroup,
    SampleImage,
    Scan,
)
from loradeck.core.evaluation.results import RESULTS_FOLDER

_IMG = r"\.(?:png|jpe?g|webp|bmp|tiff?|npy)$"

_KOHYA_SAMPLE = re.compile(
    r"^(?:(?P<name>.*)_)?(?:e(?P<epoch>\d{6,})|(?P<step>\d{6,}))_(?P<idx>\d{2,})"
    r"_(?P<ts>\d{14})(?:_(?P<seed>\d+))?" + _IMG,
    re.IGNORECASE,
)
_KOHYA_EPOCH = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6,})$")
_KOHYA_STEP = re.compile(r"^(?P<name>.+)-step(?P<step>\d{8,})$")

_TOOLKIT_SAMPLE = re.compile(r"^(?P<ms>\d+)__(?P<step>\d+)_(?P<idx>\d+)" + _IMG, re.IGNORECASE)
_TOOLKIT_STEP = re.compile(r"^(?P<name>.+)_(?P<step>\d{9})$")

_DIFFUSERS_CKPT = re.compile(r"^checkpoint-(?P<step>\d+)$")
_DIFFUSERS_FINALS = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")

_OT_PROGRESS = r"(?P<step>\d+)-(?P<epoch>\d+)-(?P<estep>\d+)"
_OT_SAMPLE = re.compile(r"-training-sample-" + _OT_PROGRESS + _IMG, re.IGNORECASE)
_OT_SAVE = re.compile(r"-save-" + _OT_PROGRESS + r"(?:\.[A-Za-z0-9]+)?$")
_OT_FOLDER = re.compile(r"^(?P<idx>\d+) - (?P<prompt>.*)$")

_LEADING_NUMBER = re.compile(r"^(?P<idx>\d+)")


def _files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return []


def _folders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _group(
    items: Iterable[tuple[tuple[int | None, int | None], SampleImage]],
) -> tuple[SampleGroup, ...]:
    by_point: dict[tuple[int | None, int | None], list[SampleImage]] = defaultdict(list)
    for point, image in items:
        by_point[point].append(image)
    groups = [
        SampleGroup(
            epoch=epoch,
            step=step,
            images=tuple(sorted(images, key=lambda i: (i.prompt_index or 0, i.path.name))),
        )
        for (epoch, step), images in by_point.items()
    ]
    groups.sort(key=lambda g: (g.epoch if g.epoch is not None else -1, g.step or -1))
    return tuple(groups)


def _empty_note(folder: Path) -> tuple[str, ...]:
    if folder.is_dir() and not any(_is_image(p) for p in _files(folder)):
        return (f"{folder}: the sample folder has no images",)
    return ()


# --------------------------------------------------------------------------- kohya


def scan_kohya(root: Path) -> Scan:
    """kohya-ss/sd-scripts (and the demo's toy trainer)."""
    sample_dir = root / "sample"
    items = []
    for path in _files(sample_dir):
        match = _KOHYA_SAMPLE.match(path.name)
        if match is None:
            continue
        epoch = int(match["epoch"]) if match["epoch"] else None
        step = int(match["step"]) if match["step"] else None
        seed = int(match["seed"]) if match["seed"] else None
        items.append(((epoch, step), SampleImage(path, int(match["idx"]), None, seed)))
    checkpoints: list[CheckpointFile] = []
    for path in _files(root):
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            continue
        stem = path.name[: -len(path.suffix)]
        if match := _KOHYA_STEP.match(stem):
            checkpoints.append(CheckpointFile(path, step=int(match["step"])))
        elif match := _KOHYA_EPOCH.match(stem):
            checkpoints.append(CheckpointFile(path, epoch=int(match["epoch"])))
        else:
            checkpoints.append(CheckpointFile(path, final=True))
    if not items and not any(c.epoch or c.step for c in checkpoints) and not sample_dir.is_dir():
        # Loose .safetensors files alone do not make a kohya run.
        checkpoints = []
    return Scan(
        layout="kohya",
        root=root,
        checkpoints=tuple(checkpoints),
        groups=_group(items),
        sample_dir=sample_dir if sample_dir.is_dir() else None,
        notes=_empty_note(sample_dir),
    )


# --------------------------------------------------------------------------- ai-toolkit


def _scan_toolkit_run(run: Path) -> Scan:
    sample_dir = run / "samples"
    items = []
    for path in _files(sample_dir):
        if match := _TOOLKIT_SAMPLE.match(path.name):
            items.append(((None, int(match["step"])), SampleImage(path, int(match["idx"]))))
    checkpoints: list[CheckpointFile] = []
    for path in _files(run):
        if path.suffix.lower() != ".safetensors":
            continue
        stem = path.name[: -len(path.suffix)]
        if match := _TOOLKIT_STEP.match(stem):
            checkpoints.append(CheckpointFile(path, step=int(match["step"])))
        elif stem == run.name:
            checkpoints.append(CheckpointFile(path, final=True))
    return Scan(
        layout="ai-toolkit",
        root=run,
        checkpoints=tuple(checkpoints),
        groups=_group(items),
        sample_dir=sample_dir if sample_dir.is_dir() else None,
        notes=_empty_note(sample_dir),
    )


def scan_ai_toolkit(root: Path) -> Scan:
    """ostris/ai-toolkit: ``root`` is the run folder or the training folder above it."""
    runs = [_scan_toolkit_run(root), *(_scan_toolkit_run(f) for f in _folders(root))]
    found = [scan for scan in runs if scan.weight > 0]
    if not found:
        return Scan(layout="ai-toolkit", root=root)
    best = max(found, key=lambda s: s.weight)
    if len(found) > 1:
        others = ", ".join(str(s.root) for s in found if s is not best)
        note = f"several ai-toolkit runs under {root}; evaluated {best.root}, not {others}"
        return Scan(
            layout=best.layout,
            root=best.root,
            checkpoints=best.checkpoints,
            groups=best.groups,
            sample_dir=best.sample_dir,
            notes=(*best.notes, note),
        )
    return best


# --------------------------------------------------------------------------- diffusers


def scan_diffusers(root: Path) -> Scan:
    """diffusers' example scripts: ``checkpoint-N`` folders, samples never on disk."""
    checkpoints = [
        CheckpointFile(folder, step=int(match["step"]))
        for folder in _folders(root)
        if (match := _DIFFUSERS_CKPT.match(folder.name))
    ]
    checkpoints += [
        CheckpointFile(root / n, final=True) for n in _DIFFUSERS_FINALS if (root / n).is_file()
    ]
    return Scan(layout="diffusers", root=root, checkpoints=tuple(checkpoints))


# --------------------------------------------------------------------------- OneTrainer


def scan_onetrainer(root: Path) -> Scan:
    """OneTrainer: ``root`` is its workspace folder."""
    sample_root = root / "samples"
    items = []
    notes: list[str] = []
    for folder in _folders(sample_root):
        match = _OT_FOLDER.match(folder.name)
        if match is None:
            continue
        if folder.name.endswith(" - no-ema"):
            notes.append(f"{folder}: non-EMA samples left out (the EMA samples are scored)")
            continue
        for path in _files(folder):
            if sample := _OT_SAMPLE.search(path.name):
                point = (int(sample["epoch"]), int(sample["step"]))
                image = SampleImage(path, int(match["idx"]), match["prompt"] or None)
                items.append((point, image))
    checkpoints = []
    save_dir = root / "save"
    if save_dir.is_dir():
        for path in sorted(save_dir.iterdir()):
            if match := _OT_SAVE.search(path.name):
                checkpoints.append(
                    CheckpointFile(path, epoch=int(match["epoch"]), step=int(match["step"]))
                )
    return Scan(
        layout="onetrainer",
        root=root,
        checkpoints=tuple(checkpoints),
        groups=_group(items),
        sample_dir=sample_root if sample_root.is_dir() else None,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- folders


def _folder_images(folder: Path) -> tuple[SampleImage, ...]:
    images = []
    for path in _files(folder):
        if _is_image(path):
            match = _LEADING_NUMBER.match(path.name)
            images.append(SampleImage(path, int(match["idx"]) if match else None))
    return tuple(images)


def scan_folders(root: Path) -> Scan:
    """Any layout: each sub-folder of images is one checkpoint, else ``root`` itself."""
    checkpoints: list[CheckpointFile] = []
    groups: list[SampleGroup] = []
    folders = [f for f in _folders(root) if f.name != RESULTS_FOLDER]
    for index, folder in enumerate(folders):
        images = _folder_images(folder)
        if not images:
            continue
        # The folder's position stands in for a step, so that it pairs with a checkpoint
        # file of the same name next to it (``ckpt.safetensors`` + ``ckpt/``).
        groups.append(SampleGroup(None, index + 1, images, label=folder.name))
        for suffix in sorted(CHECKPOINT_SUFFIXES):
            if (file := root / f"{folder.name}{suffix}").is_file():
                checkpoints.append(CheckpointFile(file, step=index + 1))
                break
    if not groups and (images := _folder_images(root)):
        groups.append(SampleGroup(None, None, images, label=root.name))
    return Scan(
        layout="folders",
        root=root,
        checkpoints=tuple(checkpoints),
        groups=tuple(groups),
        sample_dir=root,
    )


SCANNERS: dict[str, Callable[[Path], Scan]] = {
    "kohya": scan_kohya,
    "ai-toolkit": scan_ai_toolkit,
    "diffusers": scan_diffusers,
    "onetrainer": scan_onetrainer,
}
"""The trainer layouts, tried in this order; ``folders`` is the fallback."""
