"""The toy trainer's kohya-style TOML config: read, checked, paths resolved.

Nested tables are flattened (kohya's configs group keys under ``[model_arguments]``,
``[training_arguments]``...). An unknown key, a wrong type or an impossible value is a
:class:`ConfigError` naming the file, the key and what to write instead.
"""

from __future__ import annotations

import math
import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT_DIR_ENV = "LORADECK_OUTPUT_DIR"


class ConfigError(Exception):
    """A config the toy trainer cannot run: the message says where and how to fix it."""


@dataclass(frozen=True)
class TrainerConfig:
    """Everything one run needs, checked; see toy_lora.py's docstring for the keys."""

    config_file: Path
    output_dir: Path
    learning_rate: float = 1e-2
    network_dim: int = 4
    network_alpha: float = 1.0
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_train_epochs: int | None = None
    max_train_steps: int = 1600
    output_name: str | None = None
    seed: int = 0
    sample_prompts: Path | None = None
    sample_every_n_epochs: int | None = None
    sample_every_n_steps: int | None = None
    sample_at_first: bool = False
    save_every_n_epochs: int | None = None
    save_every_n_steps: int | None = None
    dataset_size: int = 512
    validation_split: float = 0.1
    nan_at_step: int | None = None
    oom_at_step: int | None = None
    sleep_per_step: float = 0.0
    hang_at_step: int | None = None


# Whole-number keys and the smallest value each allows.
_INTS: dict[str, int] = {
    "network_dim": 1,
    "train_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "max_train_epochs": 1,
    "max_train_steps": 1,
    "seed": 0,
    "sample_every_n_epochs": 1,
    "sample_every_n_steps": 1,
    "save_every_n_epochs": 1,
    "save_every_n_steps": 1,
    "dataset_size": 2,
    "nan_at_step": 1,
    "oom_at_step": 1,
    "hang_at_step": 1,
}
_FLOATS = ("learning_rate", "network_alpha", "validation_split", "sleep_per_step")
_STRINGS = ("output_dir", "output_name", "sample_prompts")
_BOOLS = ("sample_at_first",)
KNOWN_KEYS = frozenset((*_INTS, *_FLOATS, *_STRINGS, *_BOOLS))


def _flatten(table: Mapping[str, Any], where: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        items = _flatten(value, where).items() if isinstance(value, dict) else [(key, value)]
        for inner, inner_value in items:
            if inner in flat:
                raise ConfigError(f"{where}: {inner!r} is set twice; keep one")
            flat[inner] = inner_value
    return flat


def _check(key: str, value: Any, where: Path) -> Any:
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} = {value!r} must be a whole number, e.g. {key} = 4")
        if value < _INTS[key]:
            raise ConfigError(f"{where}: {key} = {value} must be at least {_INTS[key]}")
        return value
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {key} = {value!r} must be a number, e.g. {key} = 0.01")
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"{where}: {key} = {value!r} must be a finite number >= 0")
        if key in ("learning_rate", "network_alpha") and number == 0:
            raise ConfigError(f"{where}: {key} = 0 trains nothing; give a positive number")
        if key == "validation_split" and number >= 1:
            raise ConfigError(f"{where}: validation_split = {value} must be below 1 (e.g. 0.1)")
        return number
    if key in _STRINGS:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f'{where}: {key} = {value!r} must be a non-empty string, e.g. "x"')
        return value
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} = {value!r} must be true or false")
    return value


def find_path(text: str, config_file: Path) -> Path:
    """A path as written in the config: absolute, else next to the config, else cwd."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    beside = config_file.parent / path
    if beside.exists():
        return beside.absolute()
    return path.absolute()


def load_config(config_file: Path, *, environ: Mapping[str, str]) -> TrainerConfig:
    """Read and check ``config_file``; ``environ`` supplies ``LORADECK_OUTPUT_DIR``."""
    try:
        raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{config_file}: cannot read the config ({err.strerror})") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{config_file}: not valid TOML ({err})") from err
    flat = _flatten(raw, config_file)
    unknown = sorted(set(flat) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{config_file}: unknown key(s) {', '.join(unknown)}; "
            f"the toy trainer knows {', '.join(sorted(KNOWN_KEYS))}"
        )
    values = {key: _check(key, value, config_file) for key, value in flat.items()}

    output_text = values.pop("output_dir", None) or environ.get(OUTPUT_DIR_ENV)
    if not output_text:
        raise ConfigError(
            f"{config_file}: output_dir is not set and ${OUTPUT_DIR_ENV} is not in the "
            'environment; add output_dir = "..." to the config'
        )
    output_dir = find_path(output_text, config_file)
    prompts_text = values.pop("sample_prompts", None)
    prompts = find_path(prompts_text, config_file) if prompts_text else None
    if prompts is not None and not prompts.is_file():
        raise ConfigError(
            f"{config_file}: sample_prompts = {prompts_text!r}: no such file next to the "
            f"config or in {Path.cwd()}; give an absolute path"
        )
    if "seed" not in values:
        # kohya draws a random seed when none is given; a run is then not repeatable.
        values["seed"] = random.randint(0, 2**31 - 1)
    if values.get("dataset_size", 512) * (1 - values.get("validation_split", 0.1)) < 1:
        raise ConfigError(f"{config_file}: dataset_size leaves no training images; raise it")
    return TrainerConfig(
        config_file=config_file, output_dir=output_dir, sample_prompts=prompts, **values
    )
