"""Finding a run's checkpoints and sample images, and pairing them.

Each trainer writes its own layout (see :mod:`loradeck.core.evaluation.layouts`):
kohya's ``sample/`` folder, ai-toolkit's ``samples/``, diffusers' ``checkpoint-N``
folders, OneTrainer's ``samples/{i} - {prompt}/`` and ``save/``. A scanner returns the
checkpoint files and the groups of samples taken at one point of training; this module
pairs them by epoch or step (a checkpoint's epoch and step come from its name, else from
kohya's ``ss_epoch``/``ss_steps`` safetensors metadata) into :class:`Entry` items, one per
checkpoint, plus one per group of samples that has no checkpoint file.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".npy"})
"""Sample files read: the usual image formats, and ``.npy`` float arrays (raw outputs)."""
CHECKPOINT_SUFFIXES = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin"})

LAYOUTS = ("kohya", "ai-toolkit", "diffusers", "onetrainer", "folders")


@dataclass(frozen=True)
class SampleImage:
    """One sample image and what its name says about it."""

    path: Path
    prompt_index: int | None = None
    prompt_text: str | None = None
    """Only OneTrainer puts the prompt in a folder name."""
    seed: int | None = None


@dataclass(frozen=True)
class SampleGroup:
    """The samples taken at one point of training."""

    epoch: int | None
    step: int | None
    images: tuple[SampleImage, ...]
    label: str | None = None
    """A name for samples without a checkpoint (the folder's, for plain folders)."""


@dataclass(frozen=True)
class CheckpointFile:
    """A saved checkpoint (a file, or a folder for diffusers)."""

    path: Path
    epoch: int | None = None
    step: int | None = None
    final: bool = False


@dataclass(frozen=True)
class Scan:
    """What one layout scanner found under a folder."""

    layout: str
    root: Path
    checkpoints: tuple[CheckpointFile, ...] = ()
    groups: tuple[SampleGroup, ...] = ()
    sample_dir: Path | None = None
    notes: tuple[str, ...] = ()

    @property
    def weight(self) -> int:
        """How much this layout found: sample images count most."""
        return 2 * sum(len(g.images) for g in self.groups) + len(self.checkpoints)


@dataclass(frozen=True)
class Entry:
    """One thing to score: a checkpoint and its samples, or samples without a file."""

    key: str
    checkpoint: Path | None
    epoch: int | None
    step: int | None
    final: bool
    samples: tuple[SampleImage, ...]


@dataclass(frozen=True)
class Discovery:
    """Everything found for one run, in training order."""

    layout: str | None
    root: Path
    entries: tuple[Entry, ...]
    sample_dir: Path | None = None
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- metadata


def checkpoint_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its JSON header); {} if unreadable.

    Reads only the header, so it is cheap for multi-GB files."""
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 100 << 20:
                return {}
            header = json.loads(handle.read(size))
    except (OSError, struct.error, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        return {}
    return {str(k): str(v) for k, v in meta.items()}


def _meta_int(meta: dict[str, str], key: str) -> int | None:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        return None


def with_metadata(checkpoint: CheckpointFile) -> CheckpointFile:
    """Fill a checkpoint's unknown epoch/step from kohya's ``ss_epoch``/``ss_steps``."""
    if checkpoint.epoch is not None and checkpoint.step is not None:
        return checkpoint
    meta = checkpoint_metadata(checkpoint.path)
    return replace(
        checkpoint,
        epoch=checkpoint.epoch if checkpoint.epoch is not None else _meta_int(meta, "ss_epoch"),
        step=checkpoint.step if checkpoint.step is not None else _meta_int(meta, "ss_steps"),
    )


# --------------------------------------------------------------------------- pairing


def _matches(group: SampleGroup, checkpoint: CheckpointFile) -> bool:
    if group.epoch is not None and checkpoint.epoch is not None:
        return group.epoch == checkpoint.epoch
    return group.step is not None and group.step == checkpoint.step


def _group_label(group: SampleGroup) -> str:
    if group.label:
        return group.label
    if group.epoch is not None:
        return f"samples e{group.epoch:06d}"
    if group.step is not None:
        return f"samples step {group.step}"
    return "samples"


def pair(scan: Scan) -> tuple[Entry, ...]:
    """Pair checkpoints with the samples taken at the same epoch or step.

    A final checkpoint whose epoch and step are unknown takes the latest samples that no
    other checkpoint took, if they come after every other checkpoint."""
    checkpoints = [with_metadata(c) for c in scan.checkpoints]
    taken: set[int] = set()
    paired: list[tuple[CheckpointFile, tuple[SampleImage, ...]]] = []
    for checkpoint in checkpoints:
        images: tuple[SampleImage, ...] = ()
        for index, group in enumerate(scan.groups):
            if index not in taken and _matches(group, checkpoint):
                taken.add(index)
                images = group.images
                break
        paired.append((checkpoint, images))
    free = [i for i in range(len(scan.groups)) if i not in taken]
    for position, (checkpoint, images) in enumerate(paired):
        if images or not checkpoint.final or not free:
            continue
        last = max(free, key=lambda i: _progress(scan.groups[i]))
        if all(
            _progress(scan.groups[last]) >= _progress_of(c) for c, _ in paired if c.epoch or c.step
        ):
            group = scan.groups[last]
            paired[position] = (
                replace(
                    checkpoint,
                    epoch=checkpoint.epoch or group.epoch,
                    step=checkpoint.step or group.step,
                ),
                group.images,
            )
            free.remove(last)
    entries = [
        Entry(
            key=checkpoint.path.name,
            checkpoint=checkpoint.path,
            epoch=checkpoint.epoch,
            step=checkpoint.step,
            final=checkpoint.final,
            samples=images,
        )
        for checkpoint, images in paired
    ]
    entries += [
        Entry(
            key=_group_label(scan.groups[i]),
            checkpoint=None,
            epoch=scan.groups[i].epoch,
            step=scan.groups[i].step,
            final=False,
            samples=scan.groups[i].images,
        )
        for i in free
    ]
    entries.sort(key=_entry_order)
    return tuple(_unique_keys(entries))


def _progress(group: SampleGroup) -> tuple[int, int]:
    return (group.epoch if group.epoch is not None else -1, group.step or -1)


def _progress_of(checkpoint: CheckpointFile) -> tuple[int, int]:
    return (checkpoint.epoch if checkpoint.epoch is not None else -1, checkpoint.step or -1)


def _entry_order(entry: Entry) -> tuple[bool, int, int, str]:
    epoch = entry.epoch if entry.epoch is not None else -1
    step = entry.step if entry.step is not None else -1
    # A final save without known progress sorts last: it is saved at the end.
    return (entry.final and epoch < 0 and step < 0, epoch, step, entry.key)


def _unique_keys(entries: Sequence[Entry]) -> list[Entry]:
    seen: dict[str, int] = {}
    out: list[Entry] = []
    for entry in entries:
        count = seen.get(entry.key, 0)
        seen[entry.key] = count + 1
        out.append(entry if count == 0 else replace(entry, key=f"{entry.key} ({count + 1})"))
    return out


def file_name_for(key: str) -> str:
    """A file or folder name for an entry key (contact sheets, generated images)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") or "checkpoint"


