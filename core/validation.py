"""Turning pydantic and parser errors into lines a person can act on."""

from __future__ import annotations

from collections.abc import Sequence

import pydantic


def _location(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def pydantic_problems(err: pydantic.ValidationError, where: str) -> list[str]:
    """One line per problem: ``where: field: what was expected (got ...)``.

    ``where`` names the file and the job (``batch.toml: job "hero-v1"``).
    """
    lines: list[str] = []
    for item in err.errors(include_url=False):
        loc = _location([p for p in item["loc"] if not _is_union_tag(p)])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see the README for the keys)"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        got = item.get("input")
        shown = ""
        if item["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
            text = repr(got)
            shown = f" (got {text[:60]}{'...' if len(text) > 60 else ''})"
        field = f"{loc}: " if loc else ""
        lines.append(f"{where}: {field}{message}{shown}")
    return lines


def _is_union_tag(part: int | str) -> bool:
    # pydantic inserts the union member's type name in the location (e.g. "function-before").
    return isinstance(part, str) and (
        part.startswith("function-") or part in {"str", "int", "float", "list[str]"}
    )
