"""How batch values become text: grid values in names and commands, ``{placeholders}``, and
values quoted in problem messages.

A placeholder is ``{word}`` not preceded by ``$``, so bash's ``${HOME}`` is never touched,
and any brace text that names no known value (``awk '{print $1}'``) is left as written.
Grid keys are filled when a batch is loaded (:mod:`loradeck.core.sweeps`); the
:data:`SUBMIT_PLACEHOLDERS` are filled at submit time by :func:`fill_command`.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
import shlex
from collections.abc import Mapping
from pathlib import Path

from loradeck.core.configcopy import ConfigScalar
from loradeck.core.errors import ValidationError

#: Placeholders filled at submit time, not by the loader; grid keys may not use them.
SUBMIT_PLACEHOLDERS: tuple[str, ...] = ("config", "name", "output_dir", "job_id")
# A `{word}` not preceded by `$`, so that bash's `${HOME}` is never touched.
_PLACEHOLDER_RE = re.compile(r"(?<!\$)\{([^{}\s]+)\}")


def format_value(value: ConfigScalar) -> str:
    """A grid value as it appears in job names and commands (compact, lossless)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = format(value, "g")
        return short if math.isnan(value) or float(short) == value else repr(value)
    return str(value)


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{key}`` of ``values`` replaced; other brace text left alone."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def placeholders_in(text: str) -> set[str]:
    """The keys of the placeholders ``text`` uses."""
    return {m.group(1) for m in _PLACEHOLDER_RE.finditer(text)}


def uses_placeholder(text: str, key: str) -> bool:
    """Whether ``text`` has a ``{key}`` placeholder."""
    return any(m.group(1) == key for m in _PLACEHOLDER_RE.finditer(text))


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
    elif uses_placeholder(template, "config"):
        raise ValidationError(
            f"job {job_id} ({name}): the command uses {{config}} but the job has no config file"
        )
    return fill_placeholders(template, values)


def show(text: object) -> str:
    """A name or key as a problem message quotes it."""
    # JSON quoting keeps a name with newlines or control bytes on one line.
    return json.dumps(text, ensure_ascii=False) if isinstance(text, str) else reprlib.repr(text)


def short(value: object) -> str:
    """Any value a batch file gave, bounded in length, for a problem message."""
    # reprlib bounds the text even for huge or self-referencing YAML structures.
    return reprlib.repr(value)


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped, so each problem stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
