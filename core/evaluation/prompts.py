"""Sample prompts: kohya's ``.txt`` prompt files, ``.toml`` and ``.json`` prompt lists.

A kohya ``.txt`` file has one prompt a line, options after `` --``: ``--n`` negative
prompt, ``--w``/``--h`` size, ``--d`` seed, ``--l`` CFG scale, ``--s`` steps, ``--ss``
sampler. Options kohya knows but evaluation does not need (``--cn``, ``--f``...) are
ignored, as kohya ignores what it does not know; a known option with a bad value is an
error naming the line. ``.toml`` is kohya's ``[prompt]`` table with ``[[prompt.subset]]``
entries; ``.json`` is a list of prompt objects (kohya, OneTrainer's ``samples.json``) or of
strings. The order of the prompts is kept: trainers name sample images by prompt index.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loradeck.core.evaluation.errors import PromptFileError

_OPTION_SPLIT = re.compile(r"\s+--")


@dataclass(frozen=True)
class Prompt:
    """One sample prompt and the generation options given with it."""

    text: str
    negative: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    scale: float | None = None
    steps: int | None = None
    sampler: str | None = None
    enabled: bool = True
    """OneTrainer keeps disabled prompts in its list; they keep their index."""


def _int_option(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"--{name} {value!r} is not a whole number") from err


def _float_option(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError as err:
        raise ValueError(f"--{name} {value!r} is not a number") from err


def parse_prompt_line(line: str) -> Prompt:
    """One kohya prompt line (``prompt --n neg --w 512 --h 512 --d 1 --l 7 --s 28``).

    Raises ``ValueError`` for an empty prompt or a known option with a bad value.
    """
    head, *options = _OPTION_SPLIT.split(line.strip())
    if head.startswith("--"):
        # A line that starts with an option has no prompt text at all.
        raise ValueError("the line has options but no prompt text before them")
    prompt = Prompt(text=head.strip())
    if not prompt.text:
        raise ValueError("empty prompt")
    for option in options:
        key, _, value = option.strip().partition(" ")
        key, value = key.lower(), value.strip()
        if key == "n":
            prompt = replace(prompt, negative=value)
        elif key == "w":
            prompt = replace(prompt, width=_int_option(value, key))
        elif key == "h":
            prompt = replace(prompt, height=_int_option(value, key))
        elif key in ("d", "seed"):
            prompt = replace(prompt, seed=_int_option(value, key))
        elif key == "s":
            prompt = replace(prompt, steps=_int_option(value, key))
        elif key in ("l", "cfg"):
            prompt = replace(prompt, scale=_float_option(value, key))
        elif key == "ss":
            prompt = replace(prompt, sampler=value or None)
    return prompt


def parse_prompt_text(text: str, *, source: str = "<prompts>") -> list[Prompt]:
    """Prompts from the text of a kohya ``.txt`` file; ``#`` lines and blank lines skipped."""
    prompts: list[Prompt] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            prompts.append(parse_prompt_line(stripped))
        except ValueError as err:
            raise PromptFileError(
                f"{source}:{number}: {err}; write `prompt text --w 512 --h 512 --d 42`"
            ) from err
    return prompts


_KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("prompt", "text", "caption"),
    "negative": ("negative_prompt", "negative", "neg", "n"),
    "seed": ("seed", "d"),
    "width": ("width", "w"),
    "height": ("height", "h"),
    "scale": ("scale", "guidance_scale", "cfg_scale", "cfg", "l"),
    "steps": ("sample_steps", "steps", "diffusion_steps", "s"),
    "sampler": ("sample_sampler", "sampler", "noise_scheduler", "ss"),
}


