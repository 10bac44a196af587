"""Per-job copies of trainer config files, with values written into them.

A sweep gives each of its jobs its own copy of the trainer config with that job's
grid values written in; later the engine edits a copy in place (halving
``train_batch_size`` on out-of-memory, lowering ``learning_rate`` after a divergence).

Formats, chosen by suffix:

- TOML (``.toml``), through tomlkit: comments, key order and formatting are kept.
- YAML (``.yaml``, ``.yml``), through PyYAML: key order is kept, **comments are lost**
  in a copy that has values written into it (a copy with no values is a byte copy).
- JSON (``.json``): rewritten with two-space indentation.

Where a key goes (``values`` maps keys to strings, numbers or booleans):

- a dotted key ``a.b.c`` addresses nested tables; in YAML and JSON a number addresses
  a list item (``config.process.0.train.lr``, as ai-toolkit nests its settings). Missing
  tables on the way are created.
- a plain key found at the top level is replaced there;
- otherwise a plain key found in exactly one nested table (kohya's configs flatten
  their ``[model]``, ``[optimizer]``... tables) is replaced in place; found in several,
  it is an error that asks for a dotted key;
- otherwise it is added at the top level.

Problems raise :class:`~loradeck.core.errors.ValidationError` naming the file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping, MutableMapping, MutableSequence
from pathlib import Path
from typing import Any, Literal

import tomlkit
import tomlkit.exceptions
import yaml

from loradeck.core.errors import ValidationError

ConfigScalar = str | int | float | bool
"""A value that can be written into a config: what a sweep's grid holds."""

ConfigFormat = Literal["toml", "yaml", "json"]

_SUFFIXES: dict[str, ConfigFormat] = {
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
}

# A location inside a parsed document: the container and the key (or list index) in it.
_Slot = tuple[Any, str | int]


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-4`` as a number.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-4``); people write
    learning rates as ``1e-4`` and mean a number (ai-toolkit reads its configs the
    same way).
    """


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML with :class:`YamlLoader` (safe: plain data only)."""
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 (YamlLoader is a SafeLoader)


def config_format(path: Path) -> ConfigFormat | None:
    """The format of a config file by its suffix, or None for one loradeck cannot edit."""
    return _SUFFIXES.get(path.suffix.lower())


def write_config_copy(
    src: Path, dest: Path, values: Mapping[str, ConfigScalar], *, where: str = ""
) -> Path:
    """Copy ``src`` to ``dest`` with ``values`` written in; returns ``dest``.

    With no values the copy is byte for byte (any format). The copy is written
    atomically (temporary file, then rename) with mode 0600. ``where`` prefixes error
    messages (e.g. ``'batch.toml: job[0] "hero": config: '``).
    """
    if not values:
        data = _read_bytes(src, where)
        _write_atomic(dest, data)
        return dest
    fmt, doc = _load(src, where)
    _apply(doc, values, src, where)
    _write_atomic(dest, _dump(fmt, doc))
    return dest


def update_config_copy(path: Path, values: Mapping[str, ConfigScalar], *, where: str = "") -> None:
    """Write ``values`` into the config at ``path`` in place (atomically, mode 0600)."""
    fmt, doc = _load(path, where)
    _apply(doc, values, path, where)
    _write_atomic(path, _dump(fmt, doc))


def read_config_value(path: Path, key: str, *, where: str = "") -> object:
    """The value of ``key`` (same lookup rules as writing) in the config at ``path``.

    Returns None when the key is absent. Tables come back as plain dicts and lists.
    """
    _fmt, doc = _load(path, where)
    slot = _find(doc, key, path, where, create=False)
    if slot is None:
        return None
    container, name = slot
    return _plain(container[name])


def check_config_values(
    path: Path, values: Mapping[str, ConfigScalar], *, where: str = "", cache: dict[Path, Any]
) -> None:
    """Raise if ``path`` cannot be read or parsed, or ``values`` cannot be placed in it.

    Nothing is written. ``cache`` keeps parsed documents between calls (a sweep checks
    the same file once per job); it belongs to the caller, so nothing is global.
    """
    if path not in cache:
        fmt = config_format(path)
        if fmt is None:
            _read_bytes(path, where)  # it must at least exist
            cache[path] = None
        else:
            cache[path] = _load(path, where)[1]
    doc = cache[path]
    if doc is None:
        if values:
            raise ValidationError(
                f"{where}{path}: cannot write sweep values into a {path.suffix or 'suffix-less'} "
                "file; loradeck edits .toml, .yaml, .yml and .json configs"
            )
        return
    for key in values:
        _find(doc, key, path, where, create=False, for_write=True)


# --------------------------------------------------------------------------- reading


