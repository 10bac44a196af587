"""What to evaluate for a job or a folder: where its outputs are, its trainer's prompts,
its training images (FID's reference by default) and its log.

The trainer's own config (the job's config copy) and command line say where the outputs,
the sample prompts and the training images are; each trainer names them differently:

==============  ==========================  ==============================  ===================
trainer         outputs                     prompts                         training images
==============  ==========================  ==============================  ===================
kohya           ``output_dir``              ``sample_prompts`` (a file)     ``train_data_dir``,
                                                                            dataset ``image_dir``
ai-toolkit      ``training_folder``/name    ``sample.prompts`` (a list)     ``folder_path``
OneTrainer      ``workspace_dir``           ``sample_definition_file_name``  concepts' ``path``
diffusers       ``--output_dir``            (``evaluation.test_prompts``)   ``--train_data_dir``,
                                                                            ``--instance_data_dir``
==============  ==========================  ==============================  ===================

Relative paths are looked up next to the original config, in the job's workdir and in the
job's folder, as trainers resolve them from where they run.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from loradeck.core.evaluation.discovery import layout_for
from loradeck.core.evaluation.errors import PromptFileError
from loradeck.core.evaluation.prompts import Prompt, parse_prompt_line, prompt_from_mapping
from loradeck.core.evaluation.results import RESULTS_FOLDER
from loradeck.core.models import Job

_OUTPUT_KEYS = ("output_dir", "training_folder", "workspace_dir")
_IMAGE_DIR_KEYS = ("train_data_dir", "image_dir", "instance_data_dir", "folder_path")
_PROMPT_FILE_KEYS = ("sample_prompts", "sample_definition_file_name")


@dataclass(frozen=True)
class EvalTarget:
    """Everything the evaluator needs to know about one run."""

    name: str
    roots: tuple[Path, ...]
    """Folders that may hold the checkpoints and samples, most likely first."""
    results_dir: Path
    """Where ``results.json``, contact sheets and generated images go."""
    job_id: int | None = None
    batch_id: int | None = None
    layout_hint: str | None = None
    prompt_file: Path | None = None
    inline_prompts: tuple[Prompt, ...] = ()
    reference_dirs: tuple[Path, ...] = ()
    log_file: Path | None = None
    notes: tuple[str, ...] = ()


def _walk(data: Any) -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """Every (key, value, table) of nested tables and lists."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield str(key), value, data
            yield from _walk(value)
    elif isinstance(data, list):
        for item in data:
            yield from _walk(item)


def read_config(path: Path) -> tuple[Any, str | None]:
    """A trainer config (TOML, YAML or JSON by suffix) and why not, if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            return tomllib.loads(text), None
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text), None
        if path.suffix.lower() == ".json":
            return json.loads(text), None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        return None, f"{path}: cannot read the trainer config ({err})"
    return None, None


def command_options(command: str) -> dict[str, str]:
    """``--name value`` and ``--name=value`` pairs of a command line (last one wins)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    options: dict[str, str] = {}
    for index, word in enumerate(words):
        if not word.startswith("--"):
            continue
        key, sep, value = word[2:].partition("=")
        if sep:
            options[key] = value
        elif index + 1 < len(words) and not words[index + 1].startswith("--"):
            options[key] = words[index + 1]
    return options


def _resolve(text: str, bases: Sequence[Path]) -> Path:
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return (base / path).absolute()
    return (bases[0] / path).absolute() if bases else path.absolute()


def _bases(job: Job) -> list[Path]:
    bases: list[Path] = []
    if job.spec.config is not None:
        bases.append(job.spec.config.parent)
    if job.spec.workdir is not None:
        bases.append(job.spec.workdir)
    bases.append(job.job_dir)
    return bases