def _typed(field: str, value: Any, where: str) -> Any:
    if value is None:
        return None
    if field in ("seed", "width", "height", "steps"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise PromptFileError(f"{where}: {field} = {value!r} must be a whole number")
        return value
    if field == "scale":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PromptFileError(f"{where}: scale = {value!r} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise PromptFileError(f"{where}: {field} = {value!r} must be text")
    return value


def prompt_from_mapping(entry: Mapping[str, Any], where: str) -> Prompt:
    """A prompt from a kohya/OneTrainer prompt object; unknown keys are the trainer's own."""
    values: dict[str, Any] = {}
    for field, aliases in _KEY_ALIASES.items():
        for alias in aliases:
            if alias in entry:
                values[field] = _typed(field, entry[alias], where)
                break
    text = values.pop("text", None)
    if not isinstance(text, str) or not text.strip():
        raise PromptFileError(f'{where}: no prompt text; give `prompt = "..."`')
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PromptFileError(f"{where}: enabled = {enabled!r} must be true or false")
    if isinstance(values.get("sampler"), str) and not values["sampler"]:
        values["sampler"] = None
    return Prompt(text=text.strip(), enabled=enabled, **values)


def _prompts_from_list(items: Sequence[Any], source: str) -> list[Prompt]:
    prompts: list[Prompt] = []
    for index, item in enumerate(items):
        where = f"{source}: prompt {index}"
        if isinstance(item, str):
            try:
                prompts.append(parse_prompt_line(item))
            except ValueError as err:
                raise PromptFileError(f"{where}: {err}") from err
        elif isinstance(item, Mapping):
            prompts.append(prompt_from_mapping(item, where))
        else:
            raise PromptFileError(f"{where}: expected a string or an object, got {item!r}")
    return prompts


def parse_prompt_toml(text: str, *, source: str = "<prompts>") -> list[Prompt]:
    """kohya's TOML prompt file: ``[prompt]`` defaults and ``[[prompt.subset]]`` entries."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PromptFileError(f"{source}: not valid TOML ({err})") from err
    table = data.get("prompt")
    if not isinstance(table, dict) or not isinstance(table.get("subset"), list):
        raise PromptFileError(
            f"{source}: expected a [prompt] table with [[prompt.subset]] entries (kohya's format)"
        )
    defaults = {key: value for key, value in table.items() if key != "subset"}
    subsets = table["subset"]
    entries: list[Any] = [
        {**defaults, **item} if isinstance(item, dict) else item for item in subsets
    ]
    return _prompts_from_list(entries, source)


def parse_prompt_json(text: str, *, source: str = "<prompts>") -> list[Prompt]:
    """A JSON list of prompt objects or strings, or ``{"prompts": [...]}``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptFileError(f"{source}: not valid JSON ({err})") from err
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        data = data["prompts"]
    if not isinstance(data, list):
        raise PromptFileError(f"{source}: expected a JSON list of prompts")
    return _prompts_from_list(data, source)


def read_prompt_file(path: Path) -> list[Prompt]:
    """Prompts from a ``.txt``, ``.toml`` or ``.json`` file (by its suffix; other suffixes
    are read as kohya text). An unreadable, unparsable or empty file raises
    :class:`PromptFileError` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise PromptFileError(f"{path}: no such prompt file") from err
    except UnicodeDecodeError as err:
        raise PromptFileError(f"{path}: not UTF-8 text ({err.reason}); save it as UTF-8") from err
    except OSError as err:
        raise PromptFileError(f"{path}: cannot read it ({err.strerror})") from err
    suffix = path.suffix.lower()
    if suffix == ".toml":
        prompts = parse_prompt_toml(text, source=str(path))
    elif suffix == ".json":
        prompts = parse_prompt_json(text, source=str(path))
    else:
        prompts = parse_prompt_text(text, source=str(path))
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file; write one prompt a line")
    return prompts


def prompts_from_setting(value: Path | Sequence[str] | None) -> list[Prompt]:
    """``evaluation.test_prompts``: a prompt file, or a list of kohya prompt lines."""
    if value is None:
        return []
    if isinstance(value, Path):
        return read_prompt_file(value.expanduser())
    return _prompts_from_list(list(value), "evaluation.test_prompts")


def write_prompt_file(prompts: Sequence[Prompt], path: Path) -> Path:
    """Write ``prompts`` as a kohya ``.txt`` prompt file (what ``{prompts}`` points to)."""
    lines: list[str] = []
    for prompt in prompts:
        parts = [" ".join(prompt.text.split())]
        options = (
            ("n", prompt.negative),
            ("w", prompt.width),
            ("h", prompt.height),
            ("d", prompt.seed),
            ("l", prompt.scale),
            ("s", prompt.steps),
            ("ss", prompt.sampler),
        )
        parts.extend(f"--{key} {value}" for key, value in options if value not in (None, ""))
        lines.append(" ".join(parts))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
