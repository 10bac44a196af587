"""Batch files: many jobs, sweeps and their dependencies in one TOML (or YAML) file.

The shape::

    [batch]                     # optional
    name = "hero"

    [defaults]                  # merged into every job and sweep unless they override
    gpus = 1
    retries = 2

    [[job]]
    name = "hero-v1"
    command = "accelerate launch train_network.py --config_file configs/hero.toml"

    [[sweep]]                   # one job per combination of the grid
    name = "hero-r{network_dim}-lr{learning_rate}"
    trainer = "kohya"
    config = "configs/hero.toml"
    grid = { network_dim = [16, 32], learning_rate = [1e-4, 5e-5] }

YAML files (``.yaml``/``.yml``) with the same keys are read the same way.

Rules:

- Each ``[[job]]`` and each expanded ``[[sweep]]`` job is a :class:`JobSpec` after
  ``[defaults]`` is merged in (``env`` tables are merged key by key; every other key
  a job gives replaces the default). ``[defaults]`` may hold any field but ``name``,
  ``command`` and ``depends_on``.
- A sweep's grid maps keys to non-empty lists of strings, numbers or booleans; the
  combinations run in file order with the last key changing fastest. Each job's
  config copy gets its grid values written in (see :mod:`loradeck.core.configcopy`).
- A sweep's ``name`` is a template: ``{key}`` is replaced by the grid value, and every
  grid key the template does not use is appended as ``-{key}{value}`` (the last part of
  a dotted key), so names stay unique. Floats are written compactly (``0.0001``,
  ``5e-05``).
- In ``command``, ``{key}`` of a grid key is replaced by the value, shell-quoted.
  ``{config}``, ``{name}``, ``{output_dir}`` and ``{job_id}`` are left for
  :func:`fill_command` at submit time. Any other brace text (``${HOME}``,
  ``awk '{print $1}'``) is left exactly as written.
- ``trainer = "kohya"`` takes the command (and log parser) from the trainer preset in
  settings, unless the job gives its own ``command``.
- ``depends_on`` names jobs of the batch, jobs already in the store, or store ids. A
  sweep's ``name`` as written (its template, or its base name when it has no
  placeholder) stands for all jobs of that sweep; a job name of the batch wins over a
  sweep name.
- Relative paths (``config``, ``workdir``, ``venv``, ``output_dir``) are relative to
  the batch file's folder; ``workdir`` defaults to it.
- Validation is atomic: every problem found is reported (one line each, naming file,
  job and field) in one :class:`~loradeck.core.errors.ValidationError`, and nothing is
  planned. Names outside the batch are checked later by :func:`check_dependencies`.

This module reads the file or text into a document; beside it live the validation pass
(:mod:`loradeck.core.batchloader`), the plan it yields and its dependency graph
(:mod:`loradeck.core.batchplan`), grid checks and expansion (:mod:`loradeck.core.sweeps`)
and placeholders (:mod:`loradeck.core.batchtext`). The public names are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml

from loradeck.core.batchloader import BatchLoader
from loradeck.core.batchplan import BatchPlan, PlannedJob, check_dependencies
from loradeck.core.batchtext import SUBMIT_PLACEHOLDERS, fill_command, format_value
from loradeck.core.configcopy import load_yaml
from loradeck.core.errors import ValidationError
from loradeck.core.settings import Settings
from loradeck.core.sweeps import MAX_SWEEP_JOBS

# --------------------------------------------------------------------------- public API


def load_batch(path: Path, settings: Settings) -> BatchPlan:
    """Read, validate and expand the batch file at ``path``.

    Raises :class:`ValidationError` listing every problem found (one per line).
    """
    label = str(path)
    fmt: Literal["toml", "yaml"]
    suffix = path.suffix.lower()
    if suffix == ".toml":
        fmt = "toml"
    elif suffix in (".yaml", ".yml"):
        fmt = "yaml"
    else:
        raise ValidationError(
            f"{label}: a batch file must end in .toml, .yaml or .yml (got {suffix or 'none'})"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ValidationError(f"{label}: no such batch file; check the path") from err
    except IsADirectoryError as err:
        raise ValidationError(f"{label}: is a folder; give the batch file inside it") from err
    except (OSError, ValueError) as err:
        raise ValidationError(f"{label}: cannot read it: {err}") from err
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValidationError(
            f"{label}: not UTF-8 text (bad byte at offset {err.start}); save it as UTF-8"
        ) from err
    absolute = Path(os.path.abspath(path))
    plan = parse_batch_text(
        text, fmt=fmt, base_dir=absolute.parent, settings=settings, source=label
    )
    return replace(plan, path=absolute, digest=hashlib.sha256(data).hexdigest())


def parse_batch_text(
    text: str,
    *,
    fmt: Literal["toml", "yaml"],
    base_dir: Path,
    settings: Settings,
    source: str,
) -> BatchPlan:
    """Validate and expand a batch given as text; ``source`` names it in messages."""
    if not text.strip():
        raise ValidationError(f"{source}: the batch file is empty; add [[job]] or [[sweep]] tables")
    document = _parse_document(text, fmt, source)
    loader = BatchLoader(source, Path(os.path.abspath(base_dir)), settings)
    name, jobs = loader.load(document)
    return BatchPlan(
        path=None,
        digest=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        name=name,
        jobs=jobs,
        label=source,
    )


def plan_single(spec_fields: dict[str, Any], *, base_dir: Path, settings: Settings) -> BatchPlan:
    """A one-job plan from ``loradeck submit``'s fields, validated like a batch job."""
    source = "loradeck submit"
    loader = BatchLoader(source, Path(os.path.abspath(base_dir)), settings)
    _name, jobs = loader.load({"job": [spec_fields]}, one_job=True)
    try:
        digest_text = json.dumps(spec_fields, sort_keys=True, default=str)
    except (TypeError, ValueError):
        digest_text = repr(spec_fields)
    return BatchPlan(
        path=None,
        digest=hashlib.sha256(digest_text.encode("utf-8", "surrogatepass")).hexdigest(),
        name=None,
        jobs=jobs,
        label=source,
    )


# --------------------------------------------------------------------------- parsing


def _parse_document(text: str, fmt: Literal["toml", "yaml"], source: str) -> Mapping[Any, Any]:
    try:
        data: Any = tomllib.loads(text) if fmt == "toml" else load_yaml(text)
    except tomllib.TOMLDecodeError as err:
        raise ValidationError(f"{source}: not valid TOML: {err}") from err
    except yaml.YAMLError as err:
        raise ValidationError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from err
    except RecursionError as err:
        raise ValidationError(f"{source}: nested too deeply to read") from err
    except (ValueError, OverflowError, TypeError) as err:
        # PyYAML raises plain ValueError for impossible dates (2024-13-45).
        raise ValidationError(f"{source}: cannot parse it: {err}") from err
    if data is None:
        raise ValidationError(f"{source}: the batch file is empty; add [[job]] or [[sweep]] tables")
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"{source}: expected a table with `job` and `sweep` lists at the top "
            f"(got {type(data).__name__})"
        )
    return data


__all__ = [
    "MAX_SWEEP_JOBS",
    "SUBMIT_PLACEHOLDERS",
    "BatchPlan",
    "PlannedJob",
    "check_dependencies",
    "fill_command",
    "format_value",
    "load_batch",
    "parse_batch_text",
    "plan_single",
]
