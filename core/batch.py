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
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import reprlib
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict

from loradeck.core.configcopy import ConfigScalar, check_config_values, load_yaml
from loradeck.core.errors import ValidationError
from loradeck.core.models import DependencyRef, JobSpec
from loradeck.core.settings import Settings
from loradeck.core.validation import pydantic_problems

#: Placeholders filled at submit time, not by the loader; grid keys may not use them.
SUBMIT_PLACEHOLDERS: tuple[str, ...] = ("config", "name", "output_dir", "job_id")
_TOP_KEYS = ("batch", "defaults", "job", "sweep")
_NOT_IN_DEFAULTS = ("name", "command", "depends_on")
_PATH_FIELDS = ("config", "workdir", "venv", "output_dir")
# A `{word}` not preceded by `$`, so that bash's `${HOME}` is never touched.
_PLACEHOLDER_RE = re.compile(r"(?<!\$)\{([^{}\s]+)\}")
_GRID_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
#: A grid that expands to more jobs than this is surely a mistake (and would not fit a queue).
MAX_SWEEP_JOBS = 10_000


@dataclass(frozen=True)
class PlannedJob:
    """One job of a batch, validated, ready for the submitter.

    The submitter copies ``spec.config`` with ``grid_values`` written in
    (:func:`~loradeck.core.configcopy.write_config_copy`) and fills the command with
    :func:`fill_command`.
    """

    spec: JobSpec
    """Paths absolute; ``workdir`` set; ``depends_on`` with sweep names expanded."""
    index: int
    """Position in the expanded batch (0-based)."""
    source: str
    """Where it came from, for messages: ``job[2] "hero-merge"``."""
    grid_values: Mapping[str, ConfigScalar]
    """The sweep values of this job ({} for a plain job)."""
    command_template: str
    """The command with grid keys filled and {config}/{name}/{output_dir}/{job_id} left."""
    dep_names: tuple[DependencyRef, ...]
    """Dependencies as written (names or ids), sweep names expanded."""


@dataclass(frozen=True)
class BatchPlan:
    """A validated batch: its jobs in file order."""

    path: Path | None
    """The batch file, absolute; None for ``loradeck submit`` and parsed text."""
    digest: str
    """sha256 of the file's bytes."""
    name: str | None
    """``[batch] name``, if given."""
    jobs: tuple[PlannedJob, ...]
    label: str = field(default="")
    """How messages name the file (the path as given)."""


class _BatchHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None


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
    loader = _Loader(source, Path(os.path.abspath(base_dir)), settings)
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
    loader = _Loader(source, Path(os.path.abspath(base_dir)), settings)
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


def fill_command(
    template: str, *, config: Path | None, output_dir: Path, job_id: int, name: str
) -> str:
    """The final command: ``{config}``, ``{output_dir}``, ``{job_id}`` and ``{name}``
    filled in, shell-quoted. Other brace text is left alone."""
    values = {
        "output_dir": shlex.quote(str(output_dir)),
        "job_id": str(job_id),
        "name": shlex.quote(name),
    }
    if config is not None:
        values["config"] = shlex.quote(str(config))
    elif _uses(template, "config"):
        raise ValidationError(
            f"job {job_id} ({name}): the command uses {{config}} but the job has no config file"
        )
    return _fill(template, values)


def check_dependencies(plan: BatchPlan, known_names: Callable[[str], bool]) -> None:
    """Raise if a dependency name is neither in the batch nor ``known_names(name)``,
    or if dependencies within the batch form a cycle (``a -> b -> a``).

    Integer dependencies are store ids; the caller checks those.
    """
    problems: list[str] = []
    names = {job.spec.name for job in plan.jobs}
    label = plan.label or (str(plan.path) if plan.path else "batch")
    for job in plan.jobs:
        for dep in job.dep_names:
            if isinstance(dep.job, str) and dep.job not in names and not known_names(dep.job):
                problems.append(
                    f"{label}: {job.source}: depends_on: no job named {_show(dep.job)} in this "
                    "batch or in the store (check the spelling, or give a job id)"
                )
    problems.extend(_cycle_problems(label, plan.jobs))
    if problems:
        raise ValidationError(problems)


# --------------------------------------------------------------------------- placeholders


