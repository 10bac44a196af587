"""Sweeps: a batch table with a ``grid`` that stands for one job per combination of values.

:func:`check_grid` validates the grid (keys are config keys, values non-empty lists of
strings, numbers or booleans, at most :data:`MAX_SWEEP_JOBS` combinations) and
:func:`sweep_points` expands it in file order, the last key changing fastest, into the
fields of each job: its name from the sweep's name template (:func:`sweep_name`) and its
command with each ``{key}`` filled, shell-quoted. The batch loader
(:mod:`loradeck.core.batch`) validates each point as a job.
"""

from __future__ import annotations

import itertools
import math
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from loradeck.core.batchtext import (
    SUBMIT_PLACEHOLDERS,
    fill_placeholders,
    format_value,
    placeholders_in,
    short,
    show,
)
from loradeck.core.configcopy import ConfigScalar

#: A grid that expands to more jobs than this is surely a mistake (and would not fit a queue).
MAX_SWEEP_JOBS = 10_000
_GRID_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")

#: A validated grid: config key -> the values it takes, in file order.
Grid = dict[str, list[ConfigScalar]]


@dataclass(frozen=True)
class SweepPoint:
    """One combination of a sweep's grid, as the fields of one job."""

    values: dict[str, ConfigScalar]
    """The grid value of each key, for the job's config copy."""
    label: str
    """The values as messages show them: ``network_dim=16, learning_rate=0.0001``."""
    fields: dict[Any, Any]
    """The sweep's fields with the name and command of this combination filled in."""


def check_grid(where: str, grid: Any, present: bool) -> tuple[Grid | None, list[str]]:
    """The grid, or None with one problem per mistake; ``where`` starts each problem."""
    if not present:
        return None, [
            f"{where}: required key is missing (a sweep needs a grid, "
            "e.g. grid = { learning_rate = [1e-4, 5e-5] })"
        ]
    if not isinstance(grid, Mapping) or not grid:
        return None, [f"{where}: expected a table of key -> list of values (got {short(grid)})"]
    problems: list[str] = []
    for key, values in grid.items():
        if not isinstance(key, str) or not _GRID_KEY_RE.match(key):
            problems.append(
                f"{where}: {show(key)}: a grid key is a config key: letters, digits, "
                "_, - and . (for a dotted key), starting with a letter or _"
            )
        elif key in SUBMIT_PLACEHOLDERS:
            problems.append(
                f"{where}.{key}: {{{key}}} is filled at submit time; use another grid key name"
            )
        elif not isinstance(values, list) or not values:
            problems.append(
                f"{where}.{key}: expected a non-empty list of values (got {short(values)})"
            )
        elif bad := [v for v in values if not isinstance(v, str | int | float)]:
            problems.append(
                f"{where}.{key}: expected strings, numbers or booleans (got {short(bad[0])})"
            )
    if problems:
        return None, problems
    count = math.prod(len(values) for values in grid.values())
    if count > MAX_SWEEP_JOBS:
        return None, [
            f"{where}: expands to {count} jobs; at most {MAX_SWEEP_JOBS} per sweep "
            "(split it, or drop some values)"
        ]
    return dict(grid), []


def sweep_points(template: object, fields: Mapping[Any, Any], grid: Grid) -> Iterator[SweepPoint]:
    """Each combination of ``grid`` in order, with ``fields`` (the sweep's, defaults merged)
    given its name from ``template`` (when it is a string) and its command filled."""
    keys = list(grid)
    for combo in itertools.product(*grid.values()):
        values = dict(zip(keys, combo, strict=True))
        shown = {k: format_value(v) for k, v in values.items()}
        job = dict(fields)
        if isinstance(template, str):
            job["name"] = sweep_name(template, shown)
        if isinstance(job.get("command"), str):
            quoted = {k: shlex.quote(v) for k, v in shown.items()}
            job["command"] = fill_placeholders(job["command"], quoted)
        label = ", ".join(f"{k}={v}" for k, v in shown.items())
        yield SweepPoint(values=values, label=label, fields=job)


def sweep_name(template: str, shown: Mapping[str, str]) -> str:
    """The job name: ``{key}`` filled, and every grid key the template does not use
    appended as ``-{key}{value}`` (the last part of a dotted key), so names stay unique."""
    used = placeholders_in(template)
    name = fill_placeholders(template, shown)
    for key, value in shown.items():
        if key not in used:
            name += f"-{key.rsplit('.', 1)[-1]}{value}"
    return name