# --------------------------------------------------------------------------- discover

Scanner = Callable[[Path], Scan]


def layout_for(trainer_or_parser: str | None) -> str | None:
    """The layout of a trainer preset or log parser name (kohya-sdxl is kohya...)."""
    if not trainer_or_parser:
        return None
    name = trainer_or_parser.lower().replace("_", "-")
    for layout in LAYOUTS:
        if name.startswith(layout):
            return layout
    if name in ("aitoolkit", "ostris"):
        return "ai-toolkit"
    return None


def discover(root: Path, *, hint: str | None = None) -> Discovery:
    """Checkpoints and samples under ``root`` (an output folder, or one checkpoint file).

    ``hint`` (a layout name) is tried first; otherwise the layout that finds the most
    wins. Finding nothing is not an error here: the caller reports it."""
    from loradeck.core.evaluation.layouts import SCANNERS, scan_folders

    if root.is_file():
        entry = Entry(root.name, root, None, None, True, ())
        return Discovery(layout="file", root=root.parent, entries=(entry,))
    if not root.is_dir():
        return Discovery(layout=None, root=root, entries=(), notes=(f"{root}: no such folder",))
    order = [hint] if hint in SCANNERS else []
    order += [name for name in SCANNERS if name not in order]
    scans = [SCANNERS[name](root) for name in order]
    chosen = next((s for s in scans if s.weight > 0 and s.layout == hint), None)
    if chosen is None:
        best = max(scans, key=lambda s: s.weight)
        chosen = best if best.weight > 0 else scan_folders(root)
    if chosen.weight == 0:
        notes = (*chosen.notes, f"{root}: no checkpoints and no sample images found")
        return Discovery(layout=None, root=root, entries=(), notes=notes)
    return Discovery(
        layout=chosen.layout,
        root=chosen.root,
        entries=pair(chosen),
        sample_dir=chosen.sample_dir,
        notes=chosen.notes,
    )


def discover_first(roots: Sequence[Path], *, hint: str | None = None) -> Discovery:
    """The first of ``roots`` in which something is found (else the first one's notes)."""
    found = [discover(root, hint=hint) for root in roots]
    for discovery in found:
        if discovery.entries:
            return discovery
    notes = tuple(note for d in found for note in d.notes)
    first = roots[0] if roots else Path.cwd()
    return Discovery(layout=None, root=first, entries=(), notes=notes)