def format_value(value: ConfigScalar) -> str:
    """A grid value as it appears in job names and commands (compact, lossless)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = format(value, "g")
        return short if math.isnan(value) or float(short) == value else repr(value)
    return str(value)


def _fill(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _uses(text: str, key: str) -> bool:
    return any(m.group(1) == key for m in _PLACEHOLDER_RE.finditer(text))


def _show(text: object) -> str:
    # JSON quoting keeps a name with newlines or control bytes on one line.
    return json.dumps(text, ensure_ascii=False) if isinstance(text, str) else reprlib.repr(text)


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


class _Loader:
    """The state of one validation pass: problems found so far and parsed configs."""

    def __init__(self, label: str, base_dir: Path, settings: Settings) -> None:
        self.label = label
        self.base_dir = base_dir
        self.settings = settings
        self.problems: list[str] = []
        self.config_cache: dict[Path, Any] = {}

    def load(
        self, data: Mapping[Any, Any], *, one_job: bool = False
    ) -> tuple[str | None, tuple[PlannedJob, ...]]:
        name: str | None = None
        defaults: dict[Any, Any] = {}
        for key in data:
            if key not in _TOP_KEYS:
                self.problems.append(
                    f"{self.label}: {_show(key)}: unknown top-level key "
                    "(expected batch, defaults, job or sweep)"
                )
        if "batch" in data:
            name = self._header(data["batch"])
        if "defaults" in data:
            defaults = self._defaults(data["defaults"])
        jobs: list[PlannedJob] = []
        sweeps: dict[str, list[str]] = {}
        for key in data:
            if key not in ("job", "sweep"):
                continue
            items = data[key]
            if not isinstance(items, list):
                header = f"[[{key}]]" if not one_job else "a job"
                self.problems.append(
                    f"{self.label}: {key}: expected a list of tables (write each as {header}) "
                    f"(got {type(items).__name__})"
                )
                continue
            for i, raw in enumerate(items):
                src = "job" if one_job else f"{key}[{i}]"
                if not isinstance(raw, Mapping):
                    self.problems.append(
                        f"{self.label}: {src}: expected a table of job keys "
                        f"(got {type(raw).__name__})"
                    )
                elif key == "job":
                    if isinstance(raw.get("name"), str):
                        src += f" {_show(raw['name'])}"
                    job = self._job(src, {**defaults, **raw, **_merged_env(defaults, raw)}, {})
                    if job is not None:
                        jobs.append(job)
                else:
                    expanded = self._sweep(src, raw, defaults)
                    jobs.extend(expanded)
                    if expanded and isinstance(raw.get("name"), str):
                        sweeps.setdefault(raw["name"], []).extend(j.spec.name for j in expanded)
        if not jobs and not self.problems:
            self.problems.append(f"{self.label}: no jobs; add a [[job]] or [[sweep]] table")
        jobs = self._check_names(jobs)
        names = {job.spec.name for job in jobs}
        jobs = [_expand_sweep_deps(job, sweeps, names) for job in jobs]
        self.problems.extend(_cycle_problems(self.label, jobs))
        if self.problems:
            # One line per problem, even when a path or a parser message holds a newline.
            raise ValidationError([_one_line(p) for p in self.problems])
        return name, tuple(replace(job, index=i) for i, job in enumerate(jobs))

    # ----- sections

    def _header(self, raw: Any) -> str | None:
        try:
            return _BatchHeader.model_validate(raw).name
        except pydantic.ValidationError as err:
            self.problems.extend(pydantic_problems(err, f"{self.label}: batch"))
            return None

    def _defaults(self, raw: Any) -> dict[Any, Any]:
        where = f"{self.label}: defaults"
        if not isinstance(raw, Mapping):
            self.problems.append(
                f"{where}: expected a table of job keys (got {type(raw).__name__})"
            )
            return {}
        kept = dict(raw)
        for key in _NOT_IN_DEFAULTS:
            if key in kept:
                self.problems.append(f"{where}: {key}: not allowed in [defaults]; set it per job")
                del kept[key]
        try:
            JobSpec.model_validate({**kept, "name": "defaults", "command": "true"})
        except pydantic.ValidationError as err:
            # Whole-job checks (trainer without config...) are for the jobs, not defaults.
            items = err.errors(include_url=False)
            for item, line in zip(items, pydantic_problems(err, where), strict=True):
                if item["loc"]:
                    self.problems.append(line)
                    kept.pop(item["loc"][0], None)
        return kept

    def _sweep(
        self, src: str, raw: Mapping[Any, Any], defaults: dict[Any, Any]
    ) -> list[PlannedJob]:
        template = raw.get("name")
        if isinstance(template, str):
            src += f" {_show(template)}"
        grid = self._grid(src, raw.get("grid", None), "grid" in raw)
        body = {k: v for k, v in raw.items() if k != "grid"}
        merged = {**defaults, **body, **_merged_env(defaults, body)}
        if grid is None:
            self._job(src, merged, {})  # still report the sweep's other problems
            return []
        out: list[PlannedJob] = []
        seen: set[str] = set()
        keys = list(grid)
        for combo in itertools.product(*grid.values()):
            values = dict(zip(keys, combo, strict=True))
            shown = {k: format_value(v) for k, v in values.items()}
            job_src = f"{src} ({', '.join(f'{k}={v}' for k, v in shown.items())})"
            fields = dict(merged)
            if isinstance(template, str):
                fields["name"] = _sweep_name(template, shown)
            if isinstance(fields.get("command"), str):
                quoted = {k: shlex.quote(v) for k, v in shown.items()}
                fields["command"] = _fill(fields["command"], quoted)
            before = len(self.problems)
            job = self._job(job_src, fields, values)
            # The same mistake in every combination is reported once.
            new, self.problems[before:] = self.problems[before:], []
            for line in new:
                detail = line.removeprefix(f"{self.label}: {job_src}")
                if detail not in seen:
                    self.problems.append(line)
                seen.add(detail)
            if job is not None:
                out.append(job)
        return out

    def _grid(self, src: str, grid: Any, present: bool) -> dict[str, list[ConfigScalar]] | None:
        where = f"{self.label}: {src}: grid"
        if not present:
            self.problems.append(
                f"{where}: required key is missing (a sweep needs a grid, "
                "e.g. grid = { learning_rate = [1e-4, 5e-5] })"
            )
            return None
        if not isinstance(grid, Mapping) or not grid:
            self.problems.append(
                f"{where}: expected a table of key -> list of values (got {_short(grid)})"
            )
            return None
        ok = True
        for key, values in grid.items():
            if not isinstance(key, str) or not _GRID_KEY_RE.match(key):
                self.problems.append(
                    f"{where}: {_show(key)}: a grid key is a config key: letters, digits, "
                    "_, - and . (for a dotted key), starting with a letter or _"
                )
                ok = False
            elif key in SUBMIT_PLACEHOLDERS:
                self.problems.append(
                    f"{where}.{key}: {{{key}}} is filled at submit time; use another grid key name"
                )
                ok = False
            elif not isinstance(values, list) or not values:
                self.problems.append(
                    f"{where}.{key}: expected a non-empty list of values (got {_short(values)})"
                )
                ok = False
            elif bad := [v for v in values if not isinstance(v, str | int | float)]:
                self.problems.append(
                    f"{where}.{key}: expected strings, numbers or booleans (got {_short(bad[0])})"
                )
                ok = False
        if not ok:
            return None
        count = math.prod(len(values) for values in grid.values())
        if count > MAX_SWEEP_JOBS:
            self.problems.append(
                f"{where}: expands to {count} jobs; at most {MAX_SWEEP_JOBS} per sweep "
                "(split it, or drop some values)"
            )
            return None
        return dict(grid)

    # ----- one job

    def _job(
        self, src: str, fields: dict[Any, Any], grid_values: Mapping[str, ConfigScalar]
    ) -> PlannedJob | None:
        where = f"{self.label}: {src}"
        try:
            spec = JobSpec.model_validate(fields)
        except pydantic.ValidationError as err:
            self.problems.extend(pydantic_problems(err, where))
            return None
        updates: dict[str, Any] = {}
        for name in _PATH_FIELDS:
            value: Path | None = getattr(spec, name)
            if value is None:
                continue
            if "\x00" in str(value):
                self.problems.append(f"{where}: {name}: a path cannot contain a NUL byte")
                return None
            updates[name] = Path(os.path.abspath(self.base_dir / value.expanduser()))
        updates.setdefault("workdir", self.base_dir)
        command = spec.command
        if spec.trainer is not None:
            preset = self.settings.trainer(spec.trainer)
            if preset is None:
                self.problems.append(
                    f"{where}: trainer: unknown trainer {_show(spec.trainer)}; known: "
                    f"{', '.join(self.settings.trainer_names())} (or add one under [trainers] "
                    "in settings)"
                )
                return None
            if command is None:
                command = _fill(
                    preset.command,
                    {k: shlex.quote(format_value(v)) for k, v in grid_values.items()},
                )
            if spec.parser is None and preset.parser is not None:
                updates["parser"] = preset.parser
        assert command is not None  # JobSpec requires command or trainer
        config: Path | None = updates.get("config")
        if config is None and _uses(command, "config"):
            self.problems.append(
                f"{where}: command: uses {{config}} but the job has no `config` file"
            )
            return None
        if config is not None:
            try:
                check_config_values(
                    config, grid_values, where=f"{where}: config: ", cache=self.config_cache
                )
            except ValidationError as err:
                self.problems.extend(err.problems)
                return None
        spec = spec.model_copy(update=updates)
        return PlannedJob(
            spec=spec,
            index=0,
            source=src,
            grid_values=dict(grid_values),
            command_template=command,
            dep_names=tuple(spec.depends_on),
        )

    def _check_names(self, jobs: list[PlannedJob]) -> list[PlannedJob]:
        first: dict[str, PlannedJob] = {}
        kept: list[PlannedJob] = []
        for job in jobs:
            other = first.get(job.spec.name)
            if other is not None:
                self.problems.append(
                    f"{self.label}: {job.source}: name: duplicate job name "
                    f"{_show(job.spec.name)} (also {other.source}); names in a batch are unique"
                )
            else:
                first[job.spec.name] = job
                kept.append(job)
        return kept


# --------------------------------------------------------------------------- helpers


def _merged_env(defaults: Mapping[Any, Any], raw: Mapping[Any, Any]) -> dict[str, Any]:
    base, own = defaults.get("env"), raw.get("env")
    if isinstance(base, Mapping) and isinstance(own, Mapping):
        return {"env": {**base, **own}}
    return {}


def _sweep_name(template: str, shown: Mapping[str, str]) -> str:
    used = {m.group(1) for m in _PLACEHOLDER_RE.finditer(template)}
    name = _fill(template, shown)
    for key, value in shown.items():
        if key not in used:
            name += f"-{key.rsplit('.', 1)[-1]}{value}"
    return name


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _short(value: object) -> str:
    # reprlib bounds the text even for huge or self-referencing YAML structures.
    return reprlib.repr(value)


def _expand_sweep_deps(
    job: PlannedJob, sweeps: Mapping[str, list[str]], names: set[str]
) -> PlannedJob:
    """Replace a sweep's name in ``depends_on`` by the names of all its jobs."""
    deps: list[DependencyRef] = []
    changed = False
    for dep in job.dep_names:
        members = sweeps.get(dep.job) if isinstance(dep.job, str) else None
        if members is not None and dep.job not in names:
            deps.extend(DependencyRef(job=m, condition=dep.condition) for m in members)
            changed = True
        else:
            deps.append(dep)
    if not changed:
        return job
    spec = job.spec.model_copy(update={"depends_on": deps})
    return replace(job, spec=spec, dep_names=tuple(deps))