def _read_bytes(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise ValidationError(
            f"{where}{path}: no such config file (relative paths are relative to the "
            "batch file's folder)"
        ) from err
    except IsADirectoryError as err:
        raise ValidationError(f"{where}{path}: is a folder, not a config file") from err
    except (OSError, ValueError) as err:
        raise ValidationError(f"{where}{path}: cannot read it: {err}") from err


def _load(path: Path, where: str) -> tuple[ConfigFormat, Any]:
    fmt = config_format(path)
    if fmt is None:
        raise ValidationError(
            f"{where}{path}: loradeck edits .toml, .yaml, .yml and .json configs, "
            f"not {path.suffix or 'files without a suffix'}"
        )
    data = _read_bytes(path, where)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValidationError(f"{where}{path}: not UTF-8 text ({err.reason})") from err
    try:
        doc: Any
        if fmt == "toml":
            # tomllib gives the precise syntax error; tomlkit keeps the comments.
            tomllib.loads(text)
            doc = tomlkit.parse(text)
        elif fmt == "yaml":
            doc = load_yaml(text)
            if doc is None:
                doc = {}
        else:
            doc = json.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValidationError(f"{where}{path}: not valid TOML: {err}") from err
    except tomlkit.exceptions.TOMLKitError as err:
        raise ValidationError(f"{where}{path}: not valid TOML: {err}") from err
    except yaml.YAMLError as err:
        raise ValidationError(f"{where}{path}: not valid YAML: {_one_line(err)}") from err
    except json.JSONDecodeError as err:
        raise ValidationError(f"{where}{path}: not valid JSON: {err}") from err
    except (ValueError, RecursionError, OverflowError) as err:
        raise ValidationError(f"{where}{path}: cannot parse it: {err}") from err
    if not isinstance(doc, MutableMapping):
        raise ValidationError(
            f"{where}{path}: expected a table of settings at the top, got {type(doc).__name__}"
        )
    return fmt, doc


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


# --------------------------------------------------------------------------- lookup


def _find(
    doc: Any, key: str, path: Path, where: str, *, create: bool, for_write: bool = False
) -> _Slot | None:
    """Where ``key`` lives in ``doc``; None when absent (and not created)."""
    if not key:
        raise ValidationError(f"{where}{path}: an empty key cannot be written")
    slot: _Slot | None
    if "." in key and key not in doc:
        slot = _find_dotted(doc, key, path, where, create=create)
        if slot is None:
            return None
    elif key in doc:
        slot = (doc, key)
    else:
        found = list(_search(doc, key, ()))
        if len(found) > 1:
            places = ", ".join(".".join(str(p) for p in trail) for trail, _ in found)
            raise ValidationError(
                f"{where}{path}: key {key!r} is in several tables ({places}); "
                "write it as a dotted key to say which"
            )
        if found:
            slot = found[0][1]
        elif create:
            return (doc, key)
        else:
            return None
    if for_write or create:
        _check_replaceable(slot, key, path, where)
    return slot


def _search(node: Any, key: str, trail: tuple[str | int, ...]) -> Any:
    """Yield ``(trail, slot)`` for every nested table (not the top) holding ``key``."""
    children: list[tuple[str | int, Any]]
    if isinstance(node, Mapping):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return
    for name, child in children:
        if isinstance(child, Mapping):
            if key in child:
                yield ((*trail, name, key), (child, key))
            yield from _search(child, key, (*trail, name))
        elif isinstance(child, list):
            yield from _search(child, key, (*trail, name))


def _find_dotted(doc: Any, key: str, path: Path, where: str, *, create: bool) -> _Slot | None:
    parts = key.split(".")
    if any(not p for p in parts):
        raise ValidationError(f"{where}{path}: {key!r} is not a valid dotted key")
    node = doc
    for depth, part in enumerate(parts[:-1]):
        walked = ".".join(parts[: depth + 1])
        if isinstance(node, MutableSequence):
            index = _index(part, node, key, walked, path, where)
            node = node[index]
        elif isinstance(node, MutableMapping):
            if part not in node:
                if not create:
                    return None
                node[part] = {}
            node = node[part]
        else:
            raise ValidationError(
                f"{where}{path}: cannot follow {key!r}: {walked!r} is a value, not a table"
            )
        if not isinstance(node, MutableMapping | MutableSequence):
            raise ValidationError(
                f"{where}{path}: cannot follow {key!r}: {walked!r} is a value, not a table"
            )
    last = parts[-1]
    if isinstance(node, MutableSequence):
        return (node, _index(last, node, key, key, path, where))
    if last not in node and not create:
        return None
    return (node, last)


def _index(
    part: str, node: MutableSequence[Any], key: str, walked: str, path: Path, where: str
) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ValidationError(
            f"{where}{path}: cannot follow {key!r}: {walked!r} is a list of {len(node)} "
            "item(s); give an index from 0"
        )
    return int(part)


def _check_replaceable(slot: _Slot, key: str, path: Path, where: str) -> None:
    container, name = slot
    if isinstance(container, MutableSequence):
        current = container[int(name)]
    elif name in container:
        current = container[name]
    else:
        return
    if isinstance(current, Mapping | list):
        raise ValidationError(
            f"{where}{path}: {key!r} is a table or list, not a value; "
            "give a dotted key to the value inside it"
        )


# --------------------------------------------------------------------------- writing


def _apply(doc: Any, values: Mapping[str, ConfigScalar], path: Path, where: str) -> None:
    for key, value in values.items():
        slot = _find(doc, key, path, where, create=True, for_write=True)
        assert slot is not None  # create=True always gives a slot
        container, name = slot
        container[name] = value


def _dump(fmt: ConfigFormat, doc: Any) -> bytes:
    if fmt == "toml":
        text = tomlkit.dumps(doc)
    elif fmt == "yaml":
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    else:
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return text.encode("utf-8")


def _plain(value: Any) -> object:
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _write_atomic(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` through a temporary file and a rename (mode 0600)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as err:
        raise ValidationError(f"{dest}: cannot write the config copy: {err}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ValidationError(f"{dest}: cannot write the config copy: {err}") from err


__all__ = [
    "ConfigFormat",
    "ConfigScalar",
    "YamlLoader",
    "check_config_values",
    "config_format",
    "load_yaml",
    "read_config_value",
    "update_config_copy",
    "write_config_copy",
]
