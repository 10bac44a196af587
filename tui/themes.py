"""Themes: the ones shipped in ``loradeck.themes`` plus the user's own, validated at start.

A theme file is TOML with the fields of :class:`textual.theme.Theme` (``name``, ``primary``,
``background``, ``dark``...) and a ``[variables]`` table that may set Textual's variables
and loradeck's own (:data:`APP_VARIABLES`: state colours, hot GPU, plot lines). Users put
theirs in ``<config dir>/themes/*.toml``; a user theme with a shipped theme's name
replaces it.

``Theme()`` accepts bad colours silently and the app would only fail when it draws, so
every file is checked here: unknown keys, wrong types, colours that do not parse (the
colour system is generated once, which raises on them) and loradeck's variables. A
broken file is skipped and named in :attr:`ThemeCatalog.problems`; the app shows that in
one notification and falls back to :data:`DEFAULT_THEME`.

The theme to start with is ``LORADECK_THEME``, else the ``[tui] theme`` setting, else
the default (:func:`starting_theme`); a name that is not a usable theme is said in the
same notification, with where it came from.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from textual.color import Color, ColorParseError
from textual.theme import Theme

from loradeck.core.settings import default_config_path
from loradeck.core.validation import pydantic_problems

DEFAULT_THEME = "loradeck-dark"
"""Used when no theme is asked for, or the one asked for is missing or broken."""

#: loradeck's own theme variables with the values used by themes that do not set them
#: (Textual's built-in themes). Every one is a colour.
APP_VARIABLES: Mapping[str, str] = {
    "state-running": "#5CC683",
    "state-queued": "#8FA3BF",
    "state-held": "#D6B656",
    "state-completed": "#4C9BE8",
    "state-failed": "#E5576B",
    "state-cancelled": "#8A8F98",
    "gpu-hot": "#E5576B",
    "gpu-warm": "#F0A94B",
    "gpu-cool": "#5CC683",
    "plot-raw": "#6C86A8",
    "plot-smooth": "#F0A94B",
}

#: The order `t` cycles through the shipped themes; user themes follow by file name.
SHIPPED_ORDER = ("loradeck-dark", "loradeck-light", "loradeck-high-contrast", "loradeck-ansi")

THEME_ENV = "LORADECK_THEME"
"""Environment variable naming the theme to start with (over ``[tui] theme``)."""
SETTING_SOURCE = "[tui] theme in config.toml"
"""How the note of an unusable theme names the setting."""


def starting_theme(setting: str | None, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The theme to start with and where that came from: :data:`THEME_ENV` over the
    ``[tui] theme`` setting; (None, "") when neither names one (the default then)."""
    from_env = environ.get(THEME_ENV, "").strip()
    if from_env:
        return from_env, THEME_ENV
    if setting:
        return setting, SETTING_SOURCE
    return None, ""


class ThemeFile(BaseModel):
    """The contents of one theme file; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=64)
    """The theme's name; the file name without ``.toml`` when unset."""
    primary: str
    secondary: str | None = None
    warning: str | None = None
    error: str | None = None
    success: str | None = None
    accent: str | None = None
    foreground: str | None = None
    background: str | None = None
    surface: str | None = None
    panel: str | None = None
    boost: str | None = None
    dark: bool = True
    luminosity_spread: float = Field(default=0.15, ge=0, le=1)
    text_alpha: float = Field(default=0.95, ge=0, le=1)
    ansi: bool = False
    variables: dict[str, str] = Field(default_factory=dict)
    """Textual's variables and loradeck's (:data:`APP_VARIABLES`)."""


@dataclass(frozen=True)
class ThemeProblem:
    """A theme file that could not be used, and why."""

    path: str
    message: str