def _cycle_problems(label: str, jobs: list[PlannedJob] | tuple[PlannedJob, ...]) -> list[str]:
    """One problem per dependency cycle among ``jobs`` (by name), printed ``a -> b -> a``."""
    by_name = {job.spec.name: job for job in jobs}
    edges = {
        name: [d.job for d in job.dep_names if isinstance(d.job, str) and d.job in by_name]
        for name, job in by_name.items()
    }
    # Peel off jobs whose dependencies are all peeled (Kahn); what is left is in or
    # behind a cycle, and every job left has a dependency that is left.
    waiting = {name: len(set(deps)) for name, deps in edges.items()}
    dependents: dict[str, list[str]] = {name: [] for name in edges}
    for name, deps in edges.items():
        for dep in set(deps):
            dependents[dep].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    while ready:
        done = ready.pop()
        for other in dependents[done]:
            waiting[other] -= 1
            if waiting[other] == 0:
                ready.append(other)
    left = {name for name, count in waiting.items() if count > 0}
    problems: list[str] = []
    covered: set[str] = set()
    for start in by_name:
        if start not in left or start in covered:
            continue
        trail: list[str] = []
        at: dict[str, int] = {}
        node = start
        while node not in at and node not in covered:
            at[node] = len(trail)
            trail.append(node)
            node = next(d for d in edges[node] if d in left)
        covered.update(trail)
        if node in at:  # a new cycle, not one reported already
            cycle = [*trail[at[node] :], node]
            problems.append(
                f"{label}: {by_name[cycle[0]].source}: depends_on: dependency cycle: "
                f"{' -> '.join(cycle)} (each waits for the next; remove one dependency)"
            )
    return problems


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