def _toolkit_prompts(data: Any) -> tuple[list[Prompt], list[str]]:
    """ai-toolkit's ``sample:`` table: a prompt list and shared options."""
    for key, value, _ in _walk(data):
        if key != "sample" or not isinstance(value, Mapping):
            continue
        texts = value.get("prompts")
        if not isinstance(texts, list):
            continue
        prompts: list[Prompt] = []
        problems: list[str] = []
        shared = {k: v for k, v in value.items() if k != "prompts"}
        walk_seed = bool(shared.get("walk_seed"))
        for index, text in enumerate(texts):
            try:
                if isinstance(text, Mapping):
                    prompt = prompt_from_mapping({**shared, **text}, f"sample.prompts[{index}]")
                else:
                    prompt = parse_prompt_line(str(text))
                    base = prompt_from_mapping({**shared, "prompt": prompt.text}, "sample")
                    prompt = replace(
                        prompt,
                        negative=prompt.negative or base.negative,
                        seed=prompt.seed if prompt.seed is not None else base.seed,
                        width=prompt.width or base.width,
                        height=prompt.height or base.height,
                        scale=prompt.scale or base.scale,
                        steps=prompt.steps or base.steps,
                        sampler=prompt.sampler or base.sampler,
                    )
                if walk_seed and prompt.seed is not None:
                    prompt = replace(prompt, seed=prompt.seed + index)
                prompts.append(prompt)
            except (ValueError, PromptFileError) as err:
                problems.append(f"trainer config sample.prompts[{index}]: {err}")
        return prompts, problems
    return [], []


def target_for_job(job: Job, *, reference_dir: Path | None = None) -> EvalTarget:
    """The evaluation target of a stored training job."""
    bases = _bases(job)
    notes: list[str] = []
    data: Any = None
    if job.config_copy is not None:
        data, why = read_config(job.config_copy)
        if why:
            notes.append(why)
    options = command_options(job.command)
    found: dict[str, list[str]] = {}
    for key, value, _ in _walk(data):
        if isinstance(value, str) and value.strip():
            found.setdefault(key, []).append(value)
    for key, value in options.items():
        found.setdefault(key, []).append(value)

    roots: list[Path] = []
    for key in _OUTPUT_KEYS:
        roots += [_resolve(text, bases) for text in found.get(key, [])]
    roots.append(job.output_dir)
    prompt_file = next(
        (_resolve(text, bases) for key in _PROMPT_FILE_KEYS for text in found.get(key, [])),
        None,
    )
    inline, problems = _toolkit_prompts(data)
    notes += problems
    if prompt_file is None and not inline and isinstance(data, Mapping):
        samples = data.get("samples")
        if isinstance(samples, list) and samples:
            try:
                inline = [prompt_from_mapping(s, f"{job.config_copy}: samples") for s in samples]
            except PromptFileError as err:
                notes.append(err.message)
    references = [reference_dir] if reference_dir is not None else _reference_dirs(found, bases)
    return EvalTarget(
        name=job.name,
        roots=tuple(dict.fromkeys(roots)),
        results_dir=job.job_dir / RESULTS_FOLDER,
        job_id=job.id,
        batch_id=job.batch_id,
        layout_hint=layout_for(job.spec.parser) or layout_for(job.spec.trainer),
        prompt_file=prompt_file,
        inline_prompts=tuple(inline),
        reference_dirs=tuple(references),
        log_file=job.log_file,
        notes=tuple(notes),
    )


def _reference_dirs(found: Mapping[str, list[str]], bases: Sequence[Path]) -> list[Path]:
    dirs = [_resolve(text, bases) for key in _IMAGE_DIR_KEYS for text in found.get(key, [])]
    # kohya's dataset_config and OneTrainer's concept file list the image folders.
    for key in ("dataset_config", "concept_file_name"):
        for text in found.get(key, []):
            data, _ = read_config(_resolve(text, bases))
            for inner, value, _ in _walk(data):
                if inner in (*_IMAGE_DIR_KEYS, "path") and isinstance(value, str):
                    dirs.append(_resolve(value, bases))
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def target_for_path(
    path: Path, *, reference_dir: Path | None = None, prompt_file: Path | None = None
) -> EvalTarget:
    """The evaluation target of a trainer's output folder (or one checkpoint file)."""
    path = path.expanduser().absolute()
    folder = path.parent if path.is_file() else path
    return EvalTarget(
        name=folder.name,
        roots=(path,),
        results_dir=folder / RESULTS_FOLDER,
        prompt_file=prompt_file,
        reference_dirs=(reference_dir,) if reference_dir is not None else (),
    )