@dataclass(frozen=True)
class ThemeCatalog:
    """The usable themes (loradeck's first, in load order) and the files that were not."""

    themes: tuple[Theme, ...]
    problems: tuple[ThemeProblem, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(theme.name for theme in self.themes)

    def pick(self, wanted: str | None, source: str = "") -> tuple[str, str | None]:
        """The theme to start with and, if ``wanted`` cannot be used, a note saying so
        (naming ``source``, where the name came from, when given)."""
        if not wanted or wanted in self.names:
            return (wanted or DEFAULT_THEME), None
        broken = [p.path for p in self.problems if Path(p.path).stem == wanted]
        why = f"is broken ({broken[0]})" if broken else "does not exist"
        known = ", ".join(self.names)
        origin = f" (from {source})" if source else ""
        return (
            DEFAULT_THEME,
            f"theme {wanted!r}{origin} {why}; using {DEFAULT_THEME} (known: {known})",
        )

    def notification(self) -> str | None:
        """One message naming every broken file, or None when all loaded."""
        if not self.problems:
            return None
        lines = [f"{p.path}: {p.message}" for p in self.problems]
        return "skipped broken theme files:\n" + "\n".join(lines)


def user_theme_dir() -> Path:
    """``themes/`` beside the user's ``config.toml``."""
    return default_config_path().parent / "themes"


def theme_from_text(text: str, *, default_name: str) -> Theme:
    """A validated :class:`Theme` from TOML text; raises ValueError naming the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"not valid TOML: {err}") from err
    try:
        spec = ThemeFile.model_validate(data)
    except pydantic.ValidationError as err:
        raise ValueError("; ".join(pydantic_problems(err, "theme"))) from err
    fields = spec.model_dump(exclude={"name"})
    theme = Theme(name=spec.name or default_name, **fields)
    try:
        # Theme() takes any string; generating the colour system parses every colour.
        theme.to_color_system().generate()
    except ColorParseError as err:
        raise ValueError(f"bad colour: {err}") from err
    for key in APP_VARIABLES:
        value = spec.variables.get(key)
        if value is None:
            continue
        try:
            Color.parse(value)
        except ColorParseError as err:
            raise ValueError(f"variables.{key}: {err}") from err
    return theme


def _read(entry: Path | Traversable) -> tuple[str, str]:
    return entry.name, entry.read_text(encoding="utf-8")


def _toml_files(folder: Path | Traversable) -> list[Path | Traversable]:
    try:
        entries = [e for e in folder.iterdir() if e.name.endswith(".toml") and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(entries, key=lambda e: e.name)


def load_themes(
    user_dir: Path | None = None, *, builtin: Path | Traversable | None = None
) -> ThemeCatalog:
    """Every shipped theme and every theme in ``user_dir`` (default :func:`user_theme_dir`)."""
    shipped = _toml_files(builtin if builtin is not None else files("loradeck.themes"))
    shipped.sort(key=_shipped_rank)
    sources: list[tuple[str, Path | Traversable]] = [
        (f"loradeck.themes/{entry.name}", entry) for entry in shipped
    ]
    sources += [(str(entry), entry) for entry in _toml_files(user_dir or user_theme_dir())]
    by_name: dict[str, Theme] = {}
    problems: list[ThemeProblem] = []
    for label, entry in sources:
        try:
            name, text = _read(entry)
            theme = theme_from_text(text, default_name=name.removesuffix(".toml"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            problems.append(ThemeProblem(label, str(err)))
            continue
        by_name[theme.name] = theme
    default = by_name.pop(DEFAULT_THEME, None) or _emergency_default()
    return ThemeCatalog((default, *by_name.values()), tuple(problems))


def _shipped_rank(entry: Path | Traversable) -> tuple[int, str]:
    stem = entry.name.removesuffix(".toml")
    rank = SHIPPED_ORDER.index(stem) if stem in SHIPPED_ORDER else len(SHIPPED_ORDER)
    return rank, entry.name


def _emergency_default() -> Theme:
    """The default theme, should its shipped file be damaged: loradeck must still start."""
    return Theme(
        name=DEFAULT_THEME,
        primary="#4C9BE8",
        secondary="#2E6DA4",
        accent="#F0A94B",
        warning="#F0A94B",
        error="#E5576B",
        success="#5CC683",
        dark=True,
        variables=dict(APP_VARIABLES),
    )


def next_theme(names: Iterable[str], current: str) -> str:
    """The theme after ``current`` in ``names`` (wrapping); the first if it is not there."""
    ordered = list(names)
    if current not in ordered:
        return ordered[0]
    return ordered[(ordered.index(current) + 1) % len(ordered)]
