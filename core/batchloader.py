"""Validating a parsed batch document into planned jobs: ``[batch]``, ``[defaults]``,
``[[job]]`` and ``[[sweep]]`` tables, trainer presets, paths, configs and duplicate names.

:class:`BatchLoader` is one pass: it collects every problem rather than stopping at the
first, so that :mod:`loradeck.core.batch` (which reads the file and documents the format)
can report them all at once. Sweeps are expanded through :mod:`loradeck.core.sweeps`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict

from loradeck.core.batchplan import PlannedJob, cycle_problems, expand_sweep_deps
from loradeck.core.batchtext import (
    fill_placeholders,
    format_value,
    one_line,
    show,
    uses_placeholder,
)
from loradeck.core.configcopy import ConfigScalar, check_config_values
from loradeck.core.errors import ValidationError
from loradeck.core.models import JobSpec
from loradeck.core.settings import Settings
from loradeck.core.sweeps import check_grid, sweep_points
from loradeck.core.validation import pydantic_problems

_TOP_KEYS = ("batch", "defaults", "job", "sweep")
_NOT_IN_DEFAULTS = ("name", "command", "depends_on")
_PATH_FIELDS = ("config", "workdir", "venv", "output_dir")


class _BatchHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None


class BatchLoader:
    """One validation pass over a parsed batch: the problems found so far and the configs
    read, so that each config file is parsed once per batch."""

    def __init__(self, label: str, base_dir: Path, settings: Settings) -> None:
        self.label = label
        self.base_dir = base_dir
        self.settings = settings
        self.problems: list[str] = []
        self.config_cache: dict[Path, Any] = {}

    def load(
        self, data: Mapping[Any, Any], *, one_job: bool = False
    ) -> tuple[str | None, tuple[PlannedJob, ...]]:
        """The batch's name and its jobs in file order, sweeps expanded.

        ``one_job`` words messages for ``loradeck submit``'s single job. Raises
        :class:`ValidationError` with every problem found, one line each.
        """
        name: str | None = None
        defaults: dict[Any, Any] = {}
        for key in data:
            if key not in _TOP_KEYS:
                self.problems.append(
                    f"{self.label}: {show(key)}: unknown top-level key "
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
                        src += f" {show(raw['name'])}"
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
        jobs = [expand_sweep_deps(job, sweeps, names) for job in jobs]
        self.problems.extend(cycle_problems(self.label, jobs))
        if self.problems:
            # One line per problem, even when a path or a parser message holds a newline.
            raise ValidationError([one_line(p) for p in self.problems])
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
            src += f" {show(template)}"
        grid, problems = check_grid(
            f"{self.label}: {src}: grid", raw.get("grid", None), "grid" in raw
        )
        self.problems.extend(problems)
        body = {k: v for k, v in raw.items() if k != "grid"}
        merged = {**defaults, **body, **_merged_env(defaults, body)}
        if grid is None:
            self._job(src, merged, {})  # still report the sweep's other problems
            return []
        out: list[PlannedJob] = []
        seen: set[str] = set()
        for point in sweep_points(template, merged, grid):
            job_src = f"{src} ({point.label})"
            before = len(self.problems)
            job = self._job(job_src, point.fields, point.values)
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
                    f"{where}: trainer: unknown trainer {show(spec.trainer)}; known: "
                    f"{', '.join(self.settings.trainer_names())} (or add one under [trainers] "
                    "in settings)"
                )
                return None
            if command is None:
                command = fill_placeholders(
                    preset.command,
                    {k: shlex.quote(format_value(v)) for k, v in grid_values.items()},
                )
            if spec.parser is None and preset.parser is not None:
                updates["parser"] = preset.parser
        assert command is not None  # JobSpec requires command or trainer
        config: Path | None = updates.get("config")
        if config is None and uses_placeholder(command, "config"):
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
                    f"{show(job.spec.name)} (also {other.source}); names in a batch are unique"
                )
            else:
                first[job.spec.name] = job
                kept.append(job)
        return kept


def _merged_env(defaults: Mapping[Any, Any], raw: Mapping[Any, Any]) -> dict[str, Any]:
    base, own = defaults.get("env"), raw.get("env")
    if isinstance(base, Mapping) and isinstance(own, Mapping):
        return {"env": {**base, **own}}
    return {}
